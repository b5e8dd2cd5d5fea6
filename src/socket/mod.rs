//! The socket layer: BSD-like TCP and UDP sockets on a [`Stack`](crate::Stack).

pub mod tcp;
pub mod udp;
