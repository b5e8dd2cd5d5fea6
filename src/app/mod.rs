//! Apps written only against the public socket API, like any user of the crate would.

pub mod echo;

pub use echo::EchoServer;
