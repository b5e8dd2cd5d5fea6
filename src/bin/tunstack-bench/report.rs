//! The report: one Markdown table of per-metric medians over runs, tunstack against the
//! kernel, with the ratio and the target from issue 5 where there is one; then, for the
//! round trips measured against them, the floors: a bare TUN loop, blocking and spinning,
//! and tunstack spinning.

use crate::record::{median, parse_line};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

/// What a metric should reach.
#[derive(Clone, Copy)]
enum Target {
    /// tunstack / kernel at least this.
    RatioAtLeast(f64),
    /// tunstack / kernel at most this.
    RatioAtMost(f64),
    /// tunstack's own value at most this.
    AtMost(f64),
    /// tunstack's own value below this.
    Below(f64),
}

/// Targets by metric name prefix (and, for throughput, the MTU suffix).
fn target_of(metric: &str) -> Option<Target> {
    use Target::*;
    let rules: &[(&str, &str, Target)] = &[
        ("TCP echo throughput", "MTU 1500", RatioAtLeast(0.25)),
        ("TCP echo throughput", "", RatioAtLeast(1.0)),
        ("TCP 1-byte RTT p50", "", RatioAtMost(1.0)),
        ("UDP 64 B RTT p50", "", RatioAtMost(1.0)),
        ("ping RTT p50", "", RatioAtMost(1.0)),
        ("TCP connection rate", "", RatioAtLeast(1.0)),
        ("Scale: conns that failed", "", AtMost(0.0)),
        ("Scale: RTT p50 with", "", AtMost(1.2)),
        ("Scale: server RSS with", "", AtMost(1536.0)),
        ("Idle CPU", "", Below(1.0)),
    ];
    rules
        .iter()
        .find(|(prefix, suffix, _)| metric.starts_with(prefix) && metric.ends_with(suffix))
        .map(|&(_, _, target)| target)
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::RatioAtLeast(x) => format!("≥ {x:.2}×"),
            Target::RatioAtMost(x) => format!("≤ {x:.2}×"),
            Target::AtMost(x) => format!("≤ {x}"),
            Target::Below(x) => format!("< {x}"),
        }
    }

    /// Whether the medians meet the target; `None` when a needed value is missing.
    fn met(self, tunstack: Option<f64>, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::RatioAtLeast(x) => ratio.map(|r| r >= x),
            Target::RatioAtMost(x) => ratio.map(|r| r <= x),
            Target::AtMost(x) => tunstack.map(|v| v <= x),
            Target::Below(x) => tunstack.map(|v| v < x),
        }
    }
}

/// All values of one metric.
struct Row {
    metric: String,
    unit: String,
    tunstack: Vec<f64>,
    kernel: Vec<f64>,
    /// Values of the floor sides, in [`FLOORS`] order.
    floors: [Vec<f64>; FLOORS.len()],
}

/// Sides measured beside tunstack and the kernel on the round trips, and their headings.
const FLOORS: [(&str, &str); 3] = [
    ("bare", "bare TUN loop"),
    ("bare-spin", "bare TUN loop, spinning"),
    ("tunstack-spin", "tunstack, spinning"),
];

/// Reads `side<TAB>metric<TAB>unit<TAB>value` lines, keeping the metrics' first-seen order.
fn read_rows(text: &str) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for (side, metric, unit, value) in text.lines().filter_map(parse_line) {
        let index = match rows.iter().position(|r| r.metric == metric) {
            Some(index) => index,
            None => {
                rows.push(Row {
                    metric: metric.to_string(),
                    unit: unit.to_string(),
                    tunstack: Vec::new(),
                    kernel: Vec::new(),
                    floors: Default::default(),
                });
                rows.len() - 1
            }
        };
        let row = &mut rows[index];
        match side {
            "tunstack" => row.tunstack.push(value),
            "kernel" => row.kernel.push(value),
            _ => {
                if let Some(i) = FLOORS.iter().position(|(name, _)| *name == side) {
                    row.floors[i].push(value);
                }
            }
        }
    }
    rows
}

fn cell(value: Option<f64>) -> String {
    match value {
        None => "—".to_string(),
        Some(v) if v.is_nan() => "n/a".to_string(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// The Markdown table for the results file at `path`.
pub fn table(path: &Path) -> io::Result<String> {
    let text = fs::read_to_string(path)?;
    let mut out = String::new();
    out.push_str("| metric | unit | tunstack | kernel | tunstack/kernel | target | met |\n");
    out.push_str("|---|---|---:|---:|---:|---|---|\n");
    for mut row in read_rows(&text) {
        let tunstack = median(&mut row.tunstack);
        let kernel = median(&mut row.kernel);
        let ratio = tunstack
            .zip(kernel)
            .filter(|&(_, k)| k != 0.0)
            .map(|(t, k)| t / k);
        let target = target_of(&row.metric);
        let verdict = match target.and_then(|t| t.met(tunstack, ratio)) {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let runs = row.tunstack.len().max(row.kernel.len());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {verdict} |",
            if runs > 1 {
                format!("{} ({runs} runs)", row.metric)
            } else {
                row.metric.clone()
            },
            row.unit,
            cell(tunstack),
            cell(kernel),
            ratio.map_or("—".to_string(), |r| format!("{r:.2}×")),
            target.map_or(String::new(), Target::describe),
        );
    }
    out.push_str(&floors_table(&mut read_rows(&text)));
    Ok(out)
}

/// Medians of the round trips that have floor measurements, each with its ratio to the
/// kernel; empty if none was measured.
fn floors_table(rows: &mut [Row]) -> String {
    let mut out = String::new();
    for row in rows
        .iter_mut()
        .filter(|r| r.floors.iter().any(|f| !f.is_empty()))
    {
        if out.is_empty() {
            out.push_str("\nFloors: the same round trips through a bare loop that turns packets around on a TUN (`tunstack-bench tun-loop`), and through tunstack spinning (`--busy-poll-us 1000000`); ratios to the kernel.\n\n");
            out.push_str("| metric | unit | kernel | tunstack |");
            for (_, heading) in FLOORS {
                let _ = write!(out, " {heading} |");
            }
            out.push_str("\n|---|---|---:|---:|");
            out.push_str(&"---:|".repeat(FLOORS.len()));
            out.push('\n');
        }
        let kernel = median(&mut row.kernel);
        let with_ratio = |value: Option<f64>| match (value, kernel) {
            (Some(v), Some(k)) if k != 0.0 => format!("{} ({:.2}×)", cell(Some(v)), v / k),
            (v, _) => cell(v),
        };
        let _ = write!(
            out,
            "| {} | {} | {} | {} |",
            row.metric,
            row.unit,
            cell(kernel),
            with_ratio(median(&mut row.tunstack))
        );
        for values in &mut row.floors {
            let _ = write!(out, " {} |", with_ratio(median(values)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ratios_and_targets() {
        let dir =
            std::env::temp_dir().join(format!("tunstack-bench-report-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.tsv");
        let lines = [
            "tunstack\tTCP echo throughput, 1 conn, MTU 1500\tMB/s\t100",
            "kernel\tTCP echo throughput, 1 conn, MTU 1500\tMB/s\t1000",
            "tunstack\tTCP echo throughput, 1 conn, MTU 1500\tMB/s\t300",
            "kernel\tTCP echo throughput, 1 conn, MTU 1500\tMB/s\t1000",
            "tunstack\tTCP echo throughput, 1 conn, MTU 1500\tMB/s\t200",
            "kernel\tTCP echo throughput, 1 conn, MTU 1500\tMB/s\t1000",
            "tunstack\tIdle CPU of the server, 10 idle conns, 1 s\t%\t0.5",
            "a broken line",
        ];
        fs::write(&path, lines.join("\n")).unwrap();
        let table = table(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(table.contains("| TCP echo throughput, 1 conn, MTU 1500 (3 runs) | MB/s | 200.0 | 1000 | 0.20× | ≥ 0.25× | **no** |"), "{table}");
        assert!(table.contains("| 0.500 | — | — | < 1 | yes |"), "{table}");
        assert!(!table.contains("Floors"), "{table}");
    }

    #[test]
    fn floors_beside_the_kernel() {
        let text = [
            "kernel\tping RTT p50\tµs\t6",
            "tunstack\tping RTT p50\tµs\t36",
            "bare\tping RTT p50\tµs\t30",
            "bare\tping RTT p50\tµs\t36",
            "bare\tping RTT p50\tµs\t40",
            "bare-spin\tping RTT p50\tµs\t6",
            "kernel\tTCP connection rate\tconn/s\t7000",
        ]
        .join("\n");
        let table = floors_table(&mut read_rows(&text));
        assert!(
            table.contains(
                "| ping RTT p50 | µs | 6.000 | 36.0 (6.00×) | 36.0 (6.00×) | 6.000 (1.00×) | — |"
            ),
            "{table}"
        );
        assert!(!table.contains("connection rate"), "{table}");
    }
}
