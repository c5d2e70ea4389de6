//! `tail`: what it prints, and how it ends when Redis goes away.

use super::*;

/// A `chatbridge tail` child whose stdout lines arrive on a channel; killed on drop.
struct Tail {
    /// The `chatbridge tail` process.
    child: Child,
    /// Its stdout, line by line, as printed.
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn start(config: &Path, rooms: &[&str]) -> Self {
        let mut child = clean_command(config, &[&["tail"][..], rooms].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chatbridge tail");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits until Redis reports the subscriptions `ready` asks about.
    fn wait_subscribed(
        &mut self,
        con: &mut redis::Connection,
        ready: impl Fn(&mut redis::Connection) -> bool,
    ) {
        let deadline = Instant::now() + TAIL_WAIT;
        while !ready(con) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tail exited before subscribing: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "tail did not subscribe in {TAIL_WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(TAIL_WAIT)
            .expect("tail printed a line")
    }

    /// SIGINT, as Ctrl-C: tail must exit 0 promptly.
    fn interrupt(mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).expect("send SIGINT");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for tail") {
                assert_eq!(status.code(), Some(0), "tail after SIGINT: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "tail ignored SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tail_prints_the_rooms_it_was_given() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let mut tail = Tail::start(&config.path(), &["general"]);
    tail.wait_subscribed(&mut con, |c| numsub(c, "chat:room:general") >= 1);

    block_on(async {
        let mut seed_con = redis.connection().await;
        // Another room first: if tail printed it, it would be the first line.
        seed::send_message(&mut seed_con, "random", json!(1002), "bob", "elsewhere").await;
        seed::send_message(&mut seed_con, "general", json!(1001), "alice", "hi").await;
        seed::join(&mut seed_con, "general", json!(1002), "bob").await;
        seed::typing(&mut seed_con, "general", json!(1001)).await;
    });
    assert_eq!(tail.next_line(), "[general] alice: hi");
    assert_eq!(tail.next_line(), "[general] * bob joined the room");
    assert_eq!(tail.next_line(), "[general] 1001 is typing");
    tail.interrupt();
}

#[test]
fn tail_without_rooms_prints_every_room_and_dm() {
    let redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let mut tail = Tail::start(&config.path(), &[]);
    tail.wait_subscribed(&mut con, |c| numpat(c) >= 2);

    block_on(async {
        let mut seed_con = redis.connection().await;
        seed::send_message(&mut seed_con, "random", json!(1002), "bob", "anyone?").await;
        seed::send_dm(&mut seed_con, json!(1001), json!(999), "alice", "psst").await;
    });
    assert_eq!(tail.next_line(), "[random] bob: anyone?");
    assert_eq!(tail.next_line(), "[dm 999:1001] alice: psst");
    tail.interrupt();
}

#[test]
fn tail_fails_when_redis_goes_away() {
    let mut redis = RedisServer::start();
    let config = config_for(&redis);
    let mut con = redis_con(&redis);
    let mut tail = Tail::start(&config.path(), &["general"]);
    tail.wait_subscribed(&mut con, |c| numsub(c, "chat:room:general") >= 1);
    redis.kill();
    let deadline = Instant::now() + TAIL_WAIT;
    let status = loop {
        if let Some(status) = tail.child.try_wait().expect("wait for tail") {
            break status;
        }
        assert!(Instant::now() < deadline, "tail kept running without redis");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        !status.success(),
        "tail must fail when redis is gone: {status}"
    );
}
