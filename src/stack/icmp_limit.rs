//! The ICMP error rate limit (RFC 4443 §2.4(f), RFC 1812 §4.3.2.8), on Linux's model: a
//! token bucket for all destinations together (`icmp_msgs_per_sec`, `icmp_msgs_burst`),
//! and one per destination that earns one error per `icmp_ratelimit` and holds at most 6
//! (Linux's `XRLIM_BURST_FACTOR`). An error goes out only if both buckets allow it; it then
//! costs a token of each. Echo replies never come here. Time is the `now` passed in; the
//! table of destinations is fixed in size (the least recently used one makes room), so a
//! flood from any number of sources neither allocates nor grows it.

use crate::config::StackConfig;
use smoltcp::time::Instant;
use smoltcp::wire::IpAddress;

/// Destinations whose buckets are remembered.
const PEERS: usize = 64;
/// Errors a destination may get at once: Linux's `XRLIM_BURST_FACTOR`.
const PEER_BURST: u64 = 6;
/// Tokens one message costs in the overall bucket (its rate is in messages per second,
/// its clock in microseconds).
const MESSAGE: u64 = 1_000_000;

/// A token bucket on the stack's clock: `gain` tokens per microsecond, at most `capacity`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    capacity: u64,
    gain: u64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    fn new(capacity: u64, gain: u64, now: Instant) -> Bucket {
        Bucket {
            tokens: capacity,
            capacity,
            gain,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = (now.total_micros() - self.last.total_micros()).max(0) as u64;
        let earned = elapsed.saturating_mul(self.gain);
        self.tokens = self.tokens.saturating_add(earned).min(self.capacity);
        if now > self.last {
            self.last = now;
        }
    }
}

/// Whether the stack may send an ICMP error now, and to whom.
pub(crate) struct IcmpLimiter {
    /// All destinations together; `None` when `icmp_msgs_per_sec` is 0.
    overall: Option<Bucket>,
    /// Cost of one error per destination (the interval, in µs); 0: no such limit.
    peer_cost: u64,
    peers: Vec<(IpAddress, Bucket)>,
}

impl IcmpLimiter {
    pub fn new(config: &StackConfig, now: Instant) -> IcmpLimiter {
        let overall = (config.icmp_msgs_per_sec > 0).then(|| {
            let capacity = u64::from(config.icmp_msgs_burst.max(1)) * MESSAGE;
            Bucket::new(capacity, u64::from(config.icmp_msgs_per_sec), now)
        });
        IcmpLimiter {
            overall,
            peer_cost: config.icmp_ratelimit.total_micros(),
            peers: Vec::with_capacity(PEERS),
        }
    }

    /// True if an ICMP error to `destination` may go out `now`; it is then counted.
    pub fn allow(&mut self, now: Instant, destination: IpAddress) -> bool {
        if let Some(overall) = self.overall.as_mut() {
            overall.refill(now);
            if overall.tokens < MESSAGE {
                return false;
            }
        }
        if self.peer_cost > 0 {
            let peer = self.peer(now, destination);
            peer.refill(now);
            if peer.tokens < peer.capacity / PEER_BURST {
                return false;
            }
            peer.tokens -= peer.capacity / PEER_BURST;
        }
        if let Some(overall) = self.overall.as_mut() {
            overall.tokens -= MESSAGE;
        }
        true
    }

    /// The bucket of `destination`: found, new, or in the place of the least recently used.
    fn peer(&mut self, now: Instant, destination: IpAddress) -> &mut Bucket {
        let fresh = Bucket::new(PEER_BURST * self.peer_cost, 1, now);
        let slot = match self.peers.iter().position(|(a, _)| *a == destination) {
            Some(slot) => slot,
            None if self.peers.len() < PEERS => {
                self.peers.push((destination, fresh));
                self.peers.len() - 1
            }
            None => {
                let oldest = (0..self.peers.len())
                    .min_by_key(|&i| self.peers[i].1.last)
                    .unwrap_or(0);
                self.peers[oldest] = (destination, fresh);
                oldest
            }
        };
        &mut self.peers[slot].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::time::Duration;
    use smoltcp::wire::Ipv4Address;

    fn host(last: u8) -> IpAddress {
        IpAddress::Ipv4(Ipv4Address::new(192, 168, 69, last))
    }

    fn sent(limiter: &mut IcmpLimiter, now: Instant, to: IpAddress, tries: usize) -> usize {
        (0..tries).filter(|_| limiter.allow(now, to)).count()
    }

    #[test]
    fn one_destination_gets_a_burst_of_6_then_one_a_second() {
        let mut limiter = IcmpLimiter::new(&StackConfig::default(), Instant::ZERO);
        assert_eq!(sent(&mut limiter, Instant::ZERO, host(1), 100), 6);
        let later = Instant::ZERO + Duration::from_millis(999);
        assert_eq!(sent(&mut limiter, later, host(1), 10), 0);
        let later = Instant::ZERO + Duration::from_millis(1000);
        assert_eq!(sent(&mut limiter, later, host(1), 10), 1);
        let much_later = Instant::from_secs(3600);
        assert_eq!(
            sent(&mut limiter, much_later, host(1), 100),
            6,
            "full, no more"
        );
    }

    #[test]
    fn all_destinations_together_get_the_overall_burst_then_its_rate() {
        let mut limiter = IcmpLimiter::new(&StackConfig::default(), Instant::ZERO);
        let total: usize = (0..40)
            .map(|i| sent(&mut limiter, Instant::ZERO, host(i), 6))
            .sum();
        assert_eq!(total, 50, "icmp_msgs_burst");
        // 1000 per second earns one per millisecond.
        let now = Instant::ZERO + Duration::from_millis(3);
        let more: usize = (100..110)
            .map(|i| sent(&mut limiter, now, host(i), 1))
            .sum();
        assert_eq!(more, 3);
    }

    #[test]
    fn zero_turns_each_limit_off() {
        let config = StackConfig {
            icmp_msgs_per_sec: 0,
            icmp_ratelimit: Duration::ZERO,
            ..StackConfig::default()
        };
        let mut limiter = IcmpLimiter::new(&config, Instant::ZERO);
        assert_eq!(sent(&mut limiter, Instant::ZERO, host(1), 1000), 1000);
    }

    #[test]
    fn the_destination_table_stays_bounded() {
        let mut limiter = IcmpLimiter::new(&StackConfig::default(), Instant::ZERO);
        for i in 0..10_000u32 {
            let now = Instant::from_millis(i64::from(i));
            let to = IpAddress::Ipv4(Ipv4Address::from(i.to_be_bytes()));
            limiter.allow(now, to);
        }
        assert_eq!(limiter.peers.len(), PEERS);
        assert_eq!(limiter.peers.capacity(), PEERS);
    }
}
