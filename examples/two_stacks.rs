//! Two stacks on an in-memory link, no root needed: one serves a line-reversing app on TCP
//! port 8000 and UDP port 5300, the other connects to it. Shows the loop every app on
//! tunstack has: poll the stack, take the ready sockets, call read/write/accept until
//! WouldBlock, sleep until `poll_delay` (here: jump a virtual clock).
//!
//! Run: cargo run --example two_stacks

use std::collections::HashMap;
use tunstack::phy::MemoryLink;
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::{Error, SocketId, Stack, StackConfig, TcpListener, TcpStream, UdpSocket};

fn main() -> Result<(), Error> {
    let (mut server_link, mut client_link) = MemoryLink::pair(1500);
    let mut now = Instant::ZERO;
    // The server answers as 192.168.69.2 (the default); the client is 192.168.69.1.
    let server = Stack::new(StackConfig::default(), &mut server_link, now);
    let client_config = StackConfig {
        addresses: vec!["192.168.69.1/24".parse().expect("cidr")],
        ..StackConfig::default()
    };
    let client = Stack::new(client_config, &mut client_link, now);

    let listener = TcpListener::bind(&server, "0.0.0.0:8000".parse().expect("addr"), 16)?;
    let udp_server = UdpSocket::bind(&server, "0.0.0.0:5300".parse().expect("addr"))?;
    let mut accepted: HashMap<SocketId, TcpStream> = HashMap::new();

    let stream = TcpStream::connect(&client, "192.168.69.2:8000".parse().expect("addr"))?;
    let udp_client = UdpSocket::bind(&client, "0.0.0.0:0".parse().expect("addr"))?;
    udp_client.send_to(b"olleh", "192.168.69.2:5300".parse().expect("addr"))?;
    let mut sent = false;
    let mut reply = Vec::new();
    let mut ready = Vec::new();
    let mut buf = [0u8; 1024];

    for _ in 0..10_000 {
        server.poll(now, &mut server_link);
        client.poll(now, &mut client_link);

        // Server side: serve whatever became ready.
        ready.clear();
        server.take_ready(&mut ready);
        for id in &ready {
            if *id == listener.id() {
                while let Ok((conn, peer)) = listener.accept() {
                    println!("server: accepted {} (from {peer})", conn.socket_pair());
                    accepted.insert(conn.id(), conn);
                }
            } else if *id == udp_server.id() {
                while let Ok((n, from)) = udp_server.recv_from(&mut buf) {
                    let reversed: Vec<u8> = buf[..n].iter().rev().copied().collect();
                    udp_server.send_to(&reversed, from)?;
                }
            } else if let Some(conn) = accepted.get(id) {
                // Read only what the send buffer can take back (`write` may take less
                // than it is given: see docs/writing-apps.md, "Backpressure").
                let room = conn.send_space().min(buf.len());
                while let Ok(n @ 1..) = conn.read(&mut buf[..room]) {
                    let reversed: Vec<u8> = buf[..n].iter().rev().copied().collect();
                    let written = conn.write(&reversed)?;
                    debug_assert_eq!(written, n, "send_space() promised the room");
                }
            }
        }

        // Client side: one request over TCP, then wait for the answers.
        ready.clear();
        client.take_ready(&mut ready);
        if stream.is_connected() && !sent {
            // 20 bytes always fit an empty send buffer; a bigger request would loop
            // on what `write` returns.
            let n = stream.write(b"!kcatsnut morf olleh")?;
            assert_eq!(n, 20, "an empty send buffer takes 20 bytes");
            sent = true;
        }
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            reply.extend_from_slice(&buf[..n]);
        }
        if let Ok((n, from)) = udp_client.recv_from(&mut buf) {
            println!(
                "client: udp from {from}: {}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
        if reply.len() == 20 {
            println!("client: tcp: {}", String::from_utf8_lossy(&reply));
            println!("\nserver sockets:");
            for row in server.socket_table() {
                println!("  {row}");
            }
            return Ok(());
        }
        // Nothing to do now: sleep until the next timer (virtually).
        let delay = [server.poll_delay(now), client.poll_delay(now)]
            .into_iter()
            .flatten()
            .min();
        now += delay.unwrap_or(Duration::from_millis(1));
    }
    Err(Error::TimedOut)
}
