//! Protocol tests on the in-memory link: handshake, echo, backlog, FIN/RST, UDP, reaping.

mod sim;

use sim::{CLIENT4, Pair, SERVER4, addr, client_config};
use tunstack::app::EchoServer;
use tunstack::config::MIN_TCP_BUFFER;
use tunstack::smoltcp::time::Duration;
use tunstack::stats::DropReason;
use tunstack::{Error, StackConfig, TcpListener, TcpStream, UdpSocket};

/// Writes everything in `data` and reads the echo back, driving the pair.
fn echo_through(pair: &mut Pair, stream: &TcpStream, data: &[u8]) -> Vec<u8> {
    let mut sent = 0;
    let mut received = Vec::new();
    let mut buf = vec![0; 4096];
    pair.run_until("echo completes", 200_000, |_| {
        if sent < data.len()
            && let Ok(n) = stream.write(&data[sent..])
        {
            sent += n;
        }
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
        received.len() >= data.len()
    });
    received
}

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn handshake_and_echo_over_ipv4_and_ipv6() {
    let mut pair = Pair::with_echo(16);
    let mut streams = Vec::new();
    for server in [SERVER4, "fd69::2"] {
        let stream = TcpStream::connect(&pair.client.stack, addr(server, 7)).unwrap();
        pair.run_until("connected", 1000, |_| stream.is_connected());
        let data = pseudo_random(300_000, 7);
        let echoed = echo_through(&mut pair, &stream, &data);
        assert_eq!(echoed.len(), data.len());
        assert!(echoed == data, "echo over {server} differs");
        streams.push(stream);
    }
    assert_eq!(pair.echo.as_ref().unwrap().connections(), 2);
    let stats = pair.server.stack.stats();
    assert_eq!(
        stats.tcp_retransmits, 0,
        "nothing was lost, nothing to send twice: {stats}"
    );
}

#[test]
fn each_client_gets_its_own_data_socket_sharing_the_listener_port() {
    let mut pair = Pair::with_echo(64);
    let streams: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&pair.client.stack, addr(SERVER4, 7)).unwrap())
        .collect();
    pair.run_until("all established on the server", 2000, |p| {
        let table = p.server.stack.socket_table();
        table.iter().filter(|r| r.state == "ESTABLISHED").count() == 20
    });
    let table = pair.server.stack.socket_table();
    let data_sockets: Vec<_> = table.iter().filter(|r| r.state == "ESTABLISHED").collect();
    assert_eq!(data_sockets.len(), 20);
    assert!(
        data_sockets.iter().all(|r| r.local == "192.168.69.2:7"),
        "{table:?}"
    );
    let mut remotes: Vec<_> = data_sockets.iter().map(|r| r.remote.clone()).collect();
    remotes.sort();
    remotes.dedup();
    assert_eq!(remotes.len(), 20, "socket pairs must be distinct");
    for (i, stream) in streams.iter().enumerate() {
        let data = pseudo_random(5000, i as u32 + 1);
        assert!(
            echo_through(&mut pair, stream, &data) == data,
            "client {i} got other bytes"
        );
    }
}

#[test]
fn full_backlog_drops_syns_and_the_client_gets_in_once_accepted() {
    let mut pair = Pair::new(StackConfig::default(), client_config());
    let listener = TcpListener::bind(&pair.server.stack, addr("0.0.0.0", 80), 1).unwrap();
    let first = TcpStream::connect(&pair.client.stack, addr(SERVER4, 80)).unwrap();
    pair.run_until("first connected", 1000, |_| first.is_connected());
    let second = TcpStream::connect(&pair.client.stack, addr(SERVER4, 80)).unwrap();
    pair.run_until("second SYN dropped", 1000, |p| {
        p.server.stack.stats().drops_for(DropReason::BacklogFull) > 0
    });
    pair.settle(Duration::from_millis(500));
    assert!(
        !second.is_connected(),
        "backlog 1 admitted a second connection"
    );
    assert_eq!(
        pair.server.stack.stats().rst_sent,
        0,
        "a full backlog must not RST"
    );
    let (accepted, _) = listener.accept().unwrap();
    assert_eq!(accepted.peer_addr(), first.local_addr());
    // The client retransmits its SYN; now there is room.
    let mut accepted2 = None;
    pair.run_until("second accepted", 10_000, |_| {
        accepted2 = listener.accept().ok();
        accepted2.is_some()
    });
    assert_eq!(accepted2.unwrap().0.peer_addr(), second.local_addr());
    assert!(second.is_connected());
}

#[test]
fn closed_port_answers_rst_and_connect_reports_refused() {
    let mut pair = Pair::new(StackConfig::default(), client_config());
    let stream = TcpStream::connect(&pair.client.stack, addr(SERVER4, 9)).unwrap();
    pair.run_until("refused", 1000, |_| stream.take_error().is_some());
    assert!(matches!(
        stream.take_error(),
        Some(Error::ConnectionRefused)
    ));
    assert!(matches!(
        stream.read(&mut [0; 8]),
        Err(Error::ConnectionRefused)
    ));
    assert_eq!(pair.server.stack.stats().rst_sent, 1);
}

#[test]
fn fin_from_client_closes_both_sides_and_everything_is_reaped() {
    let mut pair = Pair::with_echo(16);
    let baseline = pair.server.stack.socket_count();
    let stream = TcpStream::connect(&pair.client.stack, addr(SERVER4, 7)).unwrap();
    pair.run_until("connected", 1000, |_| stream.is_connected());
    assert_eq!(echo_through(&mut pair, &stream, b"bye"), b"bye");
    stream.shutdown_write();
    let mut buf = [0u8; 16];
    pair.run_until("server's FIN reaches the client", 1000, |_| {
        matches!(stream.read(&mut buf), Ok(0))
    });
    drop(stream);
    pair.settle(Duration::from_secs(30)); // past TIME-WAIT
    assert_eq!(
        pair.server.stack.socket_count(),
        baseline,
        "server leaked a socket"
    );
    assert_eq!(
        pair.client.stack.socket_count(),
        0,
        "client leaked a socket"
    );
    assert_eq!(pair.server.stack.stats().tcp_reaped, 1);
}

#[test]
fn thousands_of_connections_leave_nothing_behind() {
    let mut pair = Pair::with_echo(64);
    let baseline = pair.server.stack.socket_count();
    for round in 0..20 {
        let streams: Vec<TcpStream> = (0..100)
            .map(|_| TcpStream::connect(&pair.client.stack, addr(SERVER4, 7)).unwrap())
            .collect();
        pair.run_until("batch connected", 5000, |_| {
            streams.iter().all(|s| s.is_connected())
        });
        for s in &streams {
            s.write(&[round as u8]).unwrap();
        }
        let mut buf = [0u8; 4];
        let mut got = vec![false; streams.len()];
        pair.run_until("batch echoed", 5000, |_| {
            for (s, g) in streams.iter().zip(got.iter_mut()) {
                if let Ok(1) = s.read(&mut buf) {
                    assert_eq!(buf[0], round as u8);
                    *g = true;
                }
            }
            got.iter().all(|g| *g)
        });
        drop(streams);
        pair.settle(Duration::from_secs(1));
    }
    pair.settle(Duration::from_secs(30));
    assert_eq!(pair.server.stack.socket_count(), baseline);
    assert_eq!(pair.client.stack.socket_count(), 0);
    let stats = pair.server.stack.stats();
    assert_eq!(stats.tcp_established, 2000);
    assert_eq!(
        stats.tcp_reaped,
        stats.tcp_established + stats.drops_for(DropReason::SynQueueEvicted)
    );
}

#[test]
fn udp_send_to_and_recv_from_between_stacks() {
    let mut pair = Pair::with_echo(4);
    let client = UdpSocket::bind(&pair.client.stack, addr(CLIENT4, 0)).unwrap();
    let local = client.local_addr();
    assert!(local.port() >= 49152, "ephemeral port {local}");
    for i in 0..10u8 {
        client.send_to(&[i; 100], addr(SERVER4, 7)).unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2000];
    pair.run_until("10 datagrams echoed", 1000, |_| {
        while let Ok((n, from)) = client.recv_from(&mut buf) {
            assert_eq!(from, addr(SERVER4, 7));
            got.push(buf[..n].to_vec());
        }
        got.len() == 10
    });
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d, &vec![i as u8; 100]);
    }
}

#[test]
fn udp_to_a_closed_port_is_not_delivered_anywhere() {
    let mut pair = Pair::with_echo(4);
    let client = UdpSocket::bind(&pair.client.stack, addr(CLIENT4, 0)).unwrap();
    client.send_to(b"x", addr(SERVER4, 9)).unwrap();
    pair.settle(Duration::from_secs(1));
    assert!(matches!(
        client.recv_from(&mut [0; 8]),
        Err(Error::WouldBlock)
    ));
    assert_eq!(
        pair.server.stack.stats().tx_packets,
        1,
        "one ICMP port unreachable"
    );
}

#[test]
fn listener_and_udp_endpoints_cannot_be_bound_twice() {
    let pair = Pair::new(StackConfig::default(), client_config());
    let _a = TcpListener::bind(&pair.server.stack, addr("0.0.0.0", 80), 4).unwrap();
    assert!(matches!(
        TcpListener::bind(&pair.server.stack, addr(SERVER4, 80), 4),
        Err(Error::AddrInUse(_))
    ));
    let _u = UdpSocket::bind(&pair.server.stack, addr(SERVER4, 53)).unwrap();
    assert!(matches!(
        UdpSocket::bind(&pair.server.stack, addr("0.0.0.0", 53)),
        Err(Error::AddrInUse(_))
    ));
    assert!(matches!(
        TcpListener::bind(&pair.server.stack, addr("10.0.0.1", 81), 4),
        Err(Error::Unaddressable(_))
    ));
}

#[test]
fn a_client_that_never_reads_gets_a_closed_window_and_memory_stays_bounded() {
    let mut pair = Pair::with_echo(4);
    let stream = TcpStream::connect(&pair.client.stack, addr(SERVER4, 7)).unwrap();
    pair.run_until("connected", 1000, |_| stream.is_connected());
    let chunk = vec![0x5a; 16 * 1024];
    let mut written = 0usize;
    let mut last_progress = pair.now;
    // Keep writing, never read: once both directions' buffers are full, nothing moves.
    // (Stop after 5 quiet virtual seconds: two smoltcp peers that both advertise a zero
    // window end up probing each other out of window and abort after the 60 s user
    // timeout, which a Linux peer does not provoke.)
    pair.run_until("writes stall", 100_000, |p| {
        match stream.write(&chunk) {
            Ok(n) => {
                written += n;
                last_progress = p.now;
            }
            Err(Error::WouldBlock) => {}
            Err(err) => panic!("{err} at {}", p.now),
        }
        p.now > last_progress + Duration::from_secs(5)
    });
    let buffer = StackConfig::default().tcp_buffer;
    let table = pair.server.stack.socket_table();
    let row = table
        .iter()
        .find(|r| r.state == "ESTABLISHED")
        .expect("server data socket");
    assert_eq!(
        row.recv_queue, buffer,
        "server receive buffer should be full: {row:?}"
    );
    assert_eq!(
        row.send_queue, buffer,
        "server send buffer should be full: {row:?}"
    );
    // What the client got rid of fits in the buffers along the way, no more: echo keeps
    // no private copy, so the stack holds at most its sockets' buffers.
    assert!(
        written <= 4 * buffer,
        "wrote {written} bytes into a stalled connection"
    );
    // Reading resumes the flow.
    let mut buf = vec![0u8; 65536];
    let mut echoed = 0;
    pair.run_until("echo resumes", 100_000, |_| {
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            echoed += n;
        }
        echoed >= written
    });
}

#[test]
fn buffers_shrink_as_more_connections_share_the_tcp_memory() {
    let client = StackConfig {
        tcp_buffer: 1 << 20,
        tcp_memory: 16 << 20,
        ..client_config()
    };
    let mut pair = Pair::new(StackConfig::default(), client);
    let echo = EchoServer::bind(&pair.server.stack, addr("::", 7), 8).unwrap();
    pair.echo = Some(echo);
    let client_stack = pair.client.stack.clone();
    let connect = || TcpStream::connect(&client_stack, addr(SERVER4, 7)).unwrap();
    let first = connect();
    pair.run_until("connected", 1000, |_| first.is_connected());
    assert_eq!(
        first.send_space(),
        1 << 20,
        "the first connection gets the whole --tcp-buffer"
    );

    // 16 MiB / 2 directions / sockets open: 1 MiB up to 8 sockets, then shares.
    let mut held = Vec::new();
    for _ in 0..99 {
        held.push(connect());
    }
    let hundred_and_first = connect();
    pair.run_until("connected", 1000, |_| hundred_and_first.is_connected());
    assert_eq!(hundred_and_first.send_space(), (16 << 20) / 2 / 101);
    for _ in 0..3000 {
        held.push(connect());
    }
    let last = connect();
    pair.run_until("connected", 100_000, |_| last.is_connected());
    assert_eq!(last.send_space(), MIN_TCP_BUFFER, "never below the floor");
    // Each still echoes with what it got.
    assert_eq!(
        echo_through(&mut pair, &last, &[7; 10_000]),
        vec![7; 10_000]
    );
}

#[test]
fn an_idle_connection_lives_on_and_a_vanished_peer_is_reaped_at_the_timeout() {
    let mut pair = Pair::with_echo(4);
    let baseline = pair.server.stack.socket_count();
    let idle = TcpStream::connect(&pair.client.stack, addr(SERVER4, 7)).unwrap();
    pair.run_until("connected", 1000, |_| idle.is_connected());
    assert_eq!(echo_through(&mut pair, &idle, b"hello"), b"hello");
    pair.settle(Duration::from_secs(1)); // the last ACK goes out: nothing outstanding
    pair.now += Duration::from_secs(300); // five quiet minutes, far past the timeout
    pair.settle(Duration::from_secs(1));
    assert!(idle.is_connected(), "an idle connection timed out");
    assert_eq!(echo_through(&mut pair, &idle, b"still here"), b"still here");
    pair.settle(Duration::from_secs(1));

    let doomed = TcpStream::connect(&pair.client.stack, addr(SERVER4, 7)).unwrap();
    pair.run_until("connected", 1000, |_| doomed.is_connected());
    doomed.write(&[1; 1000]).unwrap();
    let doomed_local = tunstack::flow::endpoint(doomed.socket_pair().local);
    // Until the server's echo is on its way (queued, not yet acknowledged)...
    pair.run_until("echo in flight", 1000, |p| {
        let table = p.server.stack.socket_table();
        table
            .iter()
            .any(|r| r.remote == doomed_local && r.send_queue > 0)
    });
    let vanished_at = pair.now;
    // The client vanishes: from now on nothing crosses the link either way.
    pair.run_until("server reaps the vanished peer", 100_000, |p| {
        while p.client.link.recv_raw().is_some() {}
        while p.server.link.recv_raw().is_some() {}
        p.server.stack.socket_count() == baseline + 1
    });
    let took = pair.now - vanished_at;
    let timeout = StackConfig::default().tcp_timeout;
    assert!(
        took >= timeout && took <= timeout + Duration::from_secs(2),
        "reaped after {took}"
    );
    assert!(
        idle.is_connected(),
        "the idle connection must not be touched: {:?} {:?}",
        idle.state(),
        idle.take_error()
    );
}

#[test]
fn with_a_one_socket_syn_queue_simultaneous_clients_connect_by_cookie_and_echo_intact() {
    let server = StackConfig {
        syn_backlog: 1,
        ..StackConfig::default()
    };
    let mut pair = Pair::new(server, client_config());
    pair.echo = Some(EchoServer::bind(&pair.server.stack, addr("::", 7), 64).unwrap());
    let baseline = pair.server.stack.socket_count();
    let clients = 24;
    let streams: Vec<TcpStream> = (0..clients)
        .map(|i| {
            let server = if i % 2 == 0 { SERVER4 } else { "fd69::2" };
            TcpStream::connect(&pair.client.stack, addr(server, 7)).unwrap()
        })
        .collect();
    pair.run_until("all connected", 5000, |_| {
        streams.iter().all(|s| s.is_connected())
    });
    let data: Vec<Vec<u8>> = (0..clients)
        .map(|i| pseudo_random(100_000, i as u32 + 1))
        .collect();
    let mut sent = vec![0; clients];
    let mut echoed = vec![Vec::new(); clients];
    let mut buf = vec![0; 8192];
    pair.run_until("every echo complete", 200_000, |_| {
        for (i, stream) in streams.iter().enumerate() {
            if sent[i] < data[i].len()
                && let Ok(n) = stream.write(&data[i][sent[i]..])
            {
                sent[i] += n;
            }
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                echoed[i].extend_from_slice(&buf[..n]);
            }
        }
        echoed.iter().all(|e| e.len() >= 100_000)
    });
    for (i, (echo, data)) in echoed.iter().zip(&data).enumerate() {
        assert!(echo == data, "client {i}: echo differs from what it sent");
    }
    drop(streams);
    pair.settle(Duration::from_secs(30));
    assert_eq!(
        pair.server.stack.socket_count(),
        baseline,
        "sockets left behind"
    );
    let stats = pair.server.stack.stats();
    assert_eq!(stats.syn_cookies_sent, clients as u64 - 1, "{stats}");
    assert_eq!(stats.syn_cookies_accepted, clients as u64 - 1, "{stats}");
    assert_eq!(stats.tcp_established, clients as u64, "{stats}");
    assert_eq!(stats.tcp_reaped, clients as u64, "{stats}");
    assert_eq!(stats.total_drops(), 0, "{stats}");
}

/// A graceful shutdown whose FIN cannot leave (the client reads none of the echo, so the
/// reply sits behind a closed window) ends with RST from `abort_all`, and the client's
/// stream reports the reset instead of waiting for a stack that is gone.
#[test]
fn shutdown_resets_what_the_grace_period_could_not_close() {
    let mut pair = Pair::with_echo(8);
    let client = TcpStream::connect(&pair.client.stack, addr(SERVER4, 7)).unwrap();
    pair.run_until("connected", 1000, |_| client.is_connected());
    // More than the client's 1 MiB receive buffer holds, less than it and the echo's
    // 1 MiB send buffer together: the echo reads it all, half a MiB of its reply waits.
    let data = pseudo_random(3 << 19, 7);
    let mut sent = 0;
    pair.run_until("all sent", 100_000, |_| {
        if let Ok(n) = client.write(&data[sent..]) {
            sent += n;
        }
        sent == data.len()
    });
    pair.settle(Duration::from_secs(1));
    pair.server.stack.close_all();
    pair.settle(Duration::from_secs(2));
    assert!(
        !pair.server.stack.is_quiet(),
        "the FIN should still wait behind unread echo data"
    );
    assert_eq!(pair.server.stack.abort_all(), 1);
    pair.run_until("the client sees the reset", 1000, |_| {
        matches!(client.take_error(), Some(Error::ConnectionReset))
    });
    assert!(pair.server.stack.is_quiet());
}
