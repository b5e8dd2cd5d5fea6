//! Packet-level debugging on a real TUN: the pcap is read by tshark, holds exactly the
//! packets the stack counted, and its TCP stream is the echoed bytes; `tunstack ss` shows
//! the listener plus one data socket per nc client; fault injection still echoes intact.

mod common;

use common::{
    Netns, STACK_V4, TempDir, assert_same_bytes, describe, nc_echo_label, poll_until, ss,
    start_stack,
};
use std::fs::File;
use std::process::{Child, Stdio};
use std::time::Duration;

/// `packets in N (..), out M (..)` from the ss report.
fn packets_seen(report: &str) -> Option<u64> {
    let line = report.lines().find(|l| l.starts_with("packets in "))?;
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    Some(numbers.first()? + numbers.get(2)?)
}

fn nc_echo(netns: &Netns, input: &std::path::Path, output: &std::path::Path) {
    let started = std::time::Instant::now();
    let result = netns
        .command_bounded(
            Duration::from_secs(60),
            "nc",
            &["-N", "-w", "10", STACK_V4, "7"],
        )
        .stdin(File::open(input).unwrap())
        .stdout(File::create(output).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(result.status.success(), "nc failed:\n{}", describe(&result));
    assert_same_bytes(input, output, &nc_echo_label("echo", started.elapsed(), 10));
}

#[test]
fn pcap_is_read_by_tshark_counts_every_packet_and_holds_the_stream() {
    let dir = TempDir::new("pcap");
    let pcap = dir.file("stack.pcap");
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let Some((netns, stack)) = start_stack("pcap", &["--pcap", &pcap_arg]) else {
        return;
    };
    let input = dir.random_file("in.bin", 100_000);
    let output = dir.file("out.bin");
    nc_echo(&netns, &input, &output);

    let count_in_pcap = || {
        let out = netns.run(
            Duration::from_secs(20),
            "tshark",
            &["-r", &pcap_arg, "-T", "fields", "-e", "frame.number"],
        );
        assert!(
            out.status.success(),
            "tshark cannot read the pcap:\n{}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).lines().count() as u64
    };
    let mut last = (0, None);
    let matched = poll_until(Duration::from_secs(10), || {
        last = (count_in_pcap(), packets_seen(&ss(&netns)));
        Some(last.0) == last.1
    });
    assert!(
        matched,
        "pcap has {} packets, the stack saw {:?}",
        last.0, last.1
    );
    // With offloads a segment carries up to 64 KiB: 100 kB each way is still at least 2
    // data segments each way, plus the handshake and the FINs and their ACKs.
    assert!(
        last.0 >= 10,
        "a 100 kB echo should take more packets than {}",
        last.0
    );

    // Follow the TCP stream: both directions must be the bytes we sent.
    let out = netns.run(
        Duration::from_secs(20),
        "tshark",
        &["-r", &pcap_arg, "-q", "-z", "follow,tcp,raw,0"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut sent, mut echoed) = (Vec::new(), Vec::new());
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && l.trim().chars().all(|c| c.is_ascii_hexdigit()))
    {
        let bytes = hex(line.trim());
        if line.starts_with('\t') {
            echoed.extend(bytes)
        } else {
            sent.extend(bytes)
        }
    }
    let expected = std::fs::read(&input).unwrap();
    assert!(
        sent == expected,
        "client->stack stream in the pcap differs ({} bytes)",
        sent.len()
    );
    assert!(
        echoed == expected,
        "stack->client stream in the pcap differs ({} bytes)",
        echoed.len()
    );
    stack.assert_no_panic();
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// An nc client that stays connected until its stdin is closed.
fn hold_open(netns: &Netns) -> Child {
    netns
        .command_bounded(Duration::from_secs(60), "nc", &["-N", STACK_V4, "7"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn data_sockets(report: &str) -> Vec<(String, String)> {
    report
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<&str>>())
        .filter(|w| w.len() >= 6 && w[0] == "tcp" && w[1] != "LISTEN" && w[4].contains(':'))
        .map(|w| (w[4].to_string(), w[5].to_string()))
        .collect()
}

#[test]
fn ss_shows_the_listener_and_one_data_socket_per_client() {
    let Some((netns, stack)) = start_stack("ss", &[]) else {
        return;
    };
    const CLIENTS: usize = 5;
    let mut clients: Vec<Child> = (0..CLIENTS).map(|_| hold_open(&netns)).collect();
    let mut report = String::new();
    let all_there = poll_until(Duration::from_secs(10), || {
        report = ss(&netns);
        data_sockets(&report).len() == CLIENTS
    });
    assert!(all_there, "expected {CLIENTS} data sockets:\n{report}");
    let listeners = report
        .lines()
        .filter(|l| l.starts_with("tcp ") && l.contains("LISTEN"))
        .count();
    assert_eq!(listeners, 1, "{report}");
    let sockets = data_sockets(&report);
    assert!(
        sockets.iter().all(|(local, _)| local == "192.168.69.2:7"),
        "all share the listener's ip:port:\n{report}"
    );
    let mut remotes: Vec<&String> = sockets.iter().map(|(_, remote)| remote).collect();
    remotes.sort();
    remotes.dedup();
    assert_eq!(
        remotes.len(),
        CLIENTS,
        "socket pairs must differ:\n{report}"
    );

    for client in &mut clients {
        drop(client.stdin.take()); // EOF: nc sends FIN, the echo closes too
    }
    for client in &mut clients {
        let _ = client.wait();
    }
    let gone = poll_until(Duration::from_secs(10), || {
        report = ss(&netns);
        data_sockets(&report).is_empty()
    });
    assert!(
        gone,
        "data sockets left after the clients closed:\n{report}"
    );
    stack.assert_no_panic();
}

#[test]
fn ten_percent_drop_still_echoes_byte_identical() {
    let Some((netns, stack)) = start_stack("drop10", &["--drop", "10", "--seed", "1"]) else {
        return;
    };
    let dir = TempDir::new("drop10");
    let input = dir.random_file("in.bin", 128 * 1024);
    let output = dir.file("out.bin");
    nc_echo(&netns, &input, &output);
    let report = ss(&netns);
    let faults = report
        .lines()
        .find(|l| l.starts_with("faults injected"))
        .unwrap_or_default();
    let retransmitted = report
        .lines()
        .find_map(|l| l.split("retransmitted ").nth(1))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(
        retransmitted.unwrap_or(0) > 0,
        "no retransmissions counted:\n{report}"
    );
    let dropped: Vec<u64> = faults
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        dropped.first().copied().unwrap_or(0) > 0,
        "no inbound drops counted: {faults}"
    );
    stack.assert_no_panic();
}
