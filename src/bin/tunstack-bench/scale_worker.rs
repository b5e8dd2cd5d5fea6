//! One worker process of the scale test: it holds a slice of the connections (a process
//! may hold only so many file descriptors) and runs phases over them when told to on
//! stdin: `connect` opens them all, `connect K` opens more until K of them have been
//! opened (counting those opened before; each connection is tried once), `echo` sends 1 byte
//! on each open one and waits for its echo. Each phase answers one line on stdout:
//! `done SECS FAILURES FIRST_ERROR`.

use crate::net::{self, Epoll, READABLE, WRITABLE};
use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// What one worker is asked to do.
pub struct Options {
    /// The echo server.
    pub target: SocketAddr,
    /// Source addresses, used in turn starting at `first`.
    pub sources: Vec<IpAddr>,
    /// Index of this worker's first connection among all workers'.
    pub first: usize,
    /// Connections this worker opens.
    pub conns: usize,
    /// Connects (and echoes) in flight at most.
    pub concurrency: usize,
    /// Each phase gives up after this long.
    pub phase_timeout: Duration,
}

/// How a phase over all connections went.
#[derive(Default)]
pub struct Phase {
    /// Time the phase took.
    pub elapsed: Duration,
    /// Connections that failed in it.
    pub failures: usize,
    /// What went wrong first.
    pub first_error: Option<String>,
}

impl Phase {
    fn fail(&mut self, what: String) {
        self.failures += 1;
        self.first_error.get_or_insert(what);
    }

    /// The answer line (without newline).
    pub fn to_line(&self) -> String {
        let error = self
            .first_error
            .as_deref()
            .unwrap_or("-")
            .replace('\n', " ");
        format!(
            "done {} {} {error}",
            self.elapsed.as_secs_f64(),
            self.failures
        )
    }

    /// Parses an answer line.
    pub fn from_line(line: &str) -> Option<Phase> {
        let mut parts = line.trim_end().splitn(4, ' ');
        if parts.next()? != "done" {
            return None;
        }
        let elapsed = Duration::from_secs_f64(parts.next()?.parse().ok()?);
        let failures = parts.next()?.parse().ok()?;
        let first_error = parts.next().filter(|e| *e != "-").map(str::to_string);
        Some(Phase {
            elapsed,
            failures,
            first_error,
        })
    }
}

/// A command read from stdin.
#[derive(Debug, PartialEq)]
enum Request {
    /// Open connections until this many of the worker's share have been tried.
    Connect(usize),
    /// Echo 1 byte on every open connection.
    Echo,
}

impl Request {
    /// Parses one command line; `conns` is the worker's share, what plain `connect` opens.
    fn parse(line: &str, conns: usize) -> Result<Request, String> {
        let mut words = line.split_whitespace();
        let request = match (words.next(), words.next()) {
            (Some("connect"), None) => Request::Connect(conns),
            (Some("connect"), Some(count)) => match count.parse::<usize>() {
                Ok(count) if count <= conns => Request::Connect(count),
                Ok(count) => {
                    return Err(format!(
                        "connect {count}: this worker holds only {conns} conns"
                    ));
                }
                Err(err) => return Err(format!("connect {count:?}: {err}")),
            },
            (Some("echo"), None) => Request::Echo,
            _ => return Err(format!("unknown command {:?}", line.trim())),
        };
        match words.next() {
            None => Ok(request),
            Some(_) => Err(format!("unknown command {:?}", line.trim())),
        }
    }
}

/// Serves phases from stdin until it closes; the connections close when the worker exits.
pub fn run(options: &Options) -> io::Result<()> {
    net::raise_fd_limit()?;
    let mut streams = Vec::new();
    // Connections of this worker's share tried so far, by every `connect`.
    let mut tried = 0usize;
    let stdin = io::stdin();
    let mut stdout = io::stdout();
    for line in stdin.lock().lines() {
        let request = Request::parse(&line?, options.conns).map_err(io::Error::other)?;
        let phase = match request {
            Request::Connect(count) => {
                let (opened, phase) = connect(options, tried..count.max(tried));
                streams.extend(opened);
                tried = tried.max(count);
                phase
            }
            Request::Echo => echo_all(&streams, options.concurrency, options.phase_timeout)?,
        };
        writeln!(stdout, "{}", phase.to_line())?;
        stdout.flush()?;
    }
    Ok(())
}

/// Opens the connections of `indices` (positions in this worker's share, which pick the
/// source addresses), at most `concurrency` connects at a time.
fn connect(options: &Options, indices: Range<usize>) -> (Vec<TcpStream>, Phase) {
    let count = indices.len();
    let mut phase = Phase::default();
    let mut streams = Vec::with_capacity(count);
    let started = Instant::now();
    let mut epoll = match Epoll::new(1024) {
        Ok(epoll) => epoll,
        Err(err) => {
            phase.fail(format!("epoll: {err}"));
            phase.failures = count;
            return (streams, phase);
        }
    };
    let mut pending: Vec<Option<TcpStream>> = Vec::new();
    let (mut in_flight, mut next) = (0usize, indices.start);
    let deadline = started + options.phase_timeout;
    while streams.len() + phase.failures < count && Instant::now() < deadline {
        while in_flight < options.concurrency && next < indices.end {
            let index = options.first + next;
            let source = options
                .sources
                .get(index % options.sources.len().max(1))
                .copied();
            next += 1;
            match start(&epoll, options.target, source, pending.len() as u64) {
                Ok(stream) => {
                    pending.push(Some(stream));
                    in_flight += 1;
                }
                Err(err) => phase.fail(format!("connect from {source:?}: {err}")),
            }
        }
        let ready = epoll.wait(Duration::from_millis(100)).unwrap_or_default();
        for (token, _events) in ready {
            let Some(stream) = pending.get_mut(token as usize).and_then(Option::take) else {
                continue;
            };
            in_flight -= 1;
            let _ = epoll.delete(stream.as_raw_fd());
            match net::connect_result(stream.as_raw_fd()) {
                Ok(()) => streams.push(stream),
                Err(err) => phase.fail(format!("connect: {err}")),
            }
        }
    }
    let left = count - streams.len() - phase.failures;
    if left > 0 {
        phase.failures += left;
        let timeout = options.phase_timeout;
        phase
            .first_error
            .get_or_insert(format!("{left} connects not done after {timeout:?}"));
    }
    phase.elapsed = started.elapsed();
    (streams, phase)
}

fn start(
    epoll: &Epoll,
    target: SocketAddr,
    source: Option<IpAddr>,
    token: u64,
) -> io::Result<TcpStream> {
    let stream = TcpStream::from(net::start_connect(target, source)?);
    epoll.add(stream.as_raw_fd(), WRITABLE, token)?;
    Ok(stream)
}

/// Sends 1 byte on every stream and waits for its echo, `concurrency` at a time.
pub fn echo_all(streams: &[TcpStream], concurrency: usize, timeout: Duration) -> io::Result<Phase> {
    let mut phase = Phase::default();
    let mut epoll = Epoll::new(1024)?;
    let started = Instant::now();
    let deadline = started + timeout;
    let (mut next, mut in_flight, mut done) = (0usize, 0usize, 0usize);
    while done < streams.len() && Instant::now() < deadline {
        while in_flight < concurrency && next < streams.len() {
            let stream = &streams[next];
            let sent = (&*stream).write(&[next as u8]);
            match sent.and_then(|_| epoll.add(stream.as_raw_fd(), READABLE, next as u64)) {
                Ok(()) => in_flight += 1,
                Err(err) => {
                    phase.fail(format!("write on conn {next}: {err}"));
                    done += 1;
                }
            }
            next += 1;
        }
        for (token, _events) in epoll.wait(Duration::from_millis(100))? {
            let index = token as usize;
            let stream = &streams[index];
            let _ = epoll.delete(stream.as_raw_fd());
            in_flight -= 1;
            done += 1;
            let mut byte = [0u8; 1];
            match (&*stream).read(&mut byte) {
                Ok(1) if byte[0] == index as u8 => {}
                Ok(1) => phase.fail(format!("conn {index}: wrong byte {}", byte[0])),
                Ok(_) => phase.fail(format!("conn {index}: closed by the server")),
                Err(err) => phase.fail(format!("conn {index}: {err}")),
            }
        }
    }
    if done < streams.len() {
        let left = streams.len() - done;
        phase.failures += left;
        phase
            .first_error
            .get_or_insert(format!("{left} echoes not done after {timeout:?}"));
    }
    phase.elapsed = started.elapsed();
    Ok(phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_lines_round_trip() {
        let mut phase = Phase {
            elapsed: Duration::from_millis(1500),
            ..Phase::default()
        };
        phase.fail("conn 3: connection reset by peer".into());
        let back = Phase::from_line(&phase.to_line()).unwrap();
        assert_eq!(back.elapsed, phase.elapsed);
        assert_eq!(back.failures, 1);
        assert_eq!(
            back.first_error.as_deref(),
            Some("conn 3: connection reset by peer")
        );
        let clean = Phase::from_line("done 0.25 0 -\n").unwrap();
        assert_eq!((clean.failures, clean.first_error), (0, None));
        assert!(Phase::from_line("garbage").is_none());
    }

    #[test]
    fn parses_commands() {
        assert_eq!(Request::parse("connect", 50), Ok(Request::Connect(50)));
        assert_eq!(Request::parse("connect 20\n", 50), Ok(Request::Connect(20)));
        assert_eq!(Request::parse(" connect 0 ", 50), Ok(Request::Connect(0)));
        assert_eq!(Request::parse("connect 50", 50), Ok(Request::Connect(50)));
        assert_eq!(Request::parse("echo", 50), Ok(Request::Echo));
        let too_many = Request::parse("connect 51", 50).unwrap_err();
        assert!(too_many.contains("only 50"), "{too_many}");
        assert!(Request::parse("connect -1", 50).is_err());
        assert!(Request::parse("connect 5 6", 50).is_err());
        assert!(Request::parse("echo 5", 50).is_err());
        assert!(Request::parse("", 50).is_err());
        assert!(Request::parse("close", 50).is_err());
    }
}
