//! The `slack` scenario: a burst of messages into one room mirrored to a Slack link (Web API
//! mode) pointed at the fake Slack of the tests in its strict mode (each request held a random
//! 0–100 ms, then a sliding window with no tolerance: 3 posts at once, then one per second;
//! 429 beyond). Reports how many posts the burst became, the burst's total time until the last
//! message reached Slack, and whether any 429 was provoked, message lost, duplicated or
//! reordered.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::runtime::Runtime;

use crate::daemon::Daemon;
use crate::fake_slack::FakeSlack;
use crate::load::Generator;
use crate::redis_server::RedisServer;
use crate::report::round;

const TOKEN: &str = "xoxb-bench-token";
/// The most the fake holds a request, as an uneven WAN path does.
const JITTER: Duration = Duration::from_millis(100);
/// The longest the scenario waits for the burst to arrive.
const CAP: Duration = Duration::from_secs(120);

/// Runs the scenario: `count` messages to room `r0`, one Slack link.
pub fn run(
    name: &str,
    count: usize,
    sink_runtime: &Runtime,
    load_runtime: &Runtime,
) -> Map<String, Value> {
    let redis = RedisServer::start();
    let slack = sink_runtime.block_on(FakeSlack::strict(TOKEN, JITTER));
    let toml = format!(
        "[redis]\nurl = \"{}\"\n\n[links.slack]\nkind = \"slack\"\nbot_token = \"{TOKEN}\"\n\
         channel = \"CBENCH\"\napi_url = \"{}\"\nevents = [\"message\"]\n\n\
         [[rooms]]\nname = \"r0\"\nlinks = [\"slack\"]\n",
        redis.url(),
        slack.api_url()
    );
    let mut daemon = Daemon::start(&toml);
    daemon.wait_ready();
    daemon.settle();
    let mut generator = load_runtime.block_on(Generator::connect(&redis.url(), 1));
    let started = Instant::now();
    load_runtime.block_on(generator.burst(count));
    let sent_in = started.elapsed();
    let mut seqs = Vec::new();
    while started.elapsed() < CAP {
        seqs = sequence_numbers(&slack);
        if seqs.len() >= count {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let drained_in = started.elapsed();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    let in_order = seqs.windows(2).filter(|w| w[0] > w[1]).count();
    let mut line = Map::new();
    line.insert("scenario".into(), json!(name));
    line.insert("sent".into(), json!(count));
    line.insert("delivered".into(), json!(unique.len()));
    line.insert("lost".into(), json!(count.saturating_sub(unique.len())));
    line.insert("duplicates".into(), json!(seqs.len() - unique.len()));
    line.insert("out_of_order".into(), json!(in_order));
    line.insert("posts".into(), json!(slack.posts().len()));
    line.insert("rate_limited_429".into(), json!(slack.rate_limited()));
    line.insert("sent_in_s".into(), json!(round(sent_in.as_secs_f64(), 3)));
    line.insert(
        "seconds_to_drain".into(),
        json!(round(drained_in.as_secs_f64(), 2)),
    );
    line
}

/// The generator's sequence numbers in the order Slack got them: each line of each post is
/// `<seq> <nanos>`, after `*name*: ` when the post merged several senders.
fn sequence_numbers(slack: &FakeSlack) -> Vec<u64> {
    slack
        .posts()
        .iter()
        .flat_map(|post| {
            post.text()
                .lines()
                .filter_map(|line| {
                    let content = line.rsplit(": ").next().unwrap_or(line);
                    content.split(' ').next()?.parse().ok()
                })
                .collect::<Vec<u64>>()
        })
        .collect()
}
