//! Bursts of datagrams bigger than the TUN's MTU, from real tools: `ping -l` preloads
//! fragmented pings, and a UDP client sends big datagrams back to back. Every reply must
//! come back whole (in a private namespace; needs root). The in-memory twin with exact
//! packets is tests/fragments.rs.

mod common;

use common::{STACK_V4, STACK_V6, describe, start_stack};
use std::time::Duration;

/// `ping -c 5 -l 5 -s 3000`: five fragmented requests at once, five replies.
fn preloaded_pings(family: &str, address: &str, tag: &str) {
    let Some((netns, stack)) = start_stack(tag, &[]) else {
        return;
    };
    let args = [
        family, "-n", "-c", "5", "-l", "5", "-s", "3000", "-w", "10", address,
    ];
    let output = netns.run(Duration::from_secs(20), "ping", &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("5 packets transmitted, 5 received"),
        "ping {} lost replies:\n{}",
        args.join(" "),
        describe(&output)
    );
    stack.assert_no_panic();
}

#[test]
fn preloaded_fragmented_pings_are_all_answered_v4() {
    preloaded_pings("-4", STACK_V4, "frag-ping4");
}

#[test]
fn preloaded_fragmented_pings_are_all_answered_v6() {
    preloaded_pings("-6", STACK_V6, "frag-ping6");
}

/// Two 8,000-byte datagrams sent back to back to the UDP echo: both come back whole.
#[test]
fn two_big_udp_datagrams_in_a_row_are_both_echoed() {
    let Some((netns, stack)) = start_stack("frag-udp", &[]) else {
        return;
    };
    for address in [STACK_V4, STACK_V6] {
        let script = format!(
            "import socket, sys\n\
             family = socket.AF_INET6 if ':' in '{address}' else socket.AF_INET\n\
             s = socket.socket(family, socket.SOCK_DGRAM)\n\
             s.settimeout(5)\n\
             sent = [bytes([i]) * 8000 for i in (1, 2)]\n\
             for d in sent: s.sendto(d, ('{address}', 7))\n\
             got = [s.recv(65535) for _ in sent]\n\
             sys.exit(0 if got == sent else 1)\n"
        );
        let output = netns.run(Duration::from_secs(20), "python3", &["-c", &script]);
        assert!(
            output.status.success(),
            "8,000-byte UDP echoes over {address} did not both come back:\n{}",
            describe(&output)
        );
    }
    stack.assert_no_panic();
}
