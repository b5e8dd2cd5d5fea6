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

    /// What to do at `now`, idle. A prediction that passed without a packet is forgotten
    /// (the rhythm is learned again from the next spells), so absent traffic costs one
    /// poll of twice the lead.
    pub fn plan(&mut self, now: Instant) -> Plan {
        let (Some(period), Some(last)) = (self.period(), self.last) else {
            return Plan::Wait;
        };
        let (next, lead) = (last + period, self.lead_for(period));
        if now + lead < next {
            Plan::WakeAt(next - lead)
        } else if now <= next + lead {
            Plan::Poll
        } else {
            self.count = 0;
            Plan::Wait
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
        let mut rhythm = learned(&[0.0, 2.0, 4.01, 5.99, 8.0]);
        assert_eq!(rhythm.expected(), Some(at(10.0)));
        // Well before: wake at the lead; within the lead either side: poll.
        assert_eq!(rhythm.plan(at(8.1)), Plan::WakeAt(at(9.85)));
        assert_eq!(rhythm.plan(at(9.9)), Plan::Poll);
        assert_eq!(rhythm.plan(at(10.1)), Plan::Poll);
    }

    #[test]
    fn a_long_period_polls_from_further_ahead() {
        let mut rhythm = learned(&[0.0, 200.0, 400.0, 600.0, 800.0]);
        // 200 ms / 128 = 1.56 ms, capped at 4 leads: 600 µs.
        assert_eq!(rhythm.plan(at(900.0)), Plan::WakeAt(at(999.4)));
        assert_eq!(rhythm.plan(at(1000.55)), Plan::Poll);
        assert_eq!(rhythm.plan(at(1000.65)), Plan::Wait);
    }

    #[test]
    fn too_few_or_disagreeing_gaps_predict_nothing() {
        assert_eq!(learned(&[0.0, 2.0, 4.0, 6.0]).expected(), None);
        let mut jittery = learned(&[0.0, 2.0, 4.0, 6.5, 8.5]);
        assert_eq!(jittery.expected(), None);
        assert_eq!(jittery.plan(at(9.0)), Plan::Wait);
        // Gaps outside the periods worth learning reset it.
        assert_eq!(learned(&[0.0, 0.5, 1.0, 1.5, 2.0]).expected(), None);
        let long_break = learned(&[0.0, 2.0, 4.0, 6.0, 8.0, 20_000.0, 20_002.0]);
        assert_eq!(long_break.expected(), None);
        assert_eq!(Rhythm::new(Duration::ZERO).plan(at(0.0)), Plan::Wait);
    }

    #[test]
    fn a_missed_prediction_is_forgotten_and_learned_again() {
        let mut rhythm = learned(&[0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(rhythm.plan(at(10.5)), Plan::Wait, "the packet never came");
        assert_eq!(rhythm.expected(), None);
        assert_eq!(rhythm.plan(at(12.0)), Plan::Wait);
        for t in [13.0, 15.0, 17.0, 19.0] {
            rhythm.arrived(at(t));
        }
        assert_eq!(
            rhythm.expected(),
            None,
            "the 5 ms gap is among the last four"
        );
        rhythm.arrived(at(21.0));
        assert_eq!(rhythm.expected(), Some(at(23.0)));
    }
}
