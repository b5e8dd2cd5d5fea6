//! TUN offloads on a real device: by default TCP segments up to 64 KiB cross the TUN whole
//! both ways (counted by `tunstack ss`), the echoed bytes stay identical over IPv4 and IPv6;
//! with `--no-offload` — even right after an offload run left its device-wide settings
//! behind — no packet is longer than the MTU.

mod common;

use common::{
    Netns, STACK_V4, STACK_V6, Stack, TempDir, assert_same_bytes, describe, ss, start_stack,
};
use std::fs::File;
use std::path::Path;
use std::time::Duration;

/// The numbers on the `offloads:` line of the ss report: rx super-packets, partial
/// checksums, checksums completed, refused, tx super-packets, IPv6 segments joined into
/// them. None if there is no such line.
fn offload_counters(report: &str) -> Option<[u64; 6]> {
    let line = report.lines().find(|l| l.starts_with("offloads:"))?;
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    numbers.try_into().ok()
}

fn nc_echo(netns: &Netns, host: &str, input: &Path, output: &Path) {
    let result = netns
        .command_bounded(
            Duration::from_secs(60),
            "nc",
            &["-N", "-w", "10", host, "7"],
        )
        .stdin(File::open(input).unwrap())
        .stdout(File::create(output).unwrap())
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "nc {host} failed:\n{}",
        describe(&result)
    );
    assert_same_bytes(input, output, &format!("echo over {host}"));
}

#[test]
fn tcp_super_packets_cross_the_tun_both_ways_and_the_bytes_stay_identical() {
    let Some((netns, stack)) = start_stack("offload", &["--trace"]) else {
        return;
    };
    let dir = TempDir::new("offload");
    let input = dir.random_file("in.bin", 4 << 20);
    let output = dir.file("out.bin");

    nc_echo(&netns, STACK_V4, &input, &output);
    let [rx_super, partial, _, refused, tx_super, joined] =
        offload_counters(&ss(&netns)).expect("ss shows no offloads line: offloads are off");
    assert_eq!(refused, 0, "frames refused");
    assert!(rx_super > 0, "no super-packet came in over IPv4");
    assert!(tx_super > 0, "no super-packet went out over IPv4");
    assert_eq!(
        joined, 0,
        "IPv4 segments are made long by smoltcp, not joined"
    );
    assert!(
        partial >= rx_super,
        "super-packets come with a partial checksum"
    );

    // IPv6: super-packets come in; out, smoltcp's MSS-sized segments are joined into them
    // (phy/coalesce.rs). How many segments a turn has depends on how the ACKs and the
    // echo's reads fell (two each under load); what the coalescer guarantees is that a
    // super-packet holds at least two (its unit tests count them exactly).
    nc_echo(&netns, STACK_V6, &input, &output);
    let [rx_super_v6, _, _, refused, tx_super_v6, joined] = offload_counters(&ss(&netns)).unwrap();
    assert_eq!(refused, 0, "frames refused");
    assert!(rx_super_v6 > rx_super, "no super-packet came in over IPv6");
    assert!(tx_super_v6 > tx_super, "no super-packet went out over IPv6");
    assert!(
        joined >= 2 * (tx_super_v6 - tx_super),
        "{joined} IPv6 segments joined into {} super-packets: one has fewer than two",
        tx_super_v6 - tx_super
    );
    stack.assert_no_panic();
    // The trace shows the checksums the partial ones (both ways) stand for.
    let trace = stack.stderr();
    let longest = trace
        .lines()
        .filter_map(|l| l.split(", length ").nth(1))
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max();
    assert!(longest > Some(1460), "the trace shows no super-packet");
    let bad: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("bad checksum"))
        .take(3)
        .collect();
    assert!(
        bad.is_empty(),
        "the trace shows bad checksums:\n{}",
        bad.join("\n")
    );
}

#[test]
fn without_offloads_no_packet_is_longer_than_the_mtu_even_after_an_offload_run() {
    let Some((netns, stack)) = start_stack("no-offload", &[]) else {
        return;
    };
    let dir = TempDir::new("no-offload");
    let input = dir.random_file("in.bin", 1 << 20);
    let output = dir.file("out.bin");
    // An offload run first: it leaves TSO switched on for the device.
    nc_echo(&netns, STACK_V4, &input, &output);
    drop(stack);

    let pcap = dir.file("plain.pcap");
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let stack = Stack::start(&netns, &["--no-offload", "--pcap", &pcap_arg]);
    nc_echo(&netns, STACK_V4, &input, &output);
    assert_eq!(
        offload_counters(&ss(&netns)),
        None,
        "offloads on with --no-offload"
    );
    drop(stack);

    let out = netns.run(
        Duration::from_secs(20),
        "tshark",
        &["-r", &pcap_arg, "-T", "fields", "-e", "frame.len"],
    );
    assert!(
        out.status.success(),
        "tshark cannot read the pcap:\n{}",
        describe(&out)
    );
    let lengths: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(
        lengths.len() > 700,
        "1 MiB each way in {} packets",
        lengths.len()
    );
    let longest = lengths.iter().max().copied().unwrap_or(0);
    assert!(
        longest <= 1500,
        "a {longest}-byte packet crossed a 1500-byte MTU TUN"
    );
}
