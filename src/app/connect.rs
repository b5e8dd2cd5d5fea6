//! An nc-like client that runs inside the stack: input bytes go to the connection, what
//! the connection delivers goes to the output. End of input half-closes (FIN); the peer's
//! FIN ends the session. With UDP, each input chunk is one datagram (`send_to`) and every
//! datagram from the peer is written out (`recv_from`).

use crate::error::{Error, Result};
use crate::socket::tcp::TcpStream;
use crate::socket::udp::UdpSocket;
use crate::stack::Stack;
use std::collections::VecDeque;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

/// Largest chunk of input sent as one datagram or read at once.
pub const CHUNK: usize = 65507;

enum Transport {
    Tcp {
        stream: Option<TcpStream>,
        fin_sent: bool,
        peer_done: bool,
        announced: bool,
    },
    Udp {
        socket: UdpSocket,
    },
}

/// The client: one TCP connection or one UDP socket towards `remote`.
pub struct ConnectClient {
    transport: Transport,
    remote: SocketAddr,
    input: VecDeque<Vec<u8>>,
    input_eof: bool,
    output: Box<dyn Write>,
    exit: Option<i32>,
    /// UDP: how long to keep listening for answers after the input ended.
    linger: std::time::Duration,
    eof_at: Option<Instant>,
    buf: Vec<u8>,
}

impl ConnectClient {
    /// Starts a TCP connection to `remote` (from an ephemeral port).
    pub fn tcp(stack: &Stack, remote: SocketAddr, output: Box<dyn Write>) -> Result<ConnectClient> {
        let stream = TcpStream::connect(stack, remote)?;
        let transport = Transport::Tcp {
            stream: Some(stream),
            fin_sent: false,
            peer_done: false,
            announced: false,
        };
        Ok(ConnectClient::new(transport, remote, output))
    }

    /// Binds a UDP socket on an ephemeral port to talk to `remote`; after the input ends it
    /// keeps printing answers for `linger`.
    pub fn udp(
        stack: &Stack,
        remote: SocketAddr,
        output: Box<dyn Write>,
        linger: std::time::Duration,
    ) -> Result<ConnectClient> {
        let any = match remote.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let socket = UdpSocket::bind(stack, SocketAddr::new(any, 0))?;
        // Connected, like `nc -u`: a port unreachable back ends the session as refused.
        socket.connect(remote)?;
        log::info!("connect: udp {} -> {remote}", socket.local_addr());
        let mut client = ConnectClient::new(Transport::Udp { socket }, remote, output);
        client.linger = linger;
        Ok(client)
    }

    fn new(transport: Transport, remote: SocketAddr, output: Box<dyn Write>) -> ConnectClient {
        ConnectClient {
            transport,
            remote,
            input: VecDeque::new(),
            input_eof: false,
            output,
            exit: None,
            linger: std::time::Duration::from_secs(2),
            eof_at: None,
            buf: vec![0; CHUNK],
        }
    }

    /// TCP: abort when the peer is silent this long with a SYN or data outstanding.
    pub fn set_timeout(&self, timeout: crate::smoltcp::time::Duration) {
        if let Transport::Tcp {
            stream: Some(stream),
            ..
        } = &self.transport
        {
            stream.set_timeout(timeout);
        }
    }

    /// Whether the client can take more input now (back-pressure on stdin).
    pub fn wants_input(&self) -> bool {
        self.input.is_empty() && !self.input_eof && self.exit.is_none()
    }

    /// Queues input bytes; an empty slice means end of input.
    pub fn push_input(&mut self, data: &[u8]) {
        if data.is_empty() {
            self.input_eof = true;
            self.eof_at = Some(Instant::now());
        } else {
            self.input.push_back(data.to_vec());
        }
        self.pump();
    }

    /// The exit status once the session is over: 0 for a clean end, 1 for an error.
    pub fn exit_code(&self) -> Option<i32> {
        match self.linger_left() {
            Some(left) if left.is_zero() => self.exit.or(Some(0)),
            _ => self.exit,
        }
    }

    /// How long until a UDP session's linger after end of input runs out.
    pub fn linger_left(&self) -> Option<std::time::Duration> {
        match (&self.transport, self.eof_at) {
            (Transport::Udp { .. }, Some(at)) if self.input.is_empty() => {
                Some(self.linger.saturating_sub(at.elapsed()))
            }
            _ => None,
        }
    }

    /// Moves bytes both ways as far as the socket allows; call on every readiness change.
    pub fn pump(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let outcome = match self.transport {
            Transport::Tcp { .. } => self.pump_tcp(),
            Transport::Udp { .. } => self.pump_udp(),
        };
        if let Err(err) = outcome {
            eprintln!("tunstack: {}: {err}", self.remote);
            self.finish(1);
        }
        if let Some(left) = self.linger_left()
            && left.is_zero()
        {
            self.finish(0);
        }
    }

    fn pump_tcp(&mut self) -> Result<()> {
        let Transport::Tcp {
            stream: Some(stream),
            fin_sent,
            peer_done,
            announced,
        } = &mut self.transport
        else {
            return Ok(());
        };
        if let Some(err) = stream.take_error() {
            return Err(err);
        }
        if !*announced {
            // Still connecting (once connected, a stream that closes stays announced).
            if !stream.is_connected() {
                return Ok(());
            }
            *announced = true;
            log::info!("connect: connected {}", stream.socket_pair());
        }
        while let Some(chunk) = self.input.front_mut() {
            match TcpStream::write(stream, chunk) {
                Ok(n) if n == chunk.len() => {
                    self.input.pop_front();
                }
                Ok(n) => {
                    chunk.drain(..n);
                }
                Err(Error::WouldBlock) => break,
                Err(err) => return Err(err),
            }
        }
        if self.input.is_empty() && self.input_eof && !*fin_sent {
            stream.shutdown_write();
            *fin_sent = true;
        }
        // Both directions end on their own: the peer's FIN ends what we print, end of
        // input ends what we send. The session is over when both have.
        while !*peer_done {
            match TcpStream::read(stream, &mut self.buf) {
                Ok(0) => *peer_done = true,
                Ok(n) => self
                    .output
                    .write_all(&self.buf[..n])
                    .map_err(output_error)?,
                Err(Error::WouldBlock) => break,
                Err(err) => return Err(err),
            }
        }
        self.output.flush().map_err(output_error)?;
        // Done only once our FIN is acknowledged: what we sent was delivered. Exiting
        // earlier would lose what is still in flight (the stack dies with the process).
        if *peer_done && *fin_sent && stream.fin_acknowledged() {
            self.finish(0);
        }
        Ok(())
    }

    fn pump_udp(&mut self) -> Result<()> {
        let Transport::Udp { socket } = &self.transport else {
            return Ok(());
        };
        while let Some(datagram) = self.input.front() {
            match socket.send_to(datagram, self.remote) {
                Ok(_) => {
                    self.input.pop_front();
                    if self.input.is_empty() && self.input_eof {
                        self.eof_at = Some(Instant::now());
                    }
                }
                Err(Error::WouldBlock) => break,
                Err(err) => return Err(err),
            }
        }
        loop {
            match socket.recv_from(&mut self.buf) {
                Ok((n, from)) if from == self.remote => self
                    .output
                    .write_all(&self.buf[..n])
                    .map_err(output_error)?,
                Ok((_, from)) => log::debug!("connect: ignored a datagram from {from}"),
                Err(Error::WouldBlock) => break,
                Err(err) => return Err(err),
            }
        }
        self.output.flush().map_err(output_error)
    }

    /// Ends the session: a TCP stream is dropped, which sends our FIN if not sent yet.
    fn finish(&mut self, code: i32) {
        if let Transport::Tcp { stream, .. } = &mut self.transport {
            stream.take();
        }
        self.exit.get_or_insert(code);
    }
}

fn output_error(err: std::io::Error) -> Error {
    Error::Device(format!("writing output failed: {err}"))
}
