//! The stack's socket table and counters, parsed from `tunstack ss`.

use super::numbers;
use crate::common::{Netns, Stack, poll_until};
use std::collections::BTreeMap;
use std::time::Duration;

/// One row of the socket table.
#[derive(Debug, Clone)]
pub struct SocketRow {
    pub proto: String,
    pub state: String,
    pub recv_q: u64,
    pub send_q: u64,
    pub local: String,
    pub remote: String,
}

/// What `tunstack ss` reports: the socket table and the counters.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub tcp_established: u64,
    pub tcp_reaped: u64,
    pub rst_sent: u64,
    pub icmp_errors_sent: u64,
    pub icmp_rate_limited: u64,
    pub drops: BTreeMap<String, u64>,
    pub sockets: Vec<SocketRow>,
    pub text: String,
}

/// Every drop reason `tunstack ss` prints.
pub const DROP_REASONS: [&str; 14] = [
    "malformed",
    "bad-checksum",
    "not-for-us",
    "bad-source",
    "backlog-full",
    "syn-queue-evicted",
    "bad-cookie",
    "udp-buffer-full",
    "unknown-protocol",
    "fragment-overlap",
    "fragment-duplicate",
    "ipv6-option",
    "ipv6-header",
    "broadcast-echo",
];

impl Report {
    /// Asks the stack in `netns` for its socket table and counters.
    pub fn query(netns: &Netns) -> Report {
        let output = netns.run_ok(Duration::from_secs(10), Stack::binary(), &["ss"]);
        Report::parse(&String::from_utf8_lossy(&output.stdout))
    }

    pub fn parse(text: &str) -> Report {
        let mut report = Report {
            text: text.to_string(),
            ..Report::default()
        };
        let (mut packets_seen, mut connections_seen) = (false, false);
        for line in text.lines() {
            let counters = numbers(&line.replace(['(', ')', ','], " "));
            if line.starts_with("packets in") {
                report.rx_packets = counters["in"];
                report.tx_packets = counters["out"];
                packets_seen = true;
            } else if line.contains("established ") && line.contains("reaped ") {
                report.tcp_established = counters["established"];
                report.tcp_reaped = counters["reaped"];
                report.rst_sent = counters["sent"];
                connections_seen = true;
            } else if line.starts_with("icmp errors out:") {
                report.icmp_errors_sent = counters["sent"];
                report.icmp_rate_limited = counters["rate-limited"];
            } else if let Some(drops) = line.strip_prefix("drops:") {
                for item in drops.split_whitespace() {
                    if let Some((reason, count)) = item.split_once('=') {
                        report
                            .drops
                            .insert(reason.to_string(), count.parse().unwrap_or(u64::MAX));
                    }
                }
            } else if let Some(row) = socket_row(line) {
                report.sockets.push(row);
            }
        }
        assert!(
            packets_seen
                && connections_seen
                && DROP_REASONS.iter().all(|r| report.drops.contains_key(*r)),
            "tunstack ss output changed: the packet, connection or drop counters are missing:\n{text}"
        );
        report
    }

    pub fn drop_count(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }

    /// The TCP data sockets whose remote end is `remote` ("192.168.69.1:40000").
    pub fn tcp_to(&self, remote: &str) -> Vec<&SocketRow> {
        self.sockets
            .iter()
            .filter(|row| row.proto == "tcp" && row.remote == remote)
            .collect()
    }

    /// TCP data sockets (not the listener).
    pub fn data_sockets(&self) -> Vec<&SocketRow> {
        self.sockets
            .iter()
            .filter(|row| row.proto == "tcp" && row.state != "LISTEN")
            .collect()
    }

    /// Drop counters that changed since `before`, as "reason +n".
    pub fn drop_changes(&self, before: &Report) -> BTreeMap<String, u64> {
        DROP_REASONS
            .iter()
            .map(|r| (r.to_string(), self.drop_count(r) - before.drop_count(r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

fn socket_row(line: &str) -> Option<SocketRow> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 6 || !matches!(fields[0], "tcp" | "udp") {
        return None;
    }
    Some(SocketRow {
        proto: fields[0].to_string(),
        state: fields[1].to_string(),
        recv_q: fields[2].parse().ok()?,
        send_q: fields[3].parse().ok()?,
        local: fields[4].to_string(),
        remote: fields[5].to_string(),
    })
}

/// Waits (bounded) until the stack has read at least `packets` more packets than in `before`.
pub fn wait_for_rx(netns: &Netns, before: &Report, packets: u64, timeout: Duration) -> Report {
    let mut report = Report::query(netns);
    poll_until(timeout, || {
        report = Report::query(netns);
        report.rx_packets >= before.rx_packets + packets
    });
    report
}
