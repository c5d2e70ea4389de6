//! The chat commands (`send`, `dm`, `join`, `leave`, `typing`, `read`, `history`) against a private Redis: the bytes they write.

use super::*;

#[test]
fn send_stores_a_seed_shaped_message() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);

    let out = run_cli(&config.path(), &send_args("hi", "1001", "alice"));
    out.assert_ok();
    let id = out.stdout.trim();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "not an id: {out:#?}");

    let history = lrange(&mut con, "chat:room:general:history");
    assert_eq!(history.len(), 1, "{history:?}");
    let raw = &history[0];
    assert!(
        raw.contains(r#""user_id": 1001"#),
        "user id not a number: {raw}"
    );
    let message = parse(raw);
    let keys: Vec<&str> = message
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, seed::MESSAGE_FIELDS, "seed field order: {raw}");
    assert_eq!(message["id"], json!(id));
    assert_eq!(message["user_id"], json!(1001));
    assert_eq!(message["username"], json!("alice"));
    assert_eq!(message["content"], json!("hi"));
    assert_eq!(message["room"], json!("general"));
    assert_eq!(message["type"], json!("message"));

    let out = run_cli(&config.path(), &send_args("yo", "abc", "bob"));
    out.assert_ok();
    let history = lrange(&mut con, "chat:room:general:history");
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[0].contains(r#""user_id": "abc""#), "{}", history[0]);
    assert_eq!(parse(&history[0])["id"], json!(out.stdout.trim()));
}

#[test]
fn dm_writes_the_ordered_dm_history() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);

    let out = run_cli(
        &config.path(),
        &["dm", "1001", "999", "psst", "--username", "alice"],
    );
    out.assert_ok();
    let history = lrange(&mut con, "chat:dm:999:1001:history");
    assert_eq!(history.len(), 1, "{history:?}");
    let message = parse(&history[0]);
    assert_eq!(message["id"], json!(out.stdout.trim()));
    assert_eq!(message["user_id"], json!(1001));
    assert_eq!(message["content"], json!("psst"));
    assert_eq!(message["room"], Value::Null);
    assert!(
        lrange(&mut con, "chat:dm:1001:999:history").is_empty(),
        "ids must be ordered numerically"
    );

    let out = run_cli(&config.path(), &["history", "--dm", "999", "1001"]);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{out:#?}");
    assert!(lines[0].ends_with("alice: psst"), "{out:#?}");
    // Either order of the two ids names the same conversation.
    let out = run_cli(&config.path(), &["history", "--dm", "1001", "999"]);
    assert_eq!(out.assert_ok().stdout.lines().count(), 1, "{out:#?}");
}

/// Subscribes to a channel before a command runs, to see what it publishes. A thread owns
/// the subscribed connection (dropping redis-rs's `PubSub` unsubscribes); it ends when the
/// test's redis-server is killed.
struct Listener {
    /// Every payload published on the channel, in order.
    payloads: mpsc::Receiver<String>,
}

impl Listener {
    fn new(redis: &RedisServer, channel: &str) -> Self {
        let mut con = redis_con(redis);
        let subscribed = channel.to_owned();
        let (send, payloads) = mpsc::channel();
        std::thread::spawn(move || {
            let mut pubsub = con.as_pubsub();
            pubsub.subscribe(&subscribed).expect("subscribe");
            pubsub
                .set_read_timeout(Some(Duration::from_millis(200)))
                .expect("read timeout");
            loop {
                match pubsub.get_message() {
                    Ok(message) => {
                        let payload: String = message.get_payload().expect("text payload");
                        if send.send(payload).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(_) => return,
                }
            }
        });
        let mut con = redis_con(redis);
        let deadline = Instant::now() + Duration::from_secs(5);
        while numsub(&mut con, channel) < 1 {
            assert!(Instant::now() < deadline, "listener did not subscribe");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { payloads }
    }

    /// The next published payload, as JSON.
    fn next(&mut self) -> Value {
        let payload = self
            .payloads
            .recv_timeout(Duration::from_secs(5))
            .expect("a published event");
        parse(&payload)
    }
}

#[test]
fn join_leave_typing_and_read_publish_and_store_like_the_seed() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let mut events = Listener::new(&redis, "chat:room:general");
    let path = config.path();
    let alice = ["--user-id", "1001", "--username", "alice"];
    let bob = ["--user-id", "1002", "--username", "bob"];
    let members_key = "chat:room:general:members";

    let out = run_cli(&path, &[&["join", "general"][..], &alice].concat());
    assert!(
        out.assert_ok().stdout.contains("alice joined the room"),
        "{out:#?}"
    );
    run_cli(&path, &[&["join", "general"][..], &bob].concat()).assert_ok();
    assert_eq!(smembers(&mut con, members_key), ["1001", "1002"]);
    let joined = events.next();
    assert_eq!(joined["type"], json!("system"), "{joined}");
    assert_eq!(
        joined["content"],
        json!("alice joined the room"),
        "{joined}"
    );
    events.next();

    let out = run_cli(&path, &["members", "general"]);
    let mut listed: Vec<&str> = out.assert_ok().stdout.lines().collect();
    listed.sort();
    assert_eq!(listed, ["1001", "1002"], "{out:#?}");

    let out = run_cli(&path, &[&["leave", "general"][..], &bob].concat());
    assert!(
        out.assert_ok().stdout.contains("bob left the room"),
        "{out:#?}"
    );
    assert_eq!(smembers(&mut con, members_key), ["1001"]);
    assert_eq!(events.next()["content"], json!("bob left the room"));

    run_cli(&path, &["typing", "general", "--user-id", "1001"]).assert_ok();
    let typing = events.next();
    assert_eq!(typing["type"], json!("typing"), "{typing}");
    assert_eq!(typing["user_id"], json!(1001), "{typing}");

    let sent = run_cli(&path, &[&["send", "general", "hello"][..], &alice].concat());
    let message_id = sent.assert_ok().stdout.trim().to_owned();
    assert_eq!(events.next()["id"], json!(message_id));
    run_cli(
        &path,
        &["read", "general", &message_id, "--user-id", "1001"],
    )
    .assert_ok();
    let receipts: HashMap<String, String> = query(
        &mut con,
        redis::cmd("HGETALL").arg("chat:room:general:read_receipts"),
    );
    assert_eq!(
        receipts,
        HashMap::from([("1001".to_owned(), message_id.clone())])
    );
    let receipt = events.next();
    assert_eq!(receipt["type"], json!("read_receipt"), "{receipt}");
    assert_eq!(receipt["user_id"], json!(1001), "{receipt}");
    assert_eq!(receipt["last_read"], json!(message_id), "{receipt}");

    // Only messages go to history.
    assert_eq!(lrange(&mut con, "chat:room:general:history").len(), 1);
}

#[test]
fn history_shows_the_newest_first() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let path = config.path();
    for text in ["one", "two", "three"] {
        run_cli(&path, &send_args(text, "1001", "alice")).assert_ok();
    }

    let out = run_cli(&path, &["history", "general", "-n", "2"]);
    let lines: Vec<&str> = out.assert_ok().stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:#?}");
    assert!(lines[0].ends_with("alice: three"), "{out:#?}");
    assert!(lines[1].ends_with("alice: two"), "{out:#?}");

    let out = run_cli(&path, &["history", "general"]);
    assert_eq!(out.assert_ok().stdout.lines().count(), 3, "{out:#?}");

    let out = run_cli(&path, &["history", "general", "--json"]);
    let lines: Vec<&str> = out.assert_ok().stdout.lines().collect();
    assert_eq!(
        lines,
        lrange(&mut con, "chat:room:general:history"),
        "--json prints the stored bytes"
    );
    assert_eq!(parse(lines[0])["content"], json!("three"));

    let out = run_cli(&path, &["history", "empty-room"]);
    assert!(out.assert_ok().stdout.is_empty(), "{out:#?}");
}

#[test]
fn history_prints_foreign_entries_without_failing() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let _: () = query(
        &mut con,
        redis::cmd("LPUSH")
            .arg("chat:room:general:history")
            .arg("not json \u{1b}[31m"),
    );
    let out = run_cli(&config.path(), &["history", "general"]);
    let line = out
        .assert_ok()
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("not json"), "{out:#?}");
    assert!(
        !line.contains('\u{1b}'),
        "control characters must be escaped: {line:?}"
    );
}

#[test]
fn an_invalid_room_name_is_refused_and_nothing_is_written() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let path = config.path();
    let user = ["--user-id", "1001", "--username", "alice"];
    for command in [
        [&["send", "a:b", "hi"][..], &user].concat(),
        [&["send", "has space", "hi"][..], &user].concat(),
        [&["send", "", "hi"][..], &user].concat(),
        [&["join", "a:b"][..], &user].concat(),
        vec!["typing", "a:b", "--user-id", "1001"],
        vec!["tail", "a:b"],
    ] {
        let out = run_cli(&path, &command);
        assert_ne!(out.code, 0, "{command:?}: {out:#?}");
        assert_ne!(out.code, 78, "not a config problem: {command:?}: {out:#?}");
        assert!(out.stdout.is_empty(), "{command:?}: {out:#?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one clear line: {command:?}: {out:#?}");
        assert!(lines[0].contains("room"), "{command:?}: {out:#?}");
    }
    let out = run_cli(&path, &[&["send", "a:b", "hi"][..], &user].concat());
    assert!(out.stderr.contains("`:`"), "{out:#?}");
    let keys: Vec<String> = query(&mut con, redis::cmd("KEYS").arg("*"));
    assert!(keys.is_empty(), "nothing may be written: {keys:?}");
}
