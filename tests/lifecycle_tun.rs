//! `tunstack echo` lifecycle on a real TUN device: SIGTERM/SIGINT close every TCP
//! connection with FIN and exit 0 quickly; a missing device or missing permission fails
//! with a pointer to scripts/setup.sh. One network namespace per test; needs root.

mod common;

use common::{
    Capture, ECHO_PORT, Netns, STACK_V4, Stack, TempDir, describe, poll_until, require_root,
    start_stack,
};
use std::io::{Read, Write};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A connected interactive nc: lines written to it are echoed back through `echoed`.
struct Session {
    nc: Child,
    echoed: mpsc::Receiver<Vec<u8>>,
}

impl Session {
    fn open(netns: &Netns, address: &str) -> Session {
        let mut nc = netns
            .command_bounded(
                Duration::from_secs(60),
                "nc",
                &["-w", "20", address, ECHO_PORT],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start nc");
        let mut stdout = nc.stdout.take().unwrap();
        let (sender, echoed) = mpsc::channel();
        thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buffer) {
                if sender.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Session { nc, echoed }
    }

    /// Sends `line` and waits (bounded) until it has come back.
    fn echo(&mut self, line: &[u8]) {
        self.nc.stdin.as_mut().unwrap().write_all(line).unwrap();
        let mut received = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while received.len() < line.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.echoed.recv_timeout(left) {
                Ok(chunk) => received.extend(chunk),
                Err(_) => panic!("no echo of {line:?} within 5 s (got {received:?})"),
            }
        }
        assert_eq!(received, line, "interactive echo");
    }

    /// Closes nc's input and returns how it ended.
    fn finish(mut self) -> Output {
        drop(self.nc.stdin.take());
        self.nc.wait_with_output().unwrap()
    }
}

fn signal_closes_connections_and_exits_0(test: &str, signal: &str) {
    let Some((netns, mut stack)) = start_stack(test, &[]) else {
        return;
    };
    let dir = TempDir::new(test);
    let capture = Capture::start(&netns, "any", &dir.file("trace.pcap"));
    let mut session = Session::open(&netns, STACK_V4);
    session.echo(b"hello before the signal\n");

    let signalled = Instant::now();
    stack.signal(signal);
    let status = stack.wait_exit(Duration::from_secs(5));
    let elapsed = signalled.elapsed();
    match status {
        Some(status) => assert!(
            status.success() && elapsed <= Duration::from_secs(2),
            "after SIG{signal} the stack should exit 0 within 2 s; it exited with {status} after \
             {elapsed:?}:\n{}",
            stack.stderr()
        ),
        None => panic!(
            "the stack still runs 5 s after SIG{signal}:\n{}",
            stack.stderr()
        ),
    }
    stack.assert_no_panic();

    // The client's socket is in CLOSE-WAIT only if the stack's FIN arrived.
    let filter = ["-H", "-t", "-n", "state", "close-wait", "dst", STACK_V4];
    let saw_fin = poll_until(Duration::from_secs(2), || {
        let output = netns.run(Duration::from_secs(5), "ss", &filter);
        !String::from_utf8_lossy(&output.stdout).trim().is_empty()
    });
    let from_stack = format!("src host {STACK_V4} and src port {ECHO_PORT}");
    let fin_filter = format!("{from_stack} and tcp[tcpflags] & tcp-fin != 0");
    let fins = capture.wait_for(&netns, &fin_filter, Duration::from_secs(2));
    let trace = capture.stop();
    let rst_filter = format!("{from_stack} and tcp[tcpflags] & tcp-rst != 0");
    let resets = Capture::read(&netns, &trace, &rst_filter);
    let output = session.finish();
    assert!(
        saw_fin && !fins.is_empty(),
        "nc did not see the connection closed with FIN after SIG{signal} (CLOSE-WAIT seen: {saw_fin}, \
         FINs from the stack: {fins:?}, RSTs from the stack: {resets:?})"
    );
    assert!(
        resets.is_empty(),
        "the stack reset the connection instead of closing it: {resets:?}"
    );
    assert!(
        output.status.success(),
        "nc ended badly:\n{}",
        describe(&output)
    );
}

#[test]
fn sigterm_closes_connections_with_fin_and_exits_0() {
    signal_closes_connections_and_exits_0("sigterm", "TERM");
}

#[test]
fn sigint_closes_connections_with_fin_and_exits_0() {
    signal_closes_connections_and_exits_0("sigint", "INT");
}

/// The stack must fail with a sentence pointing at scripts/setup.sh, not a panic.
fn assert_fails_with_setup_hint(mut stack: Stack, situation: &str) {
    let status = stack.wait_exit(Duration::from_secs(5));
    let stderr = stack.stderr();
    let status = status
        .unwrap_or_else(|| panic!("{situation}: the stack did not exit within 5 s:\n{stderr}"));
    assert!(
        !status.success(),
        "{situation}: the stack exited 0:\n{stderr}"
    );
    assert!(
        stderr.contains("scripts/setup.sh"),
        "{situation}: stderr does not mention scripts/setup.sh:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "{situation}: the stack panicked:\n{stderr}"
    );
}

#[test]
fn missing_tun_device_fails_with_a_setup_hint() {
    if !require_root("missing_tun_device_fails_with_a_setup_hint") {
        return;
    }
    let netns = Netns::new("missing-tun");
    let stack = Stack::spawn(&netns, &["--tun", "doesnotexist"]);
    assert_fails_with_setup_hint(stack, "--tun doesnotexist");
    // As root, opening a TUN by a new name would create it: the stack must not.
    let output = netns.run(
        Duration::from_secs(5),
        "ip",
        &["link", "show", "doesnotexist"],
    );
    assert!(
        !output.status.success(),
        "the stack created a device 'doesnotexist':\n{}",
        describe(&output)
    );
}

#[test]
fn tun_permission_denied_fails_with_a_setup_hint() {
    let test = "tun-permission";
    if !require_root(test) {
        return;
    }
    let netns = Netns::new(test);
    // A copy `nobody` can execute, wherever the repository lives.
    let dir = TempDir::new(test);
    let binary = dir.file("tunstack");
    std::fs::copy(Stack::binary(), &binary).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = binary.to_str().unwrap();
    let args = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        binary,
        "echo",
    ];
    let stack = Stack::spawn_command(netns.command("setpriv", &args));
    assert_fails_with_setup_hint(stack, "running as nobody (uid 65534)");
}
