//! Predictive polling: traffic that comes back after idle spells at a steady period (a
//! `ping` every second, a heartbeat, a client polling) is learned, and the event loop wakes
//! shortly before the next packet is due and polls until it arrives (after the block
//! layer's hybrid polling in Linux, which sleeps for part of the expected wait and then
//! polls).
//!
//! Why: a process asleep behind a TUN is woken when a packet arrives, and waking a halted
//! vCPU costs 25–30 µs on a VM — five times the kernel's whole echo. A timer wakes it just
//! as slowly, but *before* the packet comes, where it costs nothing. The price is polling
//! for at most twice the lead per predicted packet, and only while the gaps agree.

use smoltcp::time::{Duration, Instant};

/// Gaps remembered; all must agree for a prediction.
const GAPS: usize = 4;
/// Gaps may differ from their mean by this fraction (in 1/100) at most.
const TOLERANCE_PCT: u64 = 10;
/// Shortest and longest period learned: below, busy-polling after traffic covers it;
/// above, a rhythm is too slow to be worth a timer.
const MIN_PERIOD: Duration = Duration::from_millis(1);
const MAX_PERIOD: Duration = Duration::from_secs(10);

/// What the loop is to do about the next predicted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nothing predicted: wait as usual.
    Wait,
    /// A packet is due: wake no later than this.
    WakeAt(Instant),
    /// It is due now: poll without sleeping.
    Poll,
}

/// The learned period of the packets that end idle spells.
#[derive(Debug, Clone)]
pub struct Rhythm {
    /// How long before a predicted packet polling starts (and after it, ends).
    lead: Duration,
    /// When the last idle spell ended.
    last: Option<Instant>,
    /// The last gaps between idle spells' ends, oldest first once full.
    gaps: [Duration; GAPS],
    count: usize,
}

impl Rhythm {
    /// A rhythm that polls from `lead` before a predicted packet to `lead` after it; a zero
    /// lead never predicts.
    pub fn new(lead: Duration) -> Rhythm {
        Rhythm {
            lead,
            last: None,
            gaps: [Duration::ZERO; GAPS],
            count: 0,
        }
    }

    /// A packet ended an idle spell at `now`.
    pub fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last.filter(|&l| now > l) {
            let gap = now - last;
            if (MIN_PERIOD..=MAX_PERIOD).contains(&gap) {
                self.gaps.rotate_left(1);
                self.gaps[GAPS - 1] = gap;
                self.count = (self.count + 1).min(GAPS);
            } else {
                self.count = 0;
            }
        }
        self.last = Some(now);
    }

    /// When the next packet is expected: the last one plus the mean gap, if the last
    /// [`GAPS`] gaps agree.
    pub fn expected(&self) -> Option<Instant> {
        self.period().and_then(|p| self.last.map(|l| l + p))
    }

    /// The mean of the last [`GAPS`] gaps, if they agree.
    fn period(&self) -> Option<Duration> {
        if self.lead == Duration::ZERO || self.count < GAPS {
            return None;
        }
        let total: u64 = self.gaps.iter().map(|g| g.total_micros()).sum();
        let mean = total / GAPS as u64;
        let spread = mean * TOLERANCE_PCT / 100;
        let agree = self
            .gaps
            .iter()
            .all(|g| g.total_micros().abs_diff(mean) <= spread);
        agree.then_some(Duration::from_micros(mean))
    }

    /// How long before (and after) a packet due after `period` to poll: the lead, longer
    /// for long periods (1/128 of it, up to 4 leads) — after a long sleep the host takes
    /// longer to run a vCPU again (a 200 ms rhythm needs about 500 µs).
    fn lead_for(&self, period: Duration) -> Duration {
        let scaled = Duration::from_micros(period.total_micros() / 128);
        scaled.max(self.lead).min(self.lead * 4)
    }

    /// What to do at `now`, idle. Once the window around a predicted packet has passed
    /// without it, nothing more is predicted until a packet comes (and its gap must agree
    /// with the others), so traffic that stops costs one poll of twice the lead; a packet
    /// that is merely late keeps the rhythm.
    pub fn plan(&self, now: Instant) -> Plan {
        let (Some(period), Some(last)) = (self.period(), self.last) else {
            return Plan::Wait;
        };
        let (next, lead) = (last + period, self.lead_for(period));
        if now + lead < next {
            Plan::WakeAt(next - lead)
        } else if now <= next + lead {
            Plan::Poll
        } else {
            Plan::Wait
        }
    }
}

/// One line for `tunstack ss`: what the loop has learned.
impl std::fmt::Display for Rhythm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.period() {
            _ if self.lead == Duration::ZERO => write!(f, "rhythm: off (--rhythm-lead-us 0)"),
            Some(period) => write!(
                f,
                "rhythm: a packet every {:.3} ms after idle spells; polling from {} µs before the next",
                period.total_micros() as f64 / 1000.0,
                self.lead_for(period).total_micros()
            ),
            None => write!(
                f,
                "rhythm: none learned (traffic after idle spells has no steady period)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAD: Duration = Duration::from_micros(150);

    fn at(ms: f64) -> Instant {
        Instant::from_micros((ms * 1000.0) as i64)
    }

    fn learned(times: &[f64]) -> Rhythm {
        let mut rhythm = Rhythm::new(LEAD);
        for &t in times {
            rhythm.arrived(at(t));
        }
        rhythm
    }

    #[test]
    fn a_steady_period_predicts_the_next_packet() {
        let rhythm = learned(&[0.0, 2.0, 4.01, 5.99, 8.0]);
        assert_eq!(rhythm.expected(), Some(at(10.0)));
        // Well before: wake at the lead; within the lead either side: poll.
        assert_eq!(rhythm.plan(at(8.1)), Plan::WakeAt(at(9.85)));
        assert_eq!(rhythm.plan(at(9.9)), Plan::Poll);
        assert_eq!(rhythm.plan(at(10.1)), Plan::Poll);
    }

    #[test]
    fn the_report_says_what_was_learned() {
        assert_eq!(
            learned(&[0.0, 2.0, 4.0, 6.0, 8.0]).to_string(),
            "rhythm: a packet every 2.000 ms after idle spells; polling from 150 µs before the next"
        );
        assert!(learned(&[0.0, 2.0]).to_string().contains("none learned"));
        assert!(Rhythm::new(Duration::ZERO).to_string().contains("off"));
    }

    #[test]
    fn a_long_period_polls_from_further_ahead() {
        let rhythm = learned(&[0.0, 200.0, 400.0, 600.0, 800.0]);
        // 200 ms / 128 = 1.56 ms, capped at 4 leads: 600 µs.
        assert_eq!(rhythm.plan(at(900.0)), Plan::WakeAt(at(999.4)));
        assert_eq!(rhythm.plan(at(1000.55)), Plan::Poll);
        assert_eq!(rhythm.plan(at(1000.65)), Plan::Wait);
    }

    #[test]
    fn the_period_is_the_mean_of_the_last_four_gaps_each_within_a_tenth_of_it() {
        // Gaps 45, 55, 50, 50: mean 50, none more than 5 ms (10 %) off it.
        let edge = learned(&[0.0, 45.0, 100.0, 150.0, 200.0]);
        assert_eq!(edge.expected(), Some(at(250.0)));
        assert!(edge.to_string().contains("every 50.000 ms"), "{edge}");
        // Gaps 44, 56, 50, 50: 6 ms off.
        assert_eq!(learned(&[0.0, 44.0, 100.0, 150.0, 200.0]).expected(), None);
        // 50 ms pings on a busy machine, 46 to 74 ms apart: nothing to learn ...
        let loaded = [0.0, 74.0, 120.0, 180.0, 234.0];
        assert_eq!(learned(&loaded).expected(), None);
        // ... until the last four gaps agree again (56, 57, 55, 56 ms: mean 56).
        let steady_again = [290.0, 347.0, 402.0, 458.0];
        let rhythm = learned(&[&loaded[..], &steady_again[..]].concat());
        assert_eq!(rhythm.expected(), Some(at(514.0)));
    }

    #[test]
    fn too_few_or_disagreeing_gaps_predict_nothing() {
        assert_eq!(learned(&[0.0, 2.0, 4.0, 6.0]).expected(), None);
        let jittery = learned(&[0.0, 2.0, 4.0, 6.5, 8.5]);
        assert_eq!(jittery.expected(), None);
        assert_eq!(jittery.plan(at(9.0)), Plan::Wait);
        // Gaps outside the periods worth learning reset it.
        assert_eq!(learned(&[0.0, 0.5, 1.0, 1.5, 2.0]).expected(), None);
        let long_break = learned(&[0.0, 2.0, 4.0, 6.0, 8.0, 20_000.0, 20_002.0]);
        assert_eq!(long_break.expected(), None);
        assert_eq!(Rhythm::new(Duration::ZERO).plan(at(0.0)), Plan::Wait);
    }

    #[test]
    fn a_missed_packet_stops_the_polling_and_a_late_one_keeps_the_rhythm() {
        let mut rhythm = learned(&[0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(rhythm.plan(at(10.5)), Plan::Wait, "the window passed");
        assert_eq!(
            rhythm.plan(at(12.0)),
            Plan::Wait,
            "no poll for the next period"
        );
        assert_eq!(rhythm.plan(at(13.95)), Plan::Wait);
        // It was only late (5 %): the rhythm holds, the next is due a period after it.
        rhythm.arrived(at(10.1));
        assert_eq!(rhythm.expected(), Some(at(12.125)));
        // Traffic that resumes after a pause has to agree again.
        rhythm.arrived(at(17.0));
        assert_eq!(rhythm.expected(), None);
        for t in [19.0, 21.0, 23.0] {
            rhythm.arrived(at(t));
        }
        assert_eq!(
            rhythm.expected(),
            None,
            "the 6.9 ms gap is among the last four"
        );
        rhythm.arrived(at(25.0));
        assert_eq!(rhythm.expected(), Some(at(27.0)));
    }
}
