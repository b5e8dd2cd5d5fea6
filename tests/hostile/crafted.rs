//! Cases 1, 2, 9, 10: packets no honest peer sends — malformed and bad-checksum packets
//! (scapy, hping3), nmap scans, and blind RSTs and SYNs into a live connection.

use crate::common::{Capture, ECHO_PORT, Netns, STACK_V4, TempDir, describe, poll_until};
use crate::hostile::clients::Session;
use crate::hostile::{
    Crafter, Report, assert_survived, exclusive_load, from_stack, run_script, script_line, start,
    wait_for_rx,
};
use std::path::Path;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- 1, 2: malformed packets

/// Each catalog packet of tests/hostile/craft.py and the drop counter it must land in.
const MALFORMED: &[(&str, &str)] = &[
    ("ip-header-checksum", "bad-checksum"),
    ("tcp-checksum", "bad-checksum"),
    ("udp-checksum", "bad-checksum"),
    ("icmp-checksum", "bad-checksum"),
    ("tcp6-checksum", "bad-checksum"),
    ("udp6-checksum", "bad-checksum"),
    ("udp6-zero-checksum", "bad-checksum"),
    ("icmp6-checksum", "bad-checksum"),
    ("ip-total-length-long", "malformed"),
    ("ip-total-length-short", "malformed"),
    ("ip-total-length-cuts-tcp", "malformed"),
    ("ihl-3", "malformed"),
    ("ihl-15", "malformed"),
    ("ip-version-5", "malformed"),
    ("one-byte", "malformed"),
    ("truncated-ip-header", "malformed"),
    ("truncated-tcp-header", "malformed"),
    ("truncated-udp-header", "malformed"),
    ("truncated-icmp-header", "malformed"),
    ("tcp-data-offset-4", "malformed"),
    ("tcp-data-offset-15", "malformed"),
    ("udp-length-long", "malformed"),
    ("udp-length-below-8", "malformed"),
    ("ip6-payload-length-long", "malformed"),
    ("ip6-truncated-header", "malformed"),
    ("tcp-option-length-0", "malformed"),
    ("tcp-option-past-header", "malformed"),
    ("tcp-option-window-scale-short", "malformed"),
    ("src-equals-dst", "bad-source"),
    ("src-limited-broadcast", "bad-source"),
    ("src-subnet-broadcast", "bad-source"),
    ("src-multicast", "bad-source"),
    ("src-unspecified", "bad-source"),
    ("src-loopback", "bad-source"),
    ("src6-multicast", "bad-source"),
    ("src6-unspecified", "bad-source"),
    ("src6-equals-dst", "bad-source"),
    ("dst-other-host", "not-for-us"),
    ("ip-protocol-253", "unknown-protocol"),
];

#[test]
fn malformed_packets_are_dropped_unanswered_and_counted_by_reason() {
    let test = "malformed";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    let catalog = script_line(&netns, Duration::from_secs(30), "craft.py", &["names"]);
    let mut catalog: Vec<&str> = catalog.lines().collect();
    let mut expected: Vec<&str> = MALFORMED.iter().map(|(name, _)| *name).collect();
    catalog.sort_unstable();
    expected.sort_unstable();
    assert_eq!(catalog, expected, "craft.py's catalog and MALFORMED differ");

    let dir = TempDir::new(test);
    let capture = Capture::start(&netns, "any", &dir.file("malformed.pcap"));
    let mut crafter = Crafter::start(&netns);
    let mut failures = Vec::new();
    for (name, reason) in MALFORMED {
        let before = Report::query(&netns);
        let bytes = crafter.send(name);
        let after = wait_for_rx(&netns, &before, 1, Duration::from_secs(3));
        let changes = after.drop_changes(&before);
        let expected = [(reason.to_string(), 1)].into_iter().collect();
        let rx = after.rx_packets - before.rx_packets;
        if rx != 1 || changes != expected {
            failures.push(format!(
                "{name} ({bytes} bytes): expected {reason} +1, got {changes:?} (packets read \
                 +{rx}, tcp sockets reaped +{}, data sockets now {})",
                after.tcp_reaped - before.tcp_reaped,
                after.data_sockets().len()
            ));
        }
    }
    drop(crafter);
    let replies = from_stack(&netns, capture, "ip or ip6");
    let report = Report::query(&netns);
    eprintln!(
        "{test}: {} packets, counters after: {:?}",
        MALFORMED.len(),
        report.drops
    );
    assert!(
        replies.is_empty(),
        "the stack answered invalid packets:\n{}",
        replies.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} of {} invalid packets were not counted as expected:\n{}",
        failures.len(),
        MALFORMED.len(),
        failures.join("\n")
    );
    assert_survived(&netns, &mut stack, test);
}

/// The number hping3 reports in "N packets transmitted".
fn hping3_transmitted(output: &std::process::Output) -> u64 {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .find_map(|line| {
            let (count, _) = line.split_once(" packets transmitted")?;
            count.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no hping3 statistics:\n{}", describe(output)))
}

#[test]
fn hping3_bad_checksums_are_unanswered_and_counted_exactly() {
    let test = "hping3-badcksum";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    let dir = TempDir::new(test);
    let capture = Capture::start(&netns, "any", &dir.file("badcksum.pcap"));
    let before = Report::query(&netns);
    let mut sent = 0;
    for mode in [&["-S"][..], &["--udp", "-d", "64"][..]] {
        let mut args = vec!["--badcksum", "-p", ECHO_PORT, "-c", "50", "-i", "u2000"];
        args.extend_from_slice(mode);
        args.push(STACK_V4);
        // hping3 exits 1 when nothing answers, which is the point here.
        let output = netns.run(Duration::from_secs(30), "hping3", &args);
        sent += hping3_transmitted(&output);
    }
    let after = wait_for_rx(&netns, &before, sent, Duration::from_secs(5));
    let replies = from_stack(&netns, capture, "ip or ip6");
    let changes = after.drop_changes(&before);
    eprintln!("{test}: hping3 sent {sent}, drops {changes:?}");
    assert_eq!(sent, 100, "hping3 did not send all 100 packets");
    assert!(
        replies.is_empty(),
        "the stack answered bad-checksum packets:\n{}",
        replies.join("\n")
    );
    assert_eq!(
        changes,
        [("bad-checksum".to_string(), sent)].into_iter().collect(),
        "hping3 sent {sent} bad-checksum packets; the counters changed by {changes:?}"
    );
    assert_survived(&netns, &mut stack, test);
}

// ---------------------------------------------------------------- 9: scans

#[test]
fn nmap_scans_find_only_the_echo_port_and_the_stack_stays_up() {
    let test = "nmap";
    // Port unreachables unlimited, like `sysctl net.ipv4.icmp_ratelimit=0` on a Linux
    // target: at one error a second (the default) a UDP scan of 1024 ports takes minutes.
    let unlimited = ["--icmp-ratelimit-ms", "0", "--icmp-msgs-per-sec", "0"];
    let Some((netns, mut stack)) = start(test, &unlimited) else {
        return;
    };
    let _load = exclusive_load();
    let mut problems = Vec::new();
    for scan in ["-sS", "-sT", "-sU", "-O"] {
        let started = Instant::now();
        let args = [
            "-n",
            "-Pn",
            scan,
            "-T4",
            "-p",
            "1-1024",
            "--host-timeout",
            "90s",
            STACK_V4,
        ];
        let output = netns.run(Duration::from_secs(120), "nmap", &args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let open: Vec<&str> = stdout
            .lines()
            .filter(|l| l.contains(" open"))
            .map(str::trim)
            .collect();
        let protocol = if scan == "-sU" { "udp" } else { "tcp" };
        eprintln!("{test}: nmap {scan} took {:?}: {open:?}", started.elapsed());
        let only_echo = !open.is_empty()
            && open
                .iter()
                .all(|l| l.starts_with(&format!("7/{protocol} ")));
        if !output.status.success() || !only_echo || !stdout.contains("1 host up") {
            problems.push(format!(
                "nmap {scan}: open ports {open:?}\n{}",
                describe(&output)
            ));
        }
        if let Some(status) = stack.wait_exit(Duration::ZERO) {
            panic!(
                "the stack exited during nmap {scan}: {status}\n{}",
                stack.stderr()
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_survived(&netns, &mut stack, test);
}

// ---------------------------------------------------------------- 10: blind RST and SYN

/// An interactive session, its client port as the stack sees it, and how many bytes it has
/// had echoed (so the capture can be read once it holds all of them).
struct Tracked {
    session: Session,
    port: u16,
    echoed: usize,
}

impl Tracked {
    fn open(netns: &Netns, tag: &str) -> Tracked {
        let known: Vec<String> = Report::query(netns)
            .data_sockets()
            .iter()
            .map(|r| r.remote.clone())
            .collect();
        let mut session = Session::open(netns, STACK_V4);
        let hello = format!("{tag} hello\n");
        session.echo(hello.as_bytes());
        let report = Report::query(netns);
        let row = report
            .data_sockets()
            .into_iter()
            .find(|r| !known.contains(&r.remote))
            .unwrap_or_else(|| panic!("no new data socket for {tag}:\n{}", report.text));
        let port = row.remote.rsplit(':').next().unwrap().parse().unwrap();
        Tracked {
            session,
            port,
            echoed: hello.len(),
        }
    }

    fn echo(&mut self, line: &str) -> Result<(), String> {
        self.session
            .try_echo(line.as_bytes(), Duration::from_secs(5))?;
        self.echoed += line.len();
        Ok(())
    }

    fn remote(&self) -> String {
        format!("192.168.69.1:{}", self.port)
    }

    fn established(&self, netns: &Netns) -> bool {
        Report::query(netns)
            .tcp_to(&self.remote())
            .iter()
            .any(|r| r.state == "ESTABLISHED")
    }

    /// The stack's RCV.NXT for this connection, learned from the capture: the ack number of
    /// its last segment, once the capture holds every byte echoed so far.
    fn rcv_nxt(&self, netns: &Netns, pcap: &Path) -> u32 {
        let filter = format!(
            "src host {STACK_V4} and tcp dst port {} and tcp[tcpflags] & tcp-ack != 0",
            self.port
        );
        let mut segments = Vec::new();
        let complete = poll_until(Duration::from_secs(3), || {
            let output = netns.run_ok(
                Duration::from_secs(20),
                "tcpdump",
                &["-r", pcap.to_str().unwrap(), "-nn", "-S", &filter],
            );
            segments = String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(String::from)
                .collect();
            let captured: usize = segments
                .iter()
                .filter_map(|l| field::<usize>(l, "length "))
                .sum();
            captured >= self.echoed
        });
        let last_ack = segments.iter().rev().find_map(|l| field(l, ", ack "));
        match (complete, last_ack) {
            (true, Some(ack)) => ack,
            _ => panic!(
                "the capture does not show all {} echoed bytes to port {}:\n{}",
                self.echoed,
                self.port,
                segments.join("\n")
            ),
        }
    }
}

/// The number right after `label` in a tcpdump line ("length 6", ", ack 123,").
fn field<T: std::str::FromStr>(line: &str, label: &str) -> Option<T> {
    let rest = line.split(label).nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Writes one TCP segment from the client's side of `port` into the TUN.
fn forge(netns: &Netns, port: u16, flags: &str, seq: u32) {
    let port = port.to_string();
    let seq = seq.to_string();
    let args = [
        "segment",
        "tun0",
        "192.168.69.1",
        &port,
        STACK_V4,
        ECHO_PORT,
        flags,
        &seq,
        "0",
    ];
    run_script(netns, Duration::from_secs(30), "craft.py", &args);
}

/// Sends a forged segment and waits until the stack has read it.
fn forge_and_wait(netns: &Netns, port: u16, flags: &str, seq: u32) {
    let before = Report::query(netns);
    forge(netns, port, flags, seq);
    wait_for_rx(netns, &before, 1, Duration::from_secs(3));
}

#[test]
fn blind_resets_and_syns_spare_the_connection_and_an_exact_reset_closes_only_its_own() {
    let test = "blind-rst";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    let dir = TempDir::new(test);
    let pcap = dir.file("blind.pcap");
    let capture = Capture::start(&netns, "tun0", &pcap);
    let mut victim = Tracked::open(&netns, "victim");
    let mut bystander = Tracked::open(&netns, "bystander");
    let mut failures = Vec::new();
    let rcv = victim.rcv_nxt(&netns, &pcap);
    // The stack's receive window is at most its 64 KiB buffer: these are all outside it.
    let blind: [(&str, u32, &str); 6] = [
        (
            "R",
            rcv.wrapping_add(1 << 31),
            "RST half the sequence space away",
        ),
        ("R", rcv.wrapping_sub(100_000), "RST behind RCV.NXT"),
        ("R", rcv.wrapping_add(200_000), "RST beyond the window"),
        ("S", rcv.wrapping_add(5_000_000), "SYN beyond the window"),
        ("S", rcv.wrapping_sub(5_000_000), "SYN behind RCV.NXT"),
        (
            "RA",
            rcv.wrapping_add(1 << 30),
            "RST+ACK far out of the window",
        ),
    ];
    for (i, (flags, seq, what)) in blind.iter().enumerate() {
        forge_and_wait(&netns, victim.port, flags, *seq);
        let echoed = victim.echo(&format!("after blind {i}\n"));
        if !victim.established(&netns) || echoed.is_err() {
            failures.push(format!(
                "{what} (seq {seq}, RCV.NXT {rcv}) broke the connection: {echoed:?}"
            ));
            break;
        }
    }
    // The exact reset, learned from the capture after the last echo.
    let rcv = victim.rcv_nxt(&netns, &pcap);
    forge_and_wait(&netns, victim.port, "R", rcv);
    let victim_gone = poll_until(Duration::from_secs(3), || {
        Report::query(&netns).tcp_to(&victim.remote()).is_empty()
    });
    let bystander_ok = bystander.established(&netns);
    let bystander_echo = bystander.echo("bystander still here\n");
    drop(capture);
    let report = Report::query(&netns);
    eprintln!("{test}: sockets after the exact RST:\n{}", report.text);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        victim_gone,
        "an exact RST (seq = RCV.NXT = {rcv}) did not close the victim connection:\n{}",
        report.text
    );
    assert!(
        bystander_ok && bystander_echo.is_ok(),
        "the exact RST to port {} also hurt the other connection (port {}): {bystander_echo:?}\n{}",
        victim.port,
        bystander.port,
        report.text
    );
    victim.session.kill();
    bystander.session.kill();
    assert_survived(&netns, &mut stack, test);
}

/// RFC 5961 §3.2 and §4.2, with scapy on a real TUN: an in-window RST that is not exactly
/// RCV.NXT, and any SYN in a synchronized state, get a challenge ACK (the guard in front of
/// smoltcp, src/stack/guard.rs); the connection survives.
#[test]
fn in_window_blind_resets_and_syns_are_challenged_not_obeyed() {
    let test = "rfc5961";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    let dir = TempDir::new(test);
    let pcap = dir.file("rfc5961.pcap");
    let capture = Capture::start(&netns, "tun0", &pcap);
    let mut failures = Vec::new();
    for (flags, offset, what) in [
        ("R", 1, "RST at RCV.NXT+1"),
        ("R", 1000, "RST at RCV.NXT+1000"),
        ("S", 0, "SYN at RCV.NXT"),
        ("S", 1000, "SYN at RCV.NXT+1000"),
    ] {
        let mut tracked = Tracked::open(&netns, what);
        let rcv = tracked.rcv_nxt(&netns, &pcap);
        forge_and_wait(&netns, tracked.port, flags, rcv.wrapping_add(offset));
        let echoed = tracked.echo("still here?\n");
        if !tracked.established(&netns) || echoed.is_err() {
            failures.push(format!(
                "{what} (RCV.NXT {rcv}) broke the connection: {echoed:?}"
            ));
        }
        tracked.session.kill();
    }
    let file = capture.stop();
    let from_stack = Capture::read(&netns, &file, &format!("src host {STACK_V4}"));
    assert!(
        failures.is_empty(),
        "{}\nsegments from the stack:\n{}",
        failures.join("\n"),
        from_stack.join("\n")
    );
    assert_survived(&netns, &mut stack, test);
}
