//! The control socket: a running stack answers `tunstack ss` with its socket table and
//! counters over an abstract Unix socket named `tunstack/<tun>`. Abstract names live in the
//! network namespace, like the TUN device, so each namespace's stack has its own.

use crate::error::{Error, Result};
use crate::stack::{SocketInfo, SocketKind, Stack};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

/// How long a slow `tunstack ss` reader may hold up the stack.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

fn address(tun: &str) -> Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("tunstack/{tun}").as_bytes())
        .map_err(|e| Error::Device(format!("control socket name for {tun}: {e}")))
}

/// The listening end inside the running stack.
pub struct ControlServer {
    listener: UnixListener,
}

impl ControlServer {
    /// Listens as `tunstack/<tun>`; fails if another stack on that TUN already does.
    pub fn bind(tun: &str) -> Result<ControlServer> {
        let listener = UnixListener::bind_addr(&address(tun)?).map_err(|e| {
            Error::Device(format!("control socket tunstack/{tun} is taken ({e}): is another tunstack running on {tun}?"))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::Device(format!("control socket: {e}")))?;
        Ok(ControlServer { listener })
    }

    /// The fd to wait on.
    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Answers every waiting client with `report` (what [`report`] makes, plus extras).
    pub fn serve(&self, report: &str) {
        while let Ok((mut client, _)) = self.listener.accept() {
            let sent = client
                .set_nonblocking(false)
                .and_then(|()| client.set_write_timeout(Some(WRITE_TIMEOUT)))
                .and_then(|()| client.write_all(report.as_bytes()));
            if let Err(err) = sent {
                log::debug!("control: answering a client failed: {err}");
            }
        }
    }
}

/// Asks the stack running on `tun` (in this network namespace) for its report.
pub fn query(tun: &str) -> Result<String> {
    let mut stream = UnixStream::connect_addr(&address(tun)?).map_err(|e| {
        Error::Device(format!(
            "no tunstack is running on {tun} in this network namespace ({e}): start one with `tunstack echo --tun {tun}`"
        ))
    })?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| Error::Device(format!("reading the socket table failed: {e}")))?;
    Ok(text)
}

/// The socket table like `ss -tuan`, then the listeners' queues and the stack's counters.
pub fn report(stack: &Stack) -> String {
    let table = stack.socket_table();
    let mut out = String::new();
    out.push_str(SocketInfo::HEADER);
    out.push('\n');
    for row in &table {
        out.push_str(&row.to_string());
        out.push('\n');
    }
    let data_sockets = table.iter().filter(|r| r.kind == SocketKind::Tcp).count();
    let listeners = table
        .iter()
        .filter(|r| r.kind == SocketKind::TcpListener)
        .count();
    let udp = table.iter().filter(|r| r.kind == SocketKind::Udp).count();
    out.push_str(&format!(
        "\n{listeners} listening, {data_sockets} tcp data sockets, {udp} udp sockets\n"
    ));
    out.push_str(&stack.stats().to_string());
    out.push('\n');
    out
}
