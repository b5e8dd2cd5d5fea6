//! Case 15 (issue 14): the IP rules a host keeps, on a real TUN with scapy's packets — TTL 0,
//! IPv6 extension headers and atomic fragments, broadcast echo, Record Route, overlapping
//! fragments of both families, and the ICMP error rate limit. Each probe of craft.py's
//! PROBES uses its own port or echo id, so one capture tells every answer apart.

use crate::common::{Capture, Netns, TempDir};
use crate::hostile::{Crafter, Report, assert_survived, quiet, run_script, start, wait_for_rx};
use std::time::{Duration, Instant};

/// A probe, how many packets it is, the tcpdump filter its answer matches (`None`: it
/// must get none) and the drop counter it must move by one (`""`: none).
struct Probe {
    name: &'static str,
    packets: u64,
    answer: Option<&'static str>,
    drop: &'static str,
}

const fn probe(name: &'static str, answer: Option<&'static str>, drop: &'static str) -> Probe {
    Probe {
        name,
        packets: 1,
        answer,
        drop,
    }
}

/// ICMPv6 echo reply with this id (ip6[44:2]); the same for ICMP (icmp[4:2]).
const PROBES: &[Probe] = &[
    probe(
        "echo-ttl-0",
        Some("icmp[0] == 0 and icmp[4:2] == 0x1101"),
        "",
    ),
    probe(
        "echo6-hop-limit-0",
        Some("ip6[40] == 129 and ip6[44:2] == 0x1102"),
        "",
    ),
    probe("dest-options-padding", Some("udp and dst port 41103"), ""),
    probe("dest-options-skip", Some("udp and dst port 41104"), ""),
    probe(
        "hop-by-hop-and-dest-options",
        Some("udp and dst port 41105"),
        "",
    ),
    probe(
        "routing-type-0-segments-left-0",
        Some("udp and dst port 41106"),
        "",
    ),
    probe(
        "atomic-fragment",
        Some("ip6[40] == 129 and ip6[44:2] == 0x1107"),
        "",
    ),
    probe("dest-options-discard", None, "ipv6-option"),
    // Parameter Problem code 2 pointing at the option (byte 42).
    probe(
        "dest-options-report",
        Some("ip6[40] == 4 and ip6[41] == 2 and ip6[44:4] == 42"),
        "ipv6-option",
    ),
    // Parameter Problem code 0 pointing at the Routing Type (byte 42).
    probe(
        "routing-type-0-segments-left-1",
        Some("ip6[40] == 4 and ip6[41] == 0 and ip6[44:4] == 42"),
        "ipv6-header",
    ),
    probe("echo-subnet-broadcast", None, "broadcast-echo"),
    probe("echo-limited-broadcast", None, "broadcast-echo"),
    // The reply carries options: a header longer than 20 bytes.
    probe(
        "echo-record-route",
        Some("icmp[0] == 0 and icmp[4:2] == 0x1113 and ip[0] & 0xf == 15"),
        "",
    ),
    Probe {
        packets: 3,
        ..probe("overlapping-fragments6", None, "fragment-overlap")
    },
    Probe {
        packets: 2,
        ..probe(
            "overlapping-fragments4-ack-to-syn",
            None,
            "fragment-overlap",
        )
    },
];

/// Answers a probe that must get none would get.
fn unwanted(name: &str) -> &'static str {
    match name {
        "dest-options-discard" => {
            "udp and dst port 41108 or (ip6[40] == 4 and ip6[41] == 2 and ip6[96:2] == 41108)"
        }
        "echo-subnet-broadcast" => "icmp[4:2] == 0x1111",
        "echo-limited-broadcast" => "icmp[4:2] == 0x1112",
        "overlapping-fragments6" => "icmp6 and ip6[44:2] == 0x1120",
        _ => "tcp and dst port 41121",
    }
}

#[test]
fn ip_rules_ttl_extension_headers_broadcast_echo_and_overlaps_like_linux() {
    let test = "ip-rules";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    let listed = run_script(&netns, Duration::from_secs(30), "craft.py", &["probes"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let names: Vec<&str> = PROBES.iter().map(|p| p.name).collect();
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        names,
        "craft.py's PROBES differ"
    );
    let dir = TempDir::new(test);
    let capture = Capture::start(&netns, "any", &dir.file("probes.pcap"));
    let mut crafter = Crafter::start(&netns);
    let mut failures = Vec::new();
    for probe in PROBES {
        let before = Report::query(&netns);
        crafter.send(probe.name);
        let after = wait_for_rx(&netns, &before, probe.packets, Duration::from_secs(3));
        let expected = match probe.drop {
            "" => Default::default(),
            reason => [(reason.to_string(), 1)].into_iter().collect(),
        };
        let changes = after.drop_changes(&before);
        if changes != expected {
            failures.push(format!(
                "{}: drops {changes:?}, not {expected:?}",
                probe.name
            ));
        }
        if let Some(filter) = probe.answer {
            let filter = format!("inbound and ({filter})");
            if capture
                .wait_for(&netns, &filter, Duration::from_secs(3))
                .is_empty()
            {
                failures.push(format!("{}: no answer matching {filter}", probe.name));
            }
        }
    }
    drop(crafter);
    let file = capture.stop();
    for probe in PROBES.iter().filter(|p| p.answer.is_none()) {
        let filter = format!("inbound and ({})", unwanted(probe.name));
        let answers = Capture::read(&netns, &file, &filter);
        if !answers.is_empty() {
            failures.push(format!("{}: answered: {answers:?}", probe.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_survived(&netns, &mut stack, test);
}

#[test]
fn icmp_errors_are_rate_limited_and_echo_replies_are_not() {
    let test = "icmp-rate";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    let _quiet = quiet();
    let before = Report::query(&netns);
    // The host kernel counts every ICMPv6 destination unreachable it receives: exact, where
    // a capture on a busy machine may miss packets.
    let unreachable_before = host_icmp6_dest_unreachable(&netns);
    let started = Instant::now();
    let sent = run_script(
        &netns,
        Duration::from_secs(30),
        "craft.py",
        &["closed", "tun0", "100"],
    );
    let sent = String::from_utf8_lossy(&sent.stdout).to_string();
    let seconds: f64 = sent
        .split_whitespace()
        .last()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("craft.py closed said {sent:?}"));
    let after = wait_for_rx(&netns, &before, 100, Duration::from_secs(5));
    // The stack read the 100 datagrams within this much time, at most.
    let window = started.elapsed().as_secs_f64();
    // Pings right after: never limited.
    let ping = netns.run(
        Duration::from_secs(30),
        "ping",
        &["-6", "-c", "20", "-i", "0.01", "-W", "2", "fd69::2"],
    );
    let pinged = String::from_utf8_lossy(&ping.stdout).to_string();
    let on_the_wire = host_icmp6_dest_unreachable(&netns) - unreachable_before;
    let (sent_errors, limited) = (
        after.icmp_errors_sent - before.icmp_errors_sent,
        after.icmp_rate_limited - before.icmp_rate_limited,
    );
    eprintln!(
        "{test}: 100 datagrams sent in {seconds} s, read within {window:.3} s: {} port \
         unreachable on the wire, counters sent {sent_errors} rate-limited {limited}",
        on_the_wire
    );
    // A burst of 6 for one destination, one more per second the stack took (like Linux).
    let allowed = 6 + window.floor() as u64;
    assert!(
        (6..=allowed).contains(&sent_errors),
        "{sent_errors} ICMPv6 errors for 100 datagrams read within {window:.3} s (6 to \
         {allowed} expected)"
    );
    assert_eq!(sent_errors + limited, 100);
    // What the host received is what the stack says it sent.
    assert_eq!(
        on_the_wire, sent_errors,
        "port unreachables received by the host vs sent by the stack"
    );
    assert!(
        pinged.contains("20 received"),
        "echo replies were limited:\n{pinged}"
    );
    assert_survived(&netns, &mut stack, test);
}

/// The host side's count of ICMPv6 destination unreachables received (`/proc/net/snmp6`
/// of the namespace).
fn host_icmp6_dest_unreachable(netns: &Netns) -> u64 {
    let out = netns.run(Duration::from_secs(5), "cat", &["/proc/net/snmp6"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("Icmp6InDestUnreachs"))
        .and_then(|n| n.trim().parse().ok())
        .expect("no Icmp6InDestUnreachs in /proc/net/snmp6")
}
