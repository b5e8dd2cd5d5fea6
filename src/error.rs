//! The crate's one error type. Each variant says what went wrong in words a user can act on;
//! `From<Error> for io::Error` maps them onto `io::ErrorKind` for std-like call sites.

use std::io;

/// Errors of the socket layer and the device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No data now; wait for readiness and retry (maps to `io::ErrorKind::WouldBlock`).
    #[error("operation would block")]
    WouldBlock,
    /// Another socket already uses this local endpoint.
    #[error("address in use: {0}")]
    AddrInUse(String),
    /// The address is not one of the stack's, or is unusable (unspecified, port 0, ...).
    #[error("address not usable: {0}")]
    Unaddressable(String),
    /// Every ephemeral port towards that destination is taken by a live socket pair.
    #[error("no free ephemeral port towards {0} (all socket pairs in use or in TIME-WAIT)")]
    EphemeralPortsExhausted(String),
    /// The peer answered the SYN with RST.
    #[error("connection refused")]
    ConnectionRefused,
    /// The peer reset an established connection.
    #[error("connection reset by peer")]
    ConnectionReset,
    /// The connection attempt or the connection timed out.
    #[error("connection timed out")]
    TimedOut,
    /// An ICMP destination-unreachable came back for this connection.
    #[error("destination unreachable")]
    Unreachable,
    /// The socket is not in a state that allows this operation.
    #[error("socket not connected")]
    NotConnected,
    /// The UDP send buffer is full.
    #[error("send buffer full")]
    BufferFull,
    /// The TUN device could not be opened or used.
    #[error("{0}")]
    Device(String),
    /// The destination is on none of the stack's subnets and no route leads there: no
    /// packet was sent (like `ENETUNREACH`).
    #[error("network unreachable: {0}")]
    NetworkUnreachable(String),
    /// A [`StackConfig`](crate::StackConfig) value (or a TUN setting) the stack cannot
    /// work with; the text names the value, the valid range and why.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match &err {
            Error::WouldBlock => io::ErrorKind::WouldBlock,
            Error::AddrInUse(_) => io::ErrorKind::AddrInUse,
            Error::Unaddressable(_) => io::ErrorKind::AddrNotAvailable,
            Error::EphemeralPortsExhausted(_) => io::ErrorKind::AddrNotAvailable,
            Error::ConnectionRefused => io::ErrorKind::ConnectionRefused,
            Error::ConnectionReset => io::ErrorKind::ConnectionReset,
            Error::TimedOut => io::ErrorKind::TimedOut,
            Error::Unreachable => io::ErrorKind::HostUnreachable,
            Error::NotConnected => io::ErrorKind::NotConnected,
            Error::BufferFull => io::ErrorKind::WouldBlock,
            Error::Device(_) => io::ErrorKind::Other,
            Error::NetworkUnreachable(_) => io::ErrorKind::NetworkUnreachable,
            Error::InvalidConfig(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, err)
    }
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
