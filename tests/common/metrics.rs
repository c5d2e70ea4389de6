//! A daemon's `/metrics`, fetched and parsed as Prometheus text, and one sample's value.

use prometheus_parse::{Scrape, Value as Metric};

/// `/metrics` of the daemon on `port`, parsed; panics on a body that is not Prometheus text.
pub async fn scrape(port: u16) -> Scrape {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("GET /metrics");
    let status = response.status().as_u16();
    let body = response.text().await.expect("body");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body.lines().map(|line| Ok(line.to_owned()))).expect("Prometheus text format")
}

/// The value of the sample `name` whose labels include `labels` (counters and gauges), or
/// the count of a histogram.
pub fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
            Metric::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Metric::Summary(_) => f64::NAN,
        })
}
