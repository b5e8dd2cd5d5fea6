//! TCP sequence numbers relative to each direction's initial sequence number, as
//! tcpdump and Wireshark show them; bounded to a number of connections.

use crate::packet::TcpFlags;
use smoltcp::wire::IpAddress;
use std::collections::HashMap;

/// Connections the tracker remembers; beyond this, closed ones go first, then the least
/// recently seen quarter.
pub(super) const MAX_CONNECTIONS: usize = 4096;

/// The TCP fields the sequence tracker reads.
pub(super) struct Segment {
    pub flags: TcpFlags,
    pub seq: u32,
    pub ack: u32,
}

type Endpoint = (IpAddress, u16);

/// Both directions of one TCP connection: index 0 is from the lower endpoint to the higher.
#[derive(Default)]
struct Connection {
    base: [Option<u32>; 2],
    closed: [bool; 2],
    last_used: u64,
}

/// Per-direction sequence bases: the SYN's seq, else the first seq seen, else (for a
/// direction only acknowledged so far) the first ack that names it. Bounded.
#[derive(Default)]
pub(super) struct SeqTracker {
    connections: HashMap<(Endpoint, Endpoint), Connection>,
    clock: u64,
}

impl SeqTracker {
    /// `(seq, ack)` relative to their bases; `ack` only when the ACK flag is set. `learn` is
    /// false for packets that failed their checksum: shown, but not trusted to set bases.
    pub(super) fn relative(
        &mut self,
        src: Endpoint,
        dst: Endpoint,
        segment: &Segment,
        learn: bool,
    ) -> (u32, Option<u32>) {
        let (key, dir) = if src <= dst {
            ((src, dst), 0)
        } else {
            ((dst, src), 1)
        };
        let (rev, flags) = (1 - dir, segment.flags);
        if !learn {
            let bases = self.connections.get(&key).map_or([None; 2], |c| c.base);
            let seq = segment.seq.wrapping_sub(bases[dir].unwrap_or(0));
            let ack = segment.ack.wrapping_sub(bases[rev].unwrap_or(0));
            return (seq, flags.ack.then_some(ack));
        }
        self.make_room(&key);
        self.clock += 1;
        let connection = self.connections.entry(key).or_default();
        connection.last_used = self.clock;
        if flags.syn {
            // A SYN with a new ISN is a new connection; a retransmitted one changes nothing.
            if !flags.ack && connection.base[dir] != Some(segment.seq) {
                *connection = Connection {
                    last_used: self.clock,
                    ..Connection::default()
                };
            }
            connection.base[dir] = Some(segment.seq);
            connection.closed[dir] = false;
        }
        let seq_base = *connection.base[dir].get_or_insert(segment.seq);
        let ack = flags.ack.then(|| {
            let ack_base = *connection.base[rev].get_or_insert(segment.ack);
            segment.ack.wrapping_sub(ack_base)
        });
        if flags.rst {
            connection.closed = [true, true];
        } else if flags.fin {
            connection.closed[dir] = true;
        }
        (segment.seq.wrapping_sub(seq_base), ack)
    }

    /// Before a new connection: forgets closed ones, then the least recently used quarter.
    fn make_room(&mut self, key: &(Endpoint, Endpoint)) {
        if self.connections.len() < MAX_CONNECTIONS || self.connections.contains_key(key) {
            return;
        }
        self.connections.retain(|_, c| c.closed != [true, true]);
        if self.connections.len() < MAX_CONNECTIONS {
            return;
        }
        let mut ages: Vec<u64> = self.connections.values().map(|c| c.last_used).collect();
        let quarter = ages.len() / 4;
        let (_, cutoff, _) = ages.select_nth_unstable(quarter);
        let cutoff = *cutoff;
        self.connections.retain(|_, c| c.last_used > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_map_stays_bounded() {
        let mut seqs = SeqTracker::default();
        let syn = Segment {
            flags: TcpFlags {
                syn: true,
                ..TcpFlags::default()
            },
            seq: 1,
            ack: 0,
        };
        let us = (IpAddress::v4(192, 168, 69, 2), 7);
        for port in 0..3 * MAX_CONNECTIONS as u16 {
            seqs.relative((IpAddress::v4(10, 0, 0, 1), port), us, &syn, true);
            assert!(seqs.connections.len() <= MAX_CONNECTIONS);
        }
    }
}
