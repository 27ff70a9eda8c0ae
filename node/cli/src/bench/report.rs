//! One measured run: the numbers, as a table row or as JSON.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Workload;

/// The result of one run. Latencies are in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The target (`grpc`, `embedded`, `etcd`), with a label if one was given.
    pub driver: String,
    /// The workload's name (`put`, `get-linearizable`, ...).
    pub workload: String,
    /// Groups the keys were spread over.
    pub groups: u64,
    /// Requests in flight.
    pub in_flight: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Distinct keys.
    pub keys: u64,
    /// Length of the measured window, in seconds.
    pub seconds: f64,
    /// Successful requests in the window.
    pub ops: u64,
    /// Successful requests per second.
    pub ops_per_sec: f64,
    /// Latency percentiles and extremes of successful requests.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// Failed or timed-out requests in the window.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// CPU used by this process during the window, in % of one core.
    pub cpu_percent: f64,
    /// CPU used by the watched processes (the servers) during the window, in % of one core.
    pub server_cpu_percent: Option<f64>,
}

impl Report {
    pub(super) fn new(
        driver: &str,
        w: &Workload,
        h: &Histogram<u64>,
        errors: u64,
        first_error: Option<String>,
        cpu_percent: f64,
        server_cpu_percent: Option<f64>,
    ) -> Self {
        let secs = w.duration.as_secs_f64();
        let q = |q: f64| if h.is_empty() { 0 } else { h.value_at_quantile(q) };
        Report {
            driver: driver.into(),
            workload: w.name(),
            groups: w.groups,
            in_flight: w.in_flight,
            value_size: w.value_size,
            keys: w.keys,
            seconds: secs,
            ops: h.len(),
            ops_per_sec: h.len() as f64 / secs,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            errors,
            first_error,
            cpu_percent,
            server_cpu_percent,
        }
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        // A struct of numbers and strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The table's header line (and the rule under it).
pub fn table_header() -> String {
    format!(
        "{:<10} {:<20} {:>6} {:>9} {:>6} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7}\n{}",
        "driver",
        "workload",
        "groups",
        "in-flight",
        "value",
        "ops/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "errors",
        "cpu %",
        "srv %",
        "-".repeat(133)
    )
}

/// One table line.
pub fn table_row(r: &Report) -> String {
    format!(
        "{:<10} {:<20} {:>6} {:>9} {:>6} {:>12.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7.0} {:>7}",
        r.driver,
        r.workload,
        r.groups,
        r.in_flight,
        r.value_size,
        r.ops_per_sec,
        ms(r.p50_us),
        ms(r.p90_us),
        ms(r.p99_us),
        ms(r.p999_us),
        ms(r.max_us),
        r.errors,
        r.cpu_percent,
        r.server_cpu_percent.map_or("-".into(), |c| format!("{c:.0}")),
    )
}

/// The whole table.
pub fn print_table(reports: &[Report]) {
    println!("{}", table_header());
    for r in reports {
        println!("{}", table_row(r));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::{Consistency, Mix};

    #[test]
    fn percentiles_rates_and_json() {
        let w = Workload {
            mix: Mix::Put,
            consistency: Consistency::Linearizable,
            keys: 10,
            value_size: 16,
            in_flight: 4,
            groups: 1,
            duration: Duration::from_secs(2),
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(1),
        };
        let mut h = Histogram::<u64>::new_with_bounds(1, 100_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let r = Report::new("grpc", &w, &h, 3, Some("boom".into()), 50.0, None);
        assert_eq!(r.ops, 1000);
        assert_eq!(r.ops_per_sec, 500.0);
        assert!((4990..=5010).contains(&r.p50_us), "{}", r.p50_us);
        assert!((9890..=9910).contains(&r.p99_us), "{}", r.p99_us);
        assert!(r.max_us >= 9990);
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["workload"], "put");
        assert_eq!(json["errors"], 3);
        assert_eq!(json["server_cpu_percent"], serde_json::Value::Null);
        assert!(table_row(&r).starts_with("grpc"));
        let empty = Report::new("etcd", &w, &Histogram::new(3).unwrap(), 0, None, 0.0, Some(1.0));
        assert_eq!((empty.ops, empty.p99_us), (0, 0));
    }
}
