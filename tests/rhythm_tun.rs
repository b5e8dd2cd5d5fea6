//! Predictive polling on a real TUN: steady pings end idle spells at a rhythm that the
//! event loop learns (src/rhythm.rs) and `tunstack ss` reports. Needs root.

mod common;

use common::{Netns, READY_TIMEOUT, STACK_V4, Stack, describe, poll_until, require_root, ss};
use std::time::Duration;

/// An idle spell's end as the stack logs it (`tunstack::runtime` at trace level): when,
/// on the stack's clock in whole milliseconds as smoltcp prints an `Instant`, and the
/// rhythm's own line after it.
struct IdleSpellEnd {
    at_ms: f64,
    rhythm: String,
}

fn idle_spell_ends(stderr: &str) -> Vec<IdleSpellEnd> {
    stderr
        .lines()
        .filter_map(|line| {
            let (at, rhythm) = line
                .split_once("an idle spell ended at ")?
                .1
                .split_once("s; ")?;
            Some(IdleSpellEnd {
                at_ms: (at.parse::<f64>().ok()? * 1000.0).round(),
                rhythm: rhythm.to_string(),
            })
        })
        .collect()
}

/// The `rhythm:` line of a `tunstack ss` report.
fn rhythm_line(report: &str) -> String {
    report
        .lines()
        .find(|l| l.starts_with("rhythm:"))
        .unwrap_or_else(|| panic!("no rhythm line in tunstack ss:\n{report}"))
        .to_string()
}

/// The learned period on a rhythm line, if it has one.
fn learned_period_ms(line: &str) -> Option<f64> {
    line.split_once("a packet every ")?
        .1
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// What src/rhythm.rs's rule says of the last four gaps between idle-spell ends: they
/// agree if each is within 10 % of their mean (`GAPS`, `TOLERANCE_PCT`), and a learned
/// period is that mean. The log has whole milliseconds, so a gap is known to 1 ms and the
/// mean to 0.25 ms: near the tolerance the rule could go either way.
#[derive(Debug, PartialEq)]
enum Agreement {
    Agree,
    Disagree,
    Unsure,
}

/// The mean of the last four gaps (None with fewer than five ends) and the verdict on them.
fn rhythm_rule(ends: &[IdleSpellEnd]) -> (Option<f64>, Agreement) {
    if ends.len() < 5 {
        return (None, Agreement::Disagree);
    }
    let last: Vec<f64> = ends[ends.len() - 5..].iter().map(|e| e.at_ms).collect();
    let gaps: Vec<f64> = last.windows(2).map(|w| w[1] - w[0]).collect();
    let mean = (last[4] - last[0]) / 4.0;
    let (gap_err, mean_err) = (1.0 + 0.01, 0.25 + 0.01);
    let off = gaps.iter().map(|g| (g - mean).abs()).fold(0.0, f64::max);
    let verdict = if gaps.iter().any(|&g| g < 2.0) {
        Agreement::Unsure // maybe under the 1 ms shortest period, which resets the rhythm
    } else if off + gap_err + mean_err <= 0.1 * (mean - mean_err) {
        Agreement::Agree
    } else if off - gap_err - mean_err > 0.1 * (mean + mean_err) {
        Agreement::Disagree
    } else {
        Agreement::Unsure
    };
    (Some(mean), verdict)
}

/// Pings 50 ms apart end idle spells at a steady period: the loop hands each to the rhythm
/// learner and `tunstack ss` reports what it learned. On a busy machine the pings come
/// anywhere from 46 to 74 ms apart, so no period is expected of them: the stack logs when
/// each idle spell ended, and what ss reports must be what src/rhythm.rs's rule makes of
/// those very times (the rule itself is unit-tested there with exact gaps).
#[test]
fn steady_pings_are_learned_as_a_rhythm() {
    if !require_root("steady_pings_are_learned_as_a_rhythm") {
        return;
    }
    let netns = Netns::new("ping-rhythm");
    let logging = [
        "RUST_LOG=info,tunstack::runtime=trace",
        Stack::binary(),
        "echo",
    ];
    let stack = Stack::spawn_command(netns.command("env", &logging));
    if let Err(reason) = stack.wait_for_line("listening on", READY_TIMEOUT) {
        panic!("the stack did not start: {reason}\n{}", stack.stderr());
    }
    let args = ["-4", "-n", "-c", "20", "-i", "0.05", "-w", "20", STACK_V4];
    let output = netns.run(Duration::from_secs(30), "ping", &args);
    assert!(
        output.status.success(),
        "ping failed:\n{}",
        describe(&output)
    );
    // The loop logs an idle spell's end before it can answer a later ss, but our log
    // reader may lag, and a stray packet (the kernel's MLD report) may still come: ask
    // again until ss and the last state logged agree.
    let (mut line, mut ends) = (String::new(), Vec::new());
    let agreed = poll_until(Duration::from_secs(10), || {
        line = rhythm_line(&ss(&netns));
        ends = idle_spell_ends(&stack.stderr());
        ends.last().is_some_and(|end| end.rhythm == line)
    });
    let logged = ends.last().map(|end| end.rhythm.as_str());
    assert!(
        agreed,
        "tunstack ss says {line:?}, the last idle spell logged {logged:?}"
    );
    let times: Vec<f64> = ends.iter().map(|end| end.at_ms).collect();
    let (mean, verdict) = rhythm_rule(&ends);
    let context = format!("{line}\nidle spells ended at {times:?} ms: {verdict:?}");
    match learned_period_ms(&line) {
        Some(period) => {
            assert_ne!(
                verdict,
                Agreement::Disagree,
                "learned from gaps that disagree: {context}"
            );
            let mean = mean.unwrap_or_else(|| panic!("learned from too few gaps: {context}"));
            assert!(
                (period - mean).abs() <= 0.26,
                "learned {period} ms from gaps of {mean} ms on average: {context}"
            );
        }
        None => assert_ne!(
            verdict,
            Agreement::Agree,
            "gaps that agree were not learned: {context}"
        ),
    }
    eprintln!("{context}"); // seen with --nocapture
    stack.assert_no_panic();
}
