//! The report: one Markdown table of per-metric medians over runs, tunstack against the
//! kernel at its best — the better, per metric, of the kernel echo server using every CPU
//! (side `kernel`) and the single-threaded one (side `kernel-1`) — with the ratio and the
//! target from issue 5 where there is one; then, for the round trips measured against them,
//! the floors: a bare TUN loop, blocking and spinning, and tunstack spinning.

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
    /// The kernel echo server on every CPU.
    kernel: Vec<f64>,
    /// The kernel echo server on one epoll thread.
    kernel_one: Vec<f64>,
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
                    kernel_one: Vec::new(),
                    floors: Default::default(),
                });
                rows.len() - 1
            }
        };
        let row = &mut rows[index];
        match side {
            "tunstack" => row.tunstack.push(value),
            "kernel" => row.kernel.push(value),
            "kernel-1" => row.kernel_one.push(value),
            _ => {
                if let Some(i) = FLOORS.iter().position(|(name, _)| *name == side) {
                    row.floors[i].push(value);
                }
            }
        }
    }
    rows
}

/// Whether more is better in `unit` (rates: MB/s, pkt/s, conn/s); otherwise less is
/// (times, round trips, CPU per GB, loss, failures, memory).
fn more_is_better(unit: &str) -> bool {
    unit.ends_with("/s")
}

/// Which kernel server is the anchor of a row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Anchor {
    EveryCpu,
    OneThread,
}

/// The kernel at its best: the better of the two servers' medians, and which it is.
fn anchor(unit: &str, every_cpu: Option<f64>, one_thread: Option<f64>) -> Option<(f64, Anchor)> {
    let usable = |v: Option<f64>| v.filter(|v| !v.is_nan());
    match (usable(every_cpu), usable(one_thread)) {
        (Some(e), Some(o)) if (o > e) == more_is_better(unit) && o != e => {
            Some((o, Anchor::OneThread))
        }
        (Some(e), _) => Some((e, Anchor::EveryCpu)),
        (None, Some(o)) => Some((o, Anchor::OneThread)),
        (None, None) => every_cpu.map(|e| (e, Anchor::EveryCpu)),
    }
}

/// A kernel cell, in bold when it is the anchor and the other server's value differs.
fn kernel_cell(value: Option<f64>, is_anchor: bool, both: bool) -> String {
    if is_anchor && both {
        format!("**{}**", cell(value))
    } else {
        cell(value)
    }
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
    out.push_str("| metric | unit | tunstack | kernel, every CPU | kernel, 1 thread | tunstack/kernel | target | met |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---|---|\n");
    for mut row in read_rows(&text) {
        let tunstack = median(&mut row.tunstack);
        let every_cpu = median(&mut row.kernel);
        let one_thread = median(&mut row.kernel_one);
        let best = anchor(&row.unit, every_cpu, one_thread);
        let ratio = tunstack
            .zip(best)
            .filter(|&(_, (k, _))| k != 0.0)
            .map(|(t, (k, _))| t / k);
        let target = target_of(&row.metric);
        let verdict = match target.and_then(|t| t.met(tunstack, ratio)) {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let runs = row
            .tunstack
            .len()
            .max(row.kernel.len())
            .max(row.kernel_one.len());
        // Bold marks the anchor only where the two servers differ.
        let both = every_cpu.is_some() && one_thread.is_some() && every_cpu != one_thread;
        let which = best.map(|(_, which)| which);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {verdict} |",
            if runs > 1 {
                format!("{} ({runs} runs)", row.metric)
            } else {
                row.metric.clone()
            },
            row.unit,
            cell(tunstack),
            kernel_cell(every_cpu, which == Some(Anchor::EveryCpu), both),
            kernel_cell(one_thread, which == Some(Anchor::OneThread), both),
            ratio.map_or("—".to_string(), |r| format!("{r:.2}×")),
            target.map_or(String::new(), Target::describe),
        );
    }
    out.push_str(&floors_table(&mut read_rows(&text)));
    Ok(out)
}

/// Medians of the round trips that have floor measurements, each with its ratio to the
/// kernel at its best; empty if none was measured.
fn floors_table(rows: &mut [Row]) -> String {
    let mut out = String::new();
    for row in rows
        .iter_mut()
        .filter(|r| r.floors.iter().any(|f| !f.is_empty()))
    {
        if out.is_empty() {
            out.push_str("\nFloors: the same round trips through a bare loop that turns packets around on a TUN (`tunstack-bench tun-loop`), and through tunstack spinning (`--busy-poll-us 1000000`); ratios to the kernel at its best (the better of its two servers).\n\n");
            out.push_str("| metric | unit | kernel | tunstack |");
            for (_, heading) in FLOORS {
                let _ = write!(out, " {heading} |");
            }
            out.push_str("\n|---|---|---:|---:|");
            out.push_str(&"---:|".repeat(FLOORS.len()));
            out.push('\n');
        }
        let (every_cpu, one_thread) = (median(&mut row.kernel), median(&mut row.kernel_one));
        let kernel = anchor(&row.unit, every_cpu, one_thread).map(|(k, _)| k);
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
        assert!(table.contains("| TCP echo throughput, 1 conn, MTU 1500 (3 runs) | MB/s | 200.0 | 1000 | — | 0.20× | ≥ 0.25× | **no** |"), "{table}");
        assert!(
            table.contains("| 0.500 | — | — | — | < 1 | yes |"),
            "{table}"
        );
        assert!(!table.contains("Floors"), "{table}");
    }

    #[test]
    fn the_better_kernel_server_is_the_anchor() {
        let rows = |text: &[&str]| read_rows(&text.join("\n"));
        // A rate: more is better, so the single thread's 2000 is the anchor.
        let mut rate = rows(&[
            "tunstack\tTCP echo throughput, 1 conn\tMB/s\t1000",
            "kernel\tTCP echo throughput, 1 conn\tMB/s\t1250",
            "kernel-1\tTCP echo throughput, 1 conn\tMB/s\t2000",
        ]);
        let row = &mut rate[0];
        let (e, o) = (median(&mut row.kernel), median(&mut row.kernel_one));
        assert!(anchor(&row.unit, e, o) == Some((2000.0, Anchor::OneThread)));
        // A round trip or CPU per GB: less is better, so every CPU's 0.5 is the anchor.
        assert!(anchor("s/GB", Some(0.5), Some(0.8)) == Some((0.5, Anchor::EveryCpu)));
        assert!(anchor("µs", Some(20.0), Some(15.0)) == Some((15.0, Anchor::OneThread)));
        assert!(anchor("µs", None, Some(15.0)) == Some((15.0, Anchor::OneThread)));
        assert!(anchor("µs", Some(f64::NAN), Some(15.0)) == Some((15.0, Anchor::OneThread)));
        assert!(anchor("µs", None, None).is_none());

        let dir =
            std::env::temp_dir().join(format!("tunstack-bench-anchor-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.tsv");
        fs::write(
            &path,
            [
                "tunstack\tTCP echo throughput, 4 conns, MTU 1500\tMB/s\t900",
                "kernel\tTCP echo throughput, 4 conns, MTU 1500\tMB/s\t1800",
                "kernel-1\tTCP echo throughput, 4 conns, MTU 1500\tMB/s\t1500",
            ]
            .join("\n"),
        )
        .unwrap();
        let table = table(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(
            table.contains("| MB/s | 900.0 | **1800** | 1500 | 0.50× | ≥ 0.25× | yes |"),
            "{table}"
        );
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
            "kernel-1\tping RTT p50\tµs\t5",
            "kernel\tTCP connection rate\tconn/s\t7000",
        ]
        .join("\n");
        let table = floors_table(&mut read_rows(&text));
        assert!(
            table.contains(
                "| ping RTT p50 | µs | 5.000 | 36.0 (7.20×) | 36.0 (7.20×) | 6.000 (1.20×) | — |"
            ),
            "{table}"
        );
        assert!(!table.contains("connection rate"), "{table}");
    }
}
