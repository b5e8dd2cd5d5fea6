//! The client half on the in-memory link: connect() with ephemeral ports that never reuse a
//! live or TIME-WAIT socket pair, exhaustion as an error, and one stack serving listening,
//! accepted and connected sockets at once.

mod sim;

use sim::{Pair, SERVER4, addr, client_config};
use std::collections::HashSet;
use tunstack::smoltcp::time::Duration;
use tunstack::{Error, StackConfig, TcpListener, TcpStream};

fn narrow_ports(first: u16, last: u16) -> StackConfig {
    StackConfig {
        ephemeral_ports: first..=last,
        ..client_config()
    }
}

/// Pairs the client currently holds in any state (TIME-WAIT included), as "local|remote".
fn live_pairs(pair: &Pair) -> HashSet<String> {
    pair.client
        .stack
        .socket_table()
        .into_iter()
        .map(|row| format!("{}|{}", row.local, row.remote))
        .collect()
}

#[test]
fn five_thousand_connect_close_cycles_never_reuse_a_pair_in_time_wait() {
    // 256 ports and a 10 s TIME-WAIT: the allocator must wait out TIME-WAIT, never reuse.
    let mut pair = Pair::new(StackConfig::default(), narrow_ports(50000, 50255));
    pair.echo =
        Some(tunstack::app::EchoServer::bind(&pair.server.stack, addr("::", 7), 64).unwrap());
    let mut exhausted = 0;
    let mut in_time_wait_max = 0;
    for cycle in 0..5000u32 {
        let (stream, before) = loop {
            let before = live_pairs(&pair);
            match TcpStream::connect(&pair.client.stack, addr(SERVER4, 7)) {
                Ok(stream) => break (stream, before),
                Err(Error::EphemeralPortsExhausted(_)) => {
                    exhausted += 1;
                    pair.settle(Duration::from_millis(500));
                }
                Err(err) => panic!("cycle {cycle}: {err}"),
            }
        };
        let key = format!(
            "{}|{}",
            tunstack::flow::endpoint(stream.socket_pair().local),
            tunstack::flow::endpoint(stream.socket_pair().remote)
        );
        assert!(
            !before.contains(&key),
            "cycle {cycle}: pair {key} reused while still live"
        );
        pair.run_until("connected", 1000, |_| stream.is_connected());
        stream.write(b"x").unwrap();
        let mut buf = [0u8; 1];
        pair.run_until("echoed", 1000, |_| matches!(stream.read(&mut buf), Ok(1)));
        drop(stream); // we close first: our side goes through TIME-WAIT
        in_time_wait_max = in_time_wait_max.max(before.len());
    }
    assert!(
        exhausted > 0,
        "the narrow range should have run out at least once"
    );
    assert!(
        in_time_wait_max > 200,
        "TIME-WAIT pairs should pile up ({in_time_wait_max})"
    );
    pair.settle(Duration::from_secs(30));
    assert_eq!(pair.client.stack.socket_count(), 0, "client leaked sockets");
    assert_eq!(
        pair.server.stack.socket_count(),
        2,
        "server: listener + udp only"
    );
}

#[test]
fn port_exhaustion_is_an_error_not_a_hang() {
    let mut pair = Pair::new(StackConfig::default(), narrow_ports(60000, 60003));
    let _listener = TcpListener::bind(&pair.server.stack, addr("0.0.0.0", 80), 16).unwrap();
    let streams: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&pair.client.stack, addr(SERVER4, 80)).unwrap())
        .collect();
    pair.run_until("4 connected", 1000, |_| {
        streams.iter().all(|s| s.is_connected())
    });
    let err = TcpStream::connect(&pair.client.stack, addr(SERVER4, 80)).err();
    assert!(
        matches!(err, Some(Error::EphemeralPortsExhausted(_))),
        "{err:?}"
    );
    // Another server port is another socket pair: the same local ports serve again.
    let _other = TcpListener::bind(&pair.server.stack, addr("0.0.0.0", 81), 16).unwrap();
    let fifth = TcpStream::connect(&pair.client.stack, addr(SERVER4, 81)).unwrap();
    assert!(fifth.local_addr().port() >= 60000 && fifth.local_addr().port() <= 60003);
}

#[test]
fn connect_times_out_when_nobody_answers() {
    let mut pair = Pair::new(StackConfig::default(), client_config());
    // 192.168.69.3 is on the link but nobody is there: SYNs go unanswered.
    let stream = TcpStream::connect(&pair.client.stack, addr("192.168.69.3", 80)).unwrap();
    stream.set_timeout(Duration::from_secs(3));
    pair.run_until("timed out", 10_000, |p| {
        while p.server.link.recv_raw().is_some() {} // the server end swallows everything
        stream.take_error().is_some()
    });
    assert!(matches!(stream.take_error(), Some(Error::TimedOut)));
}

#[test]
fn one_stack_serves_listening_accepted_and_connected_sockets_together() {
    // Each side runs a listener and connects to the other: one flow table holds all three kinds.
    let mut pair = Pair::new(StackConfig::default(), client_config());
    let server_listener = TcpListener::bind(&pair.server.stack, addr("0.0.0.0", 80), 8).unwrap();
    let client_listener = TcpListener::bind(&pair.client.stack, addr("0.0.0.0", 8080), 8).unwrap();
    let outgoing = TcpStream::connect(&pair.server.stack, addr("192.168.69.1", 8080)).unwrap();
    let incoming = TcpStream::connect(&pair.client.stack, addr(SERVER4, 80)).unwrap();
    let mut accepted = None;
    pair.run_until("accepted on the server", 1000, |_| {
        accepted = accepted.take().or_else(|| server_listener.accept().ok());
        accepted.is_some() && outgoing.is_connected()
    });
    let (accepted, _) = accepted.unwrap();
    let table = pair.server.stack.socket_table();
    let states: Vec<(&str, &str, &str)> = table
        .iter()
        .map(|r| (r.state.as_str(), r.local.as_str(), r.remote.as_str()))
        .collect();
    assert!(states.contains(&("LISTEN", "*:80", "*:*")), "{states:?}");
    assert!(
        states.iter().any(|(s, l, r)| *s == "ESTABLISHED"
            && *l == "192.168.69.2:80"
            && r.starts_with("192.168.69.1:")),
        "accepted socket missing: {states:?}"
    );
    assert!(
        states.iter().any(|(s, l, r)| *s == "ESTABLISHED"
            && l.starts_with("192.168.69.2:")
            && *r == "192.168.69.1:8080"),
        "connected socket missing: {states:?}"
    );
    // Data flows on both connections through the same stack.
    outgoing.write(b"out").unwrap();
    incoming.write(b"in").unwrap();
    let mut got = None;
    pair.run_until("client accepted", 1000, |_| {
        got = got.take().or_else(|| client_listener.accept().ok());
        got.is_some()
    });
    let (client_side, _) = got.unwrap();
    let mut buf = [0u8; 8];
    pair.run_until("bytes both ways", 1000, |_| {
        matches!(client_side.read(&mut buf), Ok(3)) || buf.starts_with(b"out")
    });
    assert_eq!(&buf[..3], b"out");
    pair.run_until("bytes to the accepted socket", 1000, |_| {
        matches!(accepted.read(&mut buf), Ok(2))
    });
    assert_eq!(&buf[..2], b"in");
}

/// What `tunstack connect` wrote to its output, shared with the test.
#[derive(Clone, Default)]
struct Output(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl std::io::Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `tunstack connect` ends its session when the peer's FIN has come and its own input has
/// ended — but its exit must wait until the peer has acknowledged everything it sent: the
/// stack dies with the process, and what is still in flight would be lost while the exit
/// status says 0. Here the peer closes first and reads nothing until later.
#[test]
fn the_connect_client_exits_only_once_its_data_is_acknowledged() {
    let server_config = StackConfig {
        tcp_buffer: 8 * 1024,
        ..StackConfig::default()
    };
    let mut pair = Pair::new(server_config, client_config());
    let listener = TcpListener::bind(&pair.server.stack, addr("::", 9000), 4).unwrap();
    let output = Output::default();
    let mut client = tunstack::app::ConnectClient::tcp(
        &pair.client.stack,
        addr(SERVER4, 9000),
        Box::new(output.clone()),
    )
    .unwrap();
    let sent: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    client.push_input(&sent);
    client.push_input(&[]);
    let mut accepted = None;
    pair.run_until("accepted", 1000, |_| {
        client.pump();
        accepted = listener.accept().ok();
        accepted.is_some()
    });
    let server = accepted.unwrap().0;
    // The peer closes its side without reading: its 8 KiB window fills.
    server.shutdown_write();
    for _ in 0..200 {
        pair.step();
        client.pump();
        pair.advance(Duration::from_millis(200));
    }
    assert_eq!(
        client.exit_code(),
        None,
        "the client finished while 56 KiB it sent were still unacknowledged"
    );
    // Now the peer reads everything; the client's FIN is acknowledged and it exits 0.
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    pair.run_until("the client finished", 10_000, |_| {
        client.pump();
        while let Ok(n @ 1..) = server.read(&mut buf) {
            received.extend_from_slice(&buf[..n]);
        }
        client.exit_code().is_some()
    });
    assert_eq!(client.exit_code(), Some(0));
    assert_eq!(received.len(), sent.len());
    assert!(
        received == sent,
        "the bytes the peer read differ from those sent"
    );
}

/// `sendto` towards a host on none of the stack's subnets (and no route) fails at once
/// with "network unreachable", as on Linux, instead of vanishing in smoltcp; so does
/// `tunstack connect -u`, which exits 1 instead of waiting out `-w`.
#[test]
fn udp_send_to_a_host_off_every_subnet_is_network_unreachable() {
    let pair = Pair::new(StackConfig::default(), client_config());
    let socket = tunstack::UdpSocket::bind(&pair.client.stack, addr("0.0.0.0", 0)).unwrap();
    let result = socket.send_to(b"hello", addr("10.1.1.1", 53));
    assert!(
        matches!(result, Err(Error::NetworkUnreachable(_))),
        "{result:?}"
    );
    assert!(socket.send_to(b"hello", addr(SERVER4, 53)).is_ok());
}
