//! Measurements: printed for a human and appended as one tab-separated line each
//! (`side, metric, unit, value`) to the results file the report is built from.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Where and under which names measurements go.
pub struct Recorder {
    /// Results file to append to; `None` only prints.
    pub results: Option<PathBuf>,
    /// Which server was measured, e.g. `tunstack` or `kernel`.
    pub side: String,
    /// Appended to every metric name, e.g. `MTU 1500`.
    pub tag: Option<String>,
}

impl Recorder {
    /// Records one value of `metric` in `unit`.
    pub fn record(&self, metric: &str, unit: &str, value: f64) -> io::Result<()> {
        let metric = match &self.tag {
            Some(tag) => format!("{metric}, {tag}"),
            None => metric.to_string(),
        };
        println!("{:<9} {metric}: {value:.3} {unit}", self.side);
        let Some(path) = &self.results else {
            return Ok(());
        };
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        writeln!(file, "{}\t{metric}\t{unit}\t{value}", self.side)
    }

    /// Records the p50 and p99 of `samples` in microseconds under `metric p50` / `p99`.
    pub fn record_latency(&self, metric: &str, samples: &mut [Duration]) -> io::Result<()> {
        samples.sort_unstable();
        for (name, p) in [("p50", 0.50), ("p99", 0.99)] {
            let value = percentile(samples, p).map_or(f64::NAN, micros);
            self.record(&format!("{metric} {name}"), "µs", value)?;
        }
        Ok(())
    }
}

/// One line of a results file, `side<TAB>metric<TAB>unit<TAB>value`, as [`Recorder::record`]
/// writes it; `None` for any other line.
pub fn parse_line(line: &str) -> Option<(&str, &str, &str, f64)> {
    let mut fields = line.split('\t');
    let (side, metric, unit, value) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if fields.next().is_some() {
        return None;
    }
    Some((side, metric, unit, value.parse().ok()?))
}

/// Microseconds as a float.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The `p` quantile (0..=1) of sorted `samples`, nearest-rank.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v[..1], 0.99), Some(1));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
    }

    #[test]
    fn result_lines() {
        assert_eq!(
            parse_line("kernel\tping RTT p50\tµs\t6"),
            Some(("kernel", "ping RTT p50", "µs", 6.0))
        );
        assert_eq!(parse_line("kernel\tping RTT p50\tµs\tsix"), None);
        assert_eq!(parse_line("a broken line"), None);
        assert_eq!(parse_line("a\tb\tc\t1\textra"), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
