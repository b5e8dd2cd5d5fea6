//! The guard in front of smoltcp: what RFC 9293, RFC 5961 and RFC 7323 say to do with an
//! arriving segment of a synchronized connection, decided before smoltcp may see it.
//!
//! smoltcp 0.14 accepts any in-window RST (`socket/tcp.rs`, the `(_, TcpControl::Rst, _)`
//! arm at line 1620 and the window check at 1715), drops a segment whose ACK is below
//! SND.UNA together with its text and without a reply ("duplicate ACK", line 1684), and
//! does no PAWS at all (it only echoes timestamps). The guard keeps, per connection, what
//! it has learnt from the segments both ways — RCV.NXT, SND.UNA, the peer's largest
//! window, TS.Recent — and returns a [`Decision`]; the stack applies it (`ingress.rs`).
//! Pure: no smoltcp internals, no clock but the `now` passed in, no device.

use super::sack::after;
use crate::packet::TcpFlags;
use smoltcp::socket::tcp::State;
use smoltcp::time::{Duration, Instant};

/// At most one answer (challenge or duplicate ACK) per connection this often: RFC 5961 §7
/// asks for a limit; Linux's per-socket one (`tcp_invalid_ratelimit`) is 500 ms.
pub(crate) const ANSWER_INTERVAL: Duration = Duration::from_millis(500);

/// TS.Recent is forgotten after this long without an update (RFC 7323 §5.5: 24 days).
const TS_RECENT_LIFETIME: Duration = Duration::from_secs(24 * 24 * 3600);

/// Assumed for MAX.SND.WND until the peer has advertised a window.
const DEFAULT_MAX_SND_WND: u32 = 65_535;

/// The rule that decided, for the trace and the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardRule {
    /// RFC 5961 §3.2: an RST inside the window but not at RCV.NXT gets a challenge ACK.
    RstNotExact,
    /// RFC 5961 §3.2: an RST outside the window is dropped silently.
    RstOutOfWindow,
    /// RFC 5961 §4.2: a SYN on a synchronized connection gets a challenge ACK.
    SynSynchronized,
    /// RFC 5961 §5.2: an ACK older than SND.UNA − MAX.SND.WND is dropped with an ACK.
    AckTooOld,
    /// RFC 9293 §3.10.7.4: an ACK below SND.UNA is ignored, the segment's text processed.
    AckOld,
    /// RFC 7323 §5.3: a TSval older than TS.Recent (PAWS) is dropped with an ACK.
    Paws,
}

impl GuardRule {
    /// What the trace says.
    pub fn describe(self) -> &'static str {
        match self {
            GuardRule::RstNotExact => "RST in window, seq != RCV.NXT (RFC 5961 3.2)",
            GuardRule::RstOutOfWindow => "RST out of window (RFC 5961 3.2)",
            GuardRule::SynSynchronized => "SYN on a synchronized connection (RFC 5961 4.2)",
            GuardRule::AckTooOld => "ACK below SND.UNA - MAX.SND.WND (RFC 5961 5.2)",
            GuardRule::AckOld => "ACK below SND.UNA ignored (RFC 9293 3.10.7.4)",
            GuardRule::Paws => "TSval older than TS.Recent (PAWS, RFC 7323 5.3)",
        }
    }
}

/// What to do with one arriving segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Hand it to smoltcp as it is.
    Deliver,
    /// Drop it; answer with an ACK (a challenge ACK, or the ACK RFC 5961 §5.2 and RFC 7323
    /// ask for) unless `limited`: one was sent less than [`ANSWER_INTERVAL`] ago.
    Answer { rule: GuardRule, limited: bool },
    /// Drop it without a word.
    Drop(GuardRule),
    /// Hand it to smoltcp with its ACK number replaced by `ack` (SND.UNA).
    IgnoreAck { ack: u32 },
}

/// One arriving segment, as the guard reads it (from the stack's parsed view).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arriving {
    pub flags: TcpFlags,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub payload_len: usize,
    pub tsval: Option<u32>,
    pub wscale: Option<u8>,
}

/// What the stack knows of the connection besides the guard's own state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Known {
    pub state: State,
    /// The receive window smoltcp offers now, in bytes.
    pub rcv_wnd: u32,
    /// The ACK number of the last segment we sent.
    pub last_ack_sent: Option<u32>,
}

/// Per-connection state of the guard.
#[derive(Debug, Default, Clone)]
pub(crate) struct Guard {
    rcv_nxt: Option<u32>,
    snd_una: Option<u32>,
    /// The peer's window scale (RFC 7323 §2): applies to every window but the SYN's.
    /// Unknown (no SYN seen: a SYN-cookie connection) counts as the largest, 14.
    peer_shift: Option<u8>,
    max_snd_wnd: u32,
    ts_recent: Option<(u32, Instant)>,
    last_answer: Option<Instant>,
}

impl Guard {
    /// Decides what becomes of `seg`, arriving `now` on a connection in `known.state`.
    pub fn check(&mut self, seg: &Arriving, known: &Known, now: Instant) -> Decision {
        if let Some(ack) = known.last_ack_sent {
            self.rcv_nxt = Some(
                self.rcv_nxt
                    .map_or(ack, |n| if after(ack, n) { ack } else { n }),
            );
        }
        if !synchronized(known.state) {
            return Decision::Deliver;
        }
        if !seg.flags.rst && self.paws_rejects(seg, now) {
            return self.answer(GuardRule::Paws, now);
        }
        if seg.flags.rst {
            return self.check_rst(seg, known, now);
        }
        if seg.flags.syn && known.state != State::SynReceived {
            return self.answer(GuardRule::SynSynchronized, now);
        }
        if seg.flags.ack && known.state != State::SynReceived {
            return self.check_ack(seg, now);
        }
        Decision::Deliver
    }

    fn check_rst(&mut self, seg: &Arriving, known: &Known, now: Instant) -> Decision {
        let Some(rcv_nxt) = self.rcv_nxt else {
            return Decision::Deliver;
        };
        if seg.seq == rcv_nxt {
            return Decision::Deliver;
        }
        let offset = seg.seq.wrapping_sub(rcv_nxt);
        if after(seg.seq, rcv_nxt) && offset < known.rcv_wnd.max(1) {
            self.answer(GuardRule::RstNotExact, now)
        } else {
            Decision::Drop(GuardRule::RstOutOfWindow)
        }
    }

    fn check_ack(&mut self, seg: &Arriving, now: Instant) -> Decision {
        let Some(snd_una) = self.snd_una else {
            return Decision::Deliver;
        };
        if !after(snd_una, seg.ack) {
            return Decision::Deliver;
        }
        let max_wnd = match self.max_snd_wnd {
            0 => DEFAULT_MAX_SND_WND,
            w => w,
        };
        if snd_una.wrapping_sub(seg.ack) > max_wnd {
            return self.answer(GuardRule::AckTooOld, now);
        }
        if seg.payload_len > 0 || seg.flags.fin {
            Decision::IgnoreAck { ack: snd_una }
        } else {
            // An old pure ACK says nothing new; smoltcp would drop it too.
            Decision::Drop(GuardRule::AckOld)
        }
    }

    /// RFC 7323 §5.3 R1, with TS.Recent invalidated after 24 idle days (§5.5).
    fn paws_rejects(&self, seg: &Arriving, now: Instant) -> bool {
        match (self.ts_recent, seg.tsval) {
            (Some((recent, at)), Some(tsval)) => {
                now < at + TS_RECENT_LIFETIME && after(recent, tsval)
            }
            _ => false,
        }
    }

    fn answer(&mut self, rule: GuardRule, now: Instant) -> Decision {
        let limited = self
            .last_answer
            .is_some_and(|at| now < at + ANSWER_INTERVAL);
        if !limited {
            self.last_answer = Some(now);
        }
        Decision::Answer { rule, limited }
    }

    /// smoltcp took `seg` (delivered as it was, or with its ACK ignored): learn from it.
    /// `rcv_growth` is how many bytes it made contiguous in the receive buffer, `fin_taken`
    /// whether its FIN was accepted, `snd_max` the end of what we had sent.
    pub fn delivered(
        &mut self,
        seg: &Arriving,
        rcv_growth: usize,
        fin_taken: bool,
        snd_max: Option<u32>,
        now: Instant,
    ) {
        let in_order = self.rcv_nxt.is_none_or(|n| !after(seg.seq, n));
        if seg.flags.syn {
            self.rcv_nxt = Some(seg.seq.wrapping_add(1));
            self.peer_shift = Some(seg.wscale.unwrap_or(0).min(14));
        } else if let Some(n) = self.rcv_nxt.as_mut() {
            *n = n.wrapping_add(rcv_growth as u32 + u32::from(fin_taken));
        }
        if seg.flags.ack && !seg.flags.rst {
            let acceptable = snd_max.is_none_or(|max| !after(seg.ack, max));
            if acceptable && self.snd_una.is_none_or(|una| after(seg.ack, una)) {
                self.snd_una = Some(seg.ack);
            }
            if !seg.flags.syn {
                let window = u32::from(seg.window) << self.peer_shift.unwrap_or(14);
                self.max_snd_wnd = self.max_snd_wnd.max(window);
            }
        }
        // RFC 7323 §4.3: TS.Recent from segments that are in order (SEG.SEQ <= RCV.NXT).
        if let Some(tsval) = seg.tsval
            && in_order
            && self
                .ts_recent
                .is_none_or(|(recent, _)| !after(recent, tsval))
        {
            self.ts_recent = Some((tsval, now));
        }
    }

    /// The TSval an answer should echo (TS.Recent), if timestamps are in use.
    pub fn ts_recent(&self) -> Option<u32> {
        self.ts_recent.map(|(ts, _)| ts)
    }

    /// The guard's RCV.NXT, once known.
    pub fn rcv_nxt(&self) -> Option<u32> {
        self.rcv_nxt
    }

    /// The guard's SND.UNA, once known.
    pub fn snd_una(&self) -> Option<u32> {
        self.snd_una
    }
}

/// States in which the peer's sequence numbers are known (RFC 9293's "synchronized"),
/// TIME-WAIT aside: its SYN and RST handling (RFC 6191) stays smoltcp's and the stack's.
fn synchronized(state: State) -> bool {
    matches!(
        state,
        State::SynReceived
            | State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait
            | State::Closing
            | State::LastAck
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER_ISN: u32 = 1000;
    const OUR_ISN: u32 = 5000;
    const SND_MAX: Option<u32> = Some(OUR_ISN + 1 + 10_000);

    fn flags(spec: &str) -> TcpFlags {
        TcpFlags {
            syn: spec.contains('S'),
            ack: spec.contains('A'),
            fin: spec.contains('F'),
            rst: spec.contains('R'),
            psh: spec.contains('P'),
        }
    }

    fn seg(spec: &str, seq: u32, ack: u32, len: usize, tsval: Option<u32>) -> Arriving {
        Arriving {
            flags: flags(spec),
            seq,
            ack,
            window: 1000,
            payload_len: len,
            tsval,
            wscale: None,
        }
    }

    fn established() -> Known {
        Known {
            state: State::Established,
            rcv_wnd: 65_535,
            last_ack_sent: Some(PEER_ISN + 1),
        }
    }

    /// A guard that has seen the handshake and the peer acknowledge 10,000 bytes.
    fn guard(now: Instant) -> Guard {
        let mut guard = Guard::default();
        let known = established();
        guard.delivered(&seg("S", PEER_ISN, 0, 0, Some(100)), 0, false, None, now);
        let ack = seg("A", PEER_ISN + 1, OUR_ISN + 1 + 10_000, 0, Some(100));
        assert_eq!(guard.check(&ack, &known, now), Decision::Deliver);
        guard.delivered(&ack, 0, false, SND_MAX, now);
        guard
    }

    #[test]
    fn exact_rst_is_delivered_and_an_inexact_one_in_window_challenged_once() {
        let now = Instant::from_secs(10);
        let mut g = guard(now);
        let known = established();
        let exact = seg("R", PEER_ISN + 1, 0, 0, None);
        assert_eq!(g.check(&exact, &known, now), Decision::Deliver);
        let inexact = seg("R", PEER_ISN + 100, 0, 0, None);
        let challenge = Decision::Answer {
            rule: GuardRule::RstNotExact,
            limited: false,
        };
        assert_eq!(g.check(&inexact, &known, now), challenge);
        let limited = Decision::Answer {
            rule: GuardRule::RstNotExact,
            limited: true,
        };
        assert_eq!(g.check(&inexact, &known, now), limited);
        let later = now + ANSWER_INTERVAL;
        assert_eq!(g.check(&inexact, &known, later), challenge);
        let outside = seg("R", PEER_ISN + 1 + 70_000, 0, 0, None);
        assert_eq!(
            g.check(&outside, &known, later),
            Decision::Drop(GuardRule::RstOutOfWindow)
        );
    }

    #[test]
    fn rcv_nxt_follows_what_smoltcp_took_and_what_we_acknowledged() {
        let now = Instant::from_secs(1);
        let mut g = guard(now);
        let data = seg("PA", PEER_ISN + 1, OUR_ISN + 1 + 10_000, 500, Some(101));
        g.delivered(&data, 500, false, SND_MAX, now);
        assert_eq!(g.rcv_nxt(), Some(PEER_ISN + 501));
        let mut known = established();
        known.last_ack_sent = Some(PEER_ISN + 801);
        let exact = seg("R", PEER_ISN + 801, 0, 0, None);
        assert_eq!(g.check(&exact, &known, now), Decision::Deliver);
    }

    #[test]
    fn syn_on_an_established_connection_is_challenged() {
        let now = Instant::from_secs(1);
        let mut g = guard(now);
        let syn = seg("S", PEER_ISN + 5000, 0, 0, None);
        assert_eq!(
            g.check(&syn, &established(), now),
            Decision::Answer {
                rule: GuardRule::SynSynchronized,
                limited: false
            }
        );
        let mut half_open = established();
        half_open.state = State::SynReceived;
        assert_eq!(g.check(&syn, &half_open, now), Decision::Deliver);
    }

    #[test]
    fn old_acks_are_ignored_with_their_text_and_far_older_ones_answered() {
        let now = Instant::from_secs(1);
        let mut g = guard(now);
        let una = OUR_ISN + 1 + 10_000;
        let reordered = seg("PA", PEER_ISN + 1, una - 2, 100, Some(100));
        assert_eq!(
            g.check(&reordered, &established(), now),
            Decision::IgnoreAck { ack: una }
        );
        let pure = seg("A", PEER_ISN + 1, una - 2, 0, Some(100));
        assert_eq!(
            g.check(&pure, &established(), now),
            Decision::Drop(GuardRule::AckOld)
        );
        // MAX.SND.WND is the peer's 1000-byte window here.
        let ancient = seg("PA", PEER_ISN + 1, una - 5000, 100, Some(100));
        assert_eq!(
            g.check(&ancient, &established(), now),
            Decision::Answer {
                rule: GuardRule::AckTooOld,
                limited: false
            }
        );
    }

    #[test]
    fn paws_drops_an_older_tsval_but_not_an_rst_nor_after_24_days() {
        let now = Instant::from_secs(1);
        let mut g = guard(now);
        let old = seg("PA", PEER_ISN + 1, OUR_ISN + 1 + 10_000, 10, Some(99));
        assert_eq!(
            g.check(&old, &established(), now),
            Decision::Answer {
                rule: GuardRule::Paws,
                limited: false
            }
        );
        let rst = seg("R", PEER_ISN + 1, 0, 0, Some(99));
        assert_eq!(g.check(&rst, &established(), now), Decision::Deliver);
        let much_later = now + TS_RECENT_LIFETIME;
        assert_eq!(g.check(&old, &established(), much_later), Decision::Deliver);
        assert_eq!(g.ts_recent(), Some(100));
    }

    #[test]
    fn nothing_is_judged_before_the_connection_is_synchronized() {
        let now = Instant::from_secs(1);
        let mut g = Guard::default();
        let mut known = established();
        known.state = State::SynSent;
        let rst = seg("R", 1, 0, 0, None);
        assert_eq!(g.check(&rst, &known, now), Decision::Deliver);
        known.state = State::TimeWait;
        assert_eq!(
            g.check(&seg("S", 9, 0, 0, None), &known, now),
            Decision::Deliver
        );
    }
}
