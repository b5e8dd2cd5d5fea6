//! Cases 6, 7, 13: data integrity — 10 MiB TCP and full-size UDP datagrams, 1 MiB through
//! 5% loss (injected and by nft), and SIGTERM in the middle of a transfer.

use crate::common::{
    Capture, ECHO_PORT, Netns, STACK_V4, STACK_V6, TempDir, assert_same_bytes, describe,
    nc_echo_label, poll_until,
};
use crate::hostile::clients::Stream;
use crate::hostile::{Report, assert_survived, exclusive_load, numbers, quiet, script_line, start};
use std::process::Stdio;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- 6: integrity

#[test]
fn ten_mebibytes_tcp_and_full_size_udp_datagrams_are_byte_identical() {
    let test = "integrity";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    let _load = exclusive_load();
    let dir = TempDir::new(test);
    let sent = dir.random_file("sent", 10 << 20);
    let received = dir.file("received");
    let started = Instant::now();
    let output = netns
        .command_bounded(
            Duration::from_secs(120),
            "nc",
            &["-N", "-w", "10", STACK_V4, ECHO_PORT],
        )
        .stdin(std::fs::File::open(&sent).unwrap())
        .stdout(std::fs::File::create(&received).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let tcp_time = started.elapsed();
    assert!(output.status.success(), "nc failed:\n{}", describe(&output));
    assert_same_bytes(
        &sent,
        &received,
        &nc_echo_label("10 MiB TCP echo", tcp_time, 10),
    );

    let mut udp = Vec::new();
    for (address, size, count) in [(STACK_V4, "1472", "1000"), (STACK_V6, "1452", "300")] {
        let args = ["udp-echo", address, ECHO_PORT, count, size];
        let line = script_line(&netns, Duration::from_secs(60), "peers.py", &args);
        let counts = numbers(&line);
        assert!(
            counts.get("echoed").map(u64::to_string).as_deref() == Some(count)
                && counts.get("wrong") == Some(&0),
            "{count} {size}-byte UDP datagrams to {address}: {line}"
        );
        udp.push(format!("{address} {size} bytes: {line}"));
    }
    eprintln!("{test}: 10 MiB TCP echo in {tcp_time:?}; UDP {udp:?}");
    assert_survived(&netns, &mut stack, test);
}

// ---------------------------------------------------------------- 7: loss

/// 1 MiB through the echo with nc; returns how long it took. Panics unless identical
/// within 60 s.
fn mebibyte_through_loss(netns: &Netns, test: &str) -> Duration {
    let dir = TempDir::new(test);
    let sent = dir.random_file("sent", 1 << 20);
    let received = dir.file("received");
    let started = Instant::now();
    let output = netns
        .command_bounded(
            Duration::from_secs(60),
            "nc",
            &["-N", "-w", "30", STACK_V4, ECHO_PORT],
        )
        .stdin(std::fs::File::open(&sent).unwrap())
        .stdout(std::fs::File::create(&received).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let took = started.elapsed();
    let got = std::fs::metadata(&received).map_or(0, |m| m.len());
    eprintln!("{test}: 1 MiB echo: {got} bytes back after {took:?}");
    assert!(
        output.status.success(),
        "{test}: 1 MiB did not make it within 60 s ({got} bytes came back after {took:?}):\n{}",
        describe(&output)
    );
    let what = format!("{test}: 1 MiB echo");
    assert_same_bytes(&sent, &received, &nc_echo_label(&what, took, 30));
    took
}

#[test]
fn one_mebibyte_through_injected_drop_and_corruption() {
    let test = "loss-injected";
    let Some((netns, mut stack)) = start(test, &["--drop", "5", "--corrupt", "1"]) else {
        return;
    };
    let _quiet = quiet();
    mebibyte_through_loss(&netns, test);
    let report = Report::query(&netns);
    eprintln!(
        "{test}: {}",
        report
            .text
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    assert_survived(&netns, &mut stack, test);
}

#[test]
fn one_mebibyte_through_five_percent_nft_loss() {
    let test = "loss-nft";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    let _quiet = quiet();
    let rules = "table inet hostile {\n\
        chain out { type filter hook output priority 0; oifname \"tun0\" numgen random mod 100 < 5 counter drop; }\n\
        chain in { type filter hook input priority 0; iifname \"tun0\" numgen random mod 100 < 5 counter drop; }\n\
        }\n";
    let dir = TempDir::new(test);
    let ruleset = dir.file("loss.nft");
    std::fs::write(&ruleset, rules).unwrap();
    netns.run_ok(
        Duration::from_secs(10),
        "nft",
        &["-f", ruleset.to_str().unwrap()],
    );
    mebibyte_through_loss(&netns, test);
    let counters = netns.run_ok(
        Duration::from_secs(10),
        "nft",
        &["list", "table", "inet", "hostile"],
    );
    let dropped: Vec<String> = String::from_utf8_lossy(&counters.stdout)
        .lines()
        .filter(|l| l.contains("counter"))
        .map(|l| l.trim().to_string())
        .collect();
    eprintln!("{test}: nft {dropped:?}");
    netns.run_ok(
        Duration::from_secs(10),
        "nft",
        &["delete", "table", "inet", "hostile"],
    );
    assert_survived(&netns, &mut stack, test);
}

// ---------------------------------------------------------------- 13: SIGTERM mid-transfer

/// Epoch seconds of each packet matching `filter` in a capture (tcpdump -tt).
fn packet_times(netns: &Netns, pcap: &std::path::Path, filter: &str) -> Vec<f64> {
    let output = netns.run_ok(
        Duration::from_secs(20),
        "tcpdump",
        &["-r", pcap.to_str().unwrap(), "-nn", "-tt", filter],
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn sigterm_mid_transfer_sends_fin_exits_0_and_leaves_the_tun() {
    let test = "sigterm-transfer";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    let _quiet = quiet();
    let dir = TempDir::new(test);
    let pcap = dir.file("sigterm.pcap");
    let capture = Capture::start(&netns, "tun0", &pcap);
    let stream = Stream::start(&netns, STACK_V4, 16 * 1024, Duration::from_millis(2));
    let before = Report::query(&netns);
    let busy = poll_until(Duration::from_secs(10), || {
        Report::query(&netns).rx_packets > before.rx_packets + 200
    });
    assert!(busy, "the transfer did not get going");
    let signalled = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let clock = Instant::now();
    stack.signal("TERM");
    let status = stack.wait_exit(Duration::from_secs(5));
    let exit_time = clock.elapsed();
    let fin = format!(
        "src host {STACK_V4} and tcp src port {ECHO_PORT} and tcp[tcpflags] & tcp-fin != 0"
    );
    capture.wait_for(&netns, &fin, Duration::from_secs(2));
    drop(stream);
    let file = capture.stop();
    let fins = packet_times(&netns, &file, &fin);
    let first_fin = fins.first().map(|t| t - signalled);
    let addresses = netns.run(
        Duration::from_secs(5),
        "ip",
        &["addr", "show", "dev", "tun0"],
    );
    let addresses = String::from_utf8_lossy(&addresses.stdout).to_string();
    eprintln!(
        "{test}: exit {status:?} after {exit_time:?}; first FIN {first_fin:?} s after SIGTERM"
    );
    stack.assert_no_panic();
    let status =
        status.unwrap_or_else(|| panic!("still running 5 s after SIGTERM:\n{}", stack.stderr()));
    assert!(
        status.success(),
        "exit status {status} after SIGTERM:\n{}",
        stack.stderr()
    );
    match first_fin {
        Some(delay) => assert!(
            delay <= 1.0,
            "the first FIN left {delay:.3} s after SIGTERM"
        ),
        None => panic!("no FIN from the stack after SIGTERM"),
    }
    for address in ["192.168.69.1/24", "fd69::1/64"] {
        assert!(
            addresses.contains(address),
            "tun0 lost {address} when the stack exited:\n{addresses}"
        );
    }
}
