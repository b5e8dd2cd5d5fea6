//! Building blocks of the ingress fuzz test.

pub mod packets;
pub mod strategies;
