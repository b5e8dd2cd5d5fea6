//! SIGTERM in the middle of transfers that cannot finish in the grace period: the stack
//! must not leave a client hanging. `socat -u` pushes data it never reads back (the echo
//! stops reading once its replies back up), and `nc </dev/zero` keeps sending after the
//! stack's FIN. Both must see the connection end (RST) once the stack exits, and the host
//! socket must be gone. In a private namespace; needs root.

mod common;

use common::{ECHO_PORT, Netns, STACK_V4, describe, poll_until, start_stack};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Host-side TCP sockets towards the stack's echo port, as `ss` lists them.
fn host_sockets(netns: &Netns) -> String {
    let filter = ["-H", "-t", "-n", "dst", STACK_V4];
    let output = netns.run(Duration::from_secs(5), "ss", &filter);
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Waits (bounded) until the host socket has at least `bytes` sent and acknowledged, i.e.
/// the transfer is really under way, by reading `ss -ti`'s `bytes_acked`.
fn wait_for_transfer(netns: &Netns, bytes: u64) {
    let under_way = poll_until(Duration::from_secs(20), || {
        let output = netns.run(Duration::from_secs(5), "ss", &["-H", "-t", "-i", "-n"]);
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|word| word.strip_prefix("bytes_acked:"))
            .filter_map(|n| n.parse::<u64>().ok())
            .any(|acked| acked >= bytes)
    });
    assert!(under_way, "the transfer never got under way");
}

/// SIGTERMs the stack while `client` is mid-transfer; the client must end by itself.
fn sigterm_ends_the_transfer(test: &str, program: &str, args: &[&str]) {
    let Some((netns, mut stack)) = start_stack(test, &[]) else {
        return;
    };
    let mut client: Child = netns
        .command_bounded(Duration::from_secs(60), program, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    wait_for_transfer(&netns, 1 << 20);

    let signalled = Instant::now();
    stack.signal("TERM");
    let status = stack.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the stack did not exit 0 after SIGTERM ({status:?}):\n{}",
        stack.stderr()
    );
    let ended = poll_until(Duration::from_secs(10), || {
        client.try_wait().ok().flatten().is_some()
    });
    let elapsed = signalled.elapsed();
    if !ended {
        let _ = client.kill();
    }
    let output = client.wait_with_output().unwrap();
    assert!(
        ended,
        "{program} still runs {elapsed:?} after the stack exited; host sockets:\n{}\nstack:\n{}",
        host_sockets(&netns),
        stack.stderr()
    );
    assert!(
        stack.stderr().contains("not closed in time: reset")
            || stack.stderr().contains("unread data: reset"),
        "the stack did not say it reset the connection:\n{}",
        stack.stderr()
    );
    let left = host_sockets(&netns);
    assert!(
        left.is_empty(),
        "a host socket survives the stack: {left}\n{program}: {}",
        describe(&output)
    );
    eprintln!("{program} ended {elapsed:?} after SIGTERM");
}

#[test]
fn sigterm_resets_a_socat_push_the_echo_cannot_return() {
    let target = format!("TCP:{STACK_V4}:{ECHO_PORT}");
    sigterm_ends_the_transfer(
        "shutdown-socat",
        "socat",
        &["-u", "OPEN:/dev/zero", &target],
    );
}

#[test]
fn sigterm_resets_an_nc_that_keeps_sending_after_the_fin() {
    let Some(nc) = common::find_program("nc") else {
        panic!("nc is not installed");
    };
    let script = format!("exec {} {STACK_V4} {ECHO_PORT} </dev/zero", nc.display());
    sigterm_ends_the_transfer("shutdown-nc", "sh", &["-c", &script]);
}
