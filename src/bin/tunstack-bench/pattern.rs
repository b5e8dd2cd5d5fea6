//! The byte stream a throughput client sends: a pseudo-random sequence repeating with a
//! prime period, so a lost, duplicated or reordered chunk of any size shows up when the
//! echo is compared. Each connection starts at its own offset.

/// Period of the pattern in bytes: a prime, so no write or read size lines up with it.
const PERIOD: usize = 1_000_003;

/// The pattern, stored twice over so any window of up to `PERIOD` bytes is contiguous.
pub struct Pattern {
    bytes: Vec<u8>,
}

impl Pattern {
    /// Generates the pattern with xorshift64* from a fixed seed.
    pub fn new() -> Pattern {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut bytes = Vec::with_capacity(2 * PERIOD);
        while bytes.len() < PERIOD {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let word = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let take = (PERIOD - bytes.len()).min(8);
            bytes.extend_from_slice(&word.to_le_bytes()[..take]);
        }
        bytes.extend_from_within(..PERIOD);
        Pattern { bytes }
    }

    /// The `len` bytes at stream position `position` (`len` at most the period).
    pub fn window(&self, position: u64, len: usize) -> &[u8] {
        let start = (position % PERIOD as u64) as usize;
        &self.bytes[start..start + len.min(PERIOD)]
    }

    /// Where connection `index` starts in the pattern.
    pub fn start_of(index: usize) -> u64 {
        (index as u64).wrapping_mul(7_919 * 13) % PERIOD as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_wrap_around_the_period() {
        let pattern = Pattern::new();
        let end = pattern.window(PERIOD as u64 - 3, 6).to_vec();
        assert_eq!(&end[3..], pattern.window(0, 3));
        assert_eq!(pattern.window(PERIOD as u64 + 5, 4), pattern.window(5, 4));
    }

    #[test]
    fn the_pattern_is_not_trivial() {
        let pattern = Pattern::new();
        let window = pattern.window(0, 4096);
        let zeros = window.iter().filter(|&&b| b == 0).count();
        assert!(zeros < 64, "{zeros} zero bytes in 4096");
        assert_ne!(pattern.window(0, 64), pattern.window(64, 64));
    }
}
