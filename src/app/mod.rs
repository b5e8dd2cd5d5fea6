//! Apps written only against the public socket API, like any user of the crate would.

pub mod connect;
pub mod echo;

pub use connect::ConnectClient;
pub use echo::EchoServer;
