//! SYN cookies (RFC 4987 §3.6): when a listener's SYN queue is full, the SYN-ACK's sequence
//! number carries the connection instead of a socket. A cookie is a keyed hash (SipHash-2-4,
//! key from the stack's seed) of the socket pair, the client's ISN, a 64-second epoch and the
//! client's handshake options, with those options in its low eight bits.

use crate::flow::SocketPair;
use crate::packet::SynOptions;
use smoltcp::time::Instant;
use smoltcp::wire::IpAddress;

/// Seconds per cookie epoch; a cookie is accepted in its epoch and the next one.
const EPOCH_SECS: i64 = 64;

/// MSS values a cookie can carry: the client's MSS is rounded down to one of them.
const MSS_TABLE: [u16; 8] = [536, 1024, 1220, 1300, 1380, 1440, 1460, 8960];

/// Low bits of a cookie: window scale (4 bits: 0 absent, else shift + 1), SACK (1 bit),
/// MSS table index (3 bits). The hash fills the rest.
const OPTION_BITS: u32 = 0xff;

/// Makes and checks cookies with one secret key.
pub(crate) struct CookieJar {
    key: (u64, u64),
}

impl CookieJar {
    /// A jar whose key is derived from `seed` (the stack's random seed).
    pub fn new(seed: u64) -> CookieJar {
        let k0 = splitmix64(seed ^ 0x636f_6f6b_6965_735f);
        CookieJar {
            key: (k0, splitmix64(k0 ^ seed)),
        }
    }

    /// The cookie for a SYN from `pair.remote` with sequence number `client_isn` and
    /// `options`; the options come back from [`CookieJar::check`] as rounded here.
    pub fn make(
        &self,
        pair: &SocketPair,
        client_isn: u32,
        options: &SynOptions,
        now: Instant,
    ) -> u32 {
        let bits = option_bits(options);
        self.hash(pair, client_isn, epoch(now), bits) & !OPTION_BITS | bits
    }

    /// The handshake options a valid `cookie` carries, or `None` if it is not one we made
    /// for this pair and ISN in this epoch or the previous one.
    pub fn check(
        &self,
        pair: &SocketPair,
        client_isn: u32,
        cookie: u32,
        now: Instant,
    ) -> Option<SynOptions> {
        let bits = cookie & OPTION_BITS;
        let current = epoch(now);
        let valid = [current, current.wrapping_sub(1)]
            .into_iter()
            .any(|e| self.hash(pair, client_isn, e, bits) & !OPTION_BITS == cookie & !OPTION_BITS);
        valid.then(|| options_of(bits))
    }

    fn hash(&self, pair: &SocketPair, client_isn: u32, epoch: u64, bits: u32) -> u32 {
        let mut message = [0u8; 64];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            message[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        for endpoint in [pair.local, pair.remote] {
            match endpoint.addr {
                IpAddress::Ipv4(a) => put(&a.octets()),
                IpAddress::Ipv6(a) => put(&a.octets()),
            }
            put(&endpoint.port.to_be_bytes());
        }
        put(&client_isn.to_be_bytes());
        put(&epoch.to_be_bytes());
        put(&[bits as u8]);
        siphash24(self.key, &message[..len]) as u32
    }
}

fn epoch(now: Instant) -> u64 {
    (now.secs().div_euclid(EPOCH_SECS)) as u64
}

fn option_bits(options: &SynOptions) -> u32 {
    let scale = options.window_scale.map_or(0, |s| u32::from(s.min(14)) + 1);
    let mss = options.mss.unwrap_or(MSS_TABLE[0]);
    let index = MSS_TABLE.iter().rposition(|m| *m <= mss).unwrap_or(0) as u32;
    scale | u32::from(options.sack) << 4 | index << 5
}

fn options_of(bits: u32) -> SynOptions {
    let scale = bits & 0xf;
    SynOptions {
        mss: Some(MSS_TABLE[(bits >> 5) as usize & 7]),
        window_scale: (scale > 0).then(|| (scale - 1).min(14) as u8),
        sack: bits & 0x10 != 0,
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SipHash-2-4 of `message` under `key` (Aumasson and Bernstein, 2012).
fn siphash24(key: (u64, u64), message: &[u8]) -> u64 {
    let mut v = [
        key.0 ^ 0x736f_6d65_7073_6575,
        key.1 ^ 0x646f_7261_6e64_6f6d,
        key.0 ^ 0x6c79_6765_6e65_7261,
        key.1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = message.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        compress(&mut v, u64::from_le_bytes(word), 2);
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[7] = message.len() as u8;
    compress(&mut v, u64::from_le_bytes(last), 2);
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn compress(v: &mut [u64; 4], word: u64, rounds: usize) {
    v[3] ^= word;
    for _ in 0..rounds {
        sip_round(v);
    }
    v[0] ^= word;
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::time::Duration;
    use smoltcp::wire::{IpEndpoint, Ipv4Address};

    fn pair(remote_port: u16) -> SocketPair {
        let addr = |last| IpAddress::Ipv4(Ipv4Address::new(192, 168, 69, last));
        SocketPair {
            local: IpEndpoint::new(addr(2), 7),
            remote: IpEndpoint::new(addr(1), remote_port),
        }
    }

    const LINUX: SynOptions = SynOptions {
        mss: Some(1460),
        window_scale: Some(7),
        sack: true,
    };

    #[test]
    fn siphash_matches_the_reference_vector() {
        // Appendix A of the SipHash paper: key 00..0f, message 00..0e.
        let key = (
            u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]),
            u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]),
        );
        let message: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(key, &message), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn a_cookie_checks_for_two_epochs_and_carries_the_options() {
        let jar = CookieJar::new(1);
        let start = Instant::from_secs(1000);
        let cookie = jar.make(&pair(40000), 77, &LINUX, start);
        assert_eq!(jar.check(&pair(40000), 77, cookie, start), Some(LINUX));
        let later = start + Duration::from_secs(EPOCH_SECS as u64);
        assert_eq!(jar.check(&pair(40000), 77, cookie, later), Some(LINUX));
        let too_late = later + Duration::from_secs(EPOCH_SECS as u64);
        assert_eq!(jar.check(&pair(40000), 77, cookie, too_late), None);
    }

    #[test]
    fn a_cookie_is_bound_to_pair_isn_options_and_key() {
        let jar = CookieJar::new(1);
        let now = Instant::from_secs(5);
        let cookie = jar.make(&pair(40000), 77, &LINUX, now);
        assert_eq!(jar.check(&pair(40001), 77, cookie, now), None);
        assert_eq!(jar.check(&pair(40000), 78, cookie, now), None);
        assert_eq!(jar.check(&pair(40000), 77, cookie ^ 0x10, now), None);
        assert_eq!(jar.check(&pair(40000), 77, cookie ^ 0x100, now), None);
        assert_eq!(CookieJar::new(2).check(&pair(40000), 77, cookie, now), None);
    }

    #[test]
    fn options_round_down_to_what_a_cookie_can_carry() {
        let jar = CookieJar::new(9);
        let now = Instant::ZERO;
        let cases = [
            (Some(1400), Some(20), false, Some(1380), Some(14)),
            (None, None, false, Some(536), None),
            (Some(100), Some(0), true, Some(536), Some(0)),
            (Some(65495), None, true, Some(8960), None),
        ];
        for (mss, scale, sack, want_mss, want_scale) in cases {
            let options = SynOptions {
                mss,
                window_scale: scale,
                sack,
            };
            let cookie = jar.make(&pair(1), 0, &options, now);
            let back = jar.check(&pair(1), 0, cookie, now).unwrap();
            assert_eq!(
                (back.mss, back.window_scale, back.sack),
                (want_mss, want_scale, sack)
            );
        }
    }

    #[test]
    fn forged_cookies_are_rare() {
        let jar = CookieJar::new(3);
        let now = Instant::ZERO;
        let accepted = (0..100_000u32)
            .filter(|guess| {
                jar.check(&pair(2), 5, guess.wrapping_mul(2_654_435_761), now)
                    .is_some()
            })
            .count();
        assert!(accepted <= 1, "{accepted} of 100000 guesses passed");
    }
}
