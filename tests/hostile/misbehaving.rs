//! Cases 4 and 12: clients that misbehave — more than the backlog at once, a peer that stops
//! reading, one that vanishes mid-transfer, and (the other side) one that is merely idle.

use crate::common::{Capture, ECHO_PORT, Netns, STACK_V4, TempDir, poll_until};
use crate::hostile::clients::{Session, Stream};
use crate::hostile::{
    Report, RssWatch, USER_TIMEOUT, USER_TIMEOUT_ARGS, assert_survived, nft_load, python, script,
    stack_pid, start,
};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- 4: backlog

/// 40 clients at once against `--backlog 4`; each holds its connection after one echo.
/// Returns how many were served, and panics on any that hang or fail uncleanly.
fn backlog_round(netns: &Netns, round: &str) -> (Vec<Session>, usize) {
    let started = Instant::now();
    let mut sessions: Vec<Session> = (0..40).map(|_| Session::open(netns, STACK_V4)).collect();
    let (mut served, mut refused, mut problems, mut slowest) = (0, 0, Vec::new(), Duration::ZERO);
    for (i, session) in sessions.iter_mut().enumerate() {
        let line = format!("{round} client {i}\n");
        let left = (started + Duration::from_secs(10)).saturating_duration_since(Instant::now());
        match session.try_echo(line.as_bytes(), left) {
            Ok(()) => {
                served += 1;
                slowest = slowest.max(started.elapsed());
            }
            Err(reason) => match session.wait_exit(Duration::from_secs(1)) {
                Some(status) if started.elapsed() <= Duration::from_secs(2) => {
                    refused += 1;
                    eprintln!("{round}: client {i} refused ({status}): {reason}");
                }
                _ => problems.push(format!("client {i}: {reason}")),
            },
        }
    }
    eprintln!("{round}: {served} served (last echo after {slowest:?}), {refused} refused quickly");
    assert!(
        problems.is_empty(),
        "{round}: {} clients neither got served within 10 s nor were refused within 2 s:\n{}",
        problems.len(),
        problems.join("\n")
    );
    (sessions, served)
}

#[test]
fn more_clients_than_the_backlog_wait_or_are_refused_then_recover() {
    let test = "backlog";
    let Some((netns, mut stack)) = start(test, &["--backlog", "4"]) else {
        return;
    };
    let before = Report::query(&netns);
    let (sessions, first) = backlog_round(&netns, "first 40");
    let held = Report::query(&netns);
    for session in sessions {
        session.kill();
    }
    let drained = poll_until(Duration::from_secs(10), || {
        Report::query(&netns).data_sockets().is_empty()
    });
    assert!(
        drained,
        "the 40 closed connections still hold sockets after 10 s:\n{}",
        Report::query(&netns).text
    );
    let (sessions, second) = backlog_round(&netns, "second 40");
    drop(sessions);
    let report = Report::query(&netns);
    eprintln!(
        "{test}: first round {first} served ({} data sockets held), second {second}; \
         backlog-full drops {}",
        held.data_sockets().len(),
        report.drop_count("backlog-full") - before.drop_count("backlog-full")
    );
    assert!(
        second >= first,
        "fewer clients were served after the overload ({second}) than during it ({first})"
    );
    assert_survived(&netns, &mut stack, test);
}

// ---------------------------------------------------------------- 12: slow and vanished peers

#[test]
fn a_peer_that_stops_reading_gets_a_zero_window_and_bounded_memory() {
    let test = "stop-reading";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    let dir = TempDir::new(test);
    let capture = Capture::start(&netns, "tun0", &dir.file("stall.pcap"));
    let memory = RssWatch::start(stack_pid(&netns));
    let python = python().unwrap();
    let mut staller = netns
        .command_bounded(
            Duration::from_secs(60),
            python,
            &[&script("peers.py"), "stall", STACK_V4, ECHO_PORT],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start peers.py stall");
    let mut stalled = String::new();
    BufReader::new(staller.stdout.as_mut().unwrap())
        .read_line(&mut stalled)
        .unwrap();
    let zero_window = format!(
        "src host {STACK_V4} and tcp src port {ECHO_PORT} and tcp[14:2] = 0 and \
         tcp[tcpflags] & tcp-rst = 0"
    );
    let windows = capture.wait_for(&netns, &zero_window, Duration::from_secs(5));
    let report = Report::query(&netns);
    // Keep it stalled a few seconds: nothing may grow while the peer probes the window.
    let exited_early = poll_until(Duration::from_secs(3), || {
        staller.try_wait().ok().flatten().is_some()
    });
    let rows = report.data_sockets();
    eprintln!("{test}: {}; stack socket {rows:?}", stalled.trim());
    drop(staller.stdin.take());
    let _ = staller.wait();
    drop(capture);
    assert!(!exited_early, "the stalled client exited early");
    assert!(
        stalled.starts_with("stalled after"),
        "peers.py stall: {stalled:?}"
    );
    assert!(
        !windows.is_empty(),
        "the stack never advertised a zero window to a client that does not read"
    );
    memory.assert_growth_below(2 * 1024, test);
    assert_survived(&netns, &mut stack, test);
}

#[test]
fn a_vanished_peer_is_reaped_with_memory_bounded() {
    let test = "vanished";
    let Some((netns, mut stack)) = start(test, &USER_TIMEOUT_ARGS) else {
        return;
    };
    let dir = TempDir::new(test);
    let memory = RssWatch::start(stack_pid(&netns));
    let stream = Stream::start(&netns, STACK_V4, 16 * 1024, Duration::from_millis(5));
    let before = Report::query(&netns);
    let busy = poll_until(Duration::from_secs(10), || {
        Report::query(&netns).rx_packets > before.rx_packets + 200
    });
    assert!(busy, "the stream did not get going");
    // First the echo stops reaching the client, so the stack holds unacknowledged data...
    let to_client = "table inet vanish {\n\
        chain in { type filter hook input priority 0; iifname \"tun0\" drop; }\n\
        }\n";
    nft_load(&netns, &dir, "to-client.nft", to_client);
    let mut at_vanish = Report::query(&netns);
    let in_flight = poll_until(Duration::from_secs(5), || {
        at_vanish = Report::query(&netns);
        at_vanish.data_sockets().iter().any(|r| r.send_q > 0)
    });
    // ...then the client vanishes altogether: nothing from it either, and nc dies.
    let from_client = "table inet vanish {\n\
        chain out { type filter hook output priority 0; oifname \"tun0\" drop; }\n\
        }\n";
    nft_load(&netns, &dir, "from-client.nft", from_client);
    let vanished = Instant::now();
    drop(stream);
    let rows: Vec<_> = at_vanish.data_sockets().into_iter().cloned().collect();
    assert!(
        in_flight,
        "the stack never held unacknowledged data for the client: {rows:?}"
    );
    let reaped = poll_until(USER_TIMEOUT + Duration::from_secs(15), || {
        Report::query(&netns).data_sockets().is_empty()
    });
    let took = vanished.elapsed();
    let after = Report::query(&netns);
    eprintln!(
        "{test}: at vanish {rows:?}; reaped {reaped} after {took:?}; reaped counter {} -> {}",
        at_vanish.tcp_reaped, after.tcp_reaped
    );
    netns.run_ok(
        Duration::from_secs(10),
        "nft",
        &["delete", "table", "inet", "vanish"],
    );
    assert!(
        reaped,
        "the socket of a vanished peer was not reaped within {took:?}:\n{}",
        after.text
    );
    memory.assert_growth_below(2 * 1024, test);
    assert_survived(&netns, &mut stack, test);
}

/// The other side of reaping vanished peers: a live peer that is merely quiet for longer
/// than the TCP timeout keeps its connection (it answers whatever the stack asks).
#[test]
fn an_idle_live_peer_outlasts_the_tcp_timeout() {
    let test = "idle";
    let Some((netns, mut stack)) = start(test, &USER_TIMEOUT_ARGS) else {
        return;
    };
    let idle = USER_TIMEOUT.as_secs() * 2 + 30; // nc -w: nc itself must outlast the wait
    let mut session = Session::open_idle(&netns, STACK_V4, idle);
    session.echo(b"before the quiet spell\n");
    let idle_from = Instant::now();
    let remote = Report::query(&netns)
        .data_sockets()
        .first()
        .map(|r| r.remote.clone())
        .expect("a data socket for the session");
    // Wait out the timeout, but stop as soon as the stack drops the connection.
    let dropped = poll_until(USER_TIMEOUT + Duration::from_secs(10), || {
        Report::query(&netns).tcp_to(&remote).is_empty()
    });
    let quiet = idle_from.elapsed();
    let echoed = session.try_echo(b"after the quiet spell\n", Duration::from_secs(5));
    eprintln!("{test}: after {quiet:?} idle: dropped by the stack {dropped}, echo {echoed:?}");
    assert!(
        !dropped && echoed.is_ok(),
        "a live but idle connection was dropped after {quiet:?} of quiet (echo afterwards: \
         {echoed:?}); its peer would have answered a keep-alive:\n{}",
        stack.stderr()
    );
    session.kill();
    assert_survived(&netns, &mut stack, test);
}
