//! The state machine of one alert instance, as a pure function of its
//! stored state, this round's level and the clock:
//!
//! inactive → pending (the condition holds) → firing (it held for `for`;
//! warning or critical, a change of severity notifies) → resolved (it has
//! not held for `keep_firing_for`) → inactive (or pending again).
//!
//! Each threshold keeps its own "held since" and "last held", so `for` and
//! `keep_firing_for` apply to the escalation to critical and the return to
//! warning as they do to firing and resolving.

use tally_core::alert::{AlertInstance, AlertState, NotificationStatus, Severity};

/// A rule's timing, in ms.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub for_ms: i64,
    pub keep_ms: i64,
    pub repeat_ms: i64,
}

/// Moves `inst` to `now_ms` given the worst threshold the value crosses
/// (`level`); returns what to tell the receivers, if anything. `threshold`
/// gives a severity's threshold, recorded for the notification.
pub fn advance(
    inst: &mut AlertInstance,
    level: Option<Severity>,
    value: Option<f64>,
    threshold: impl Fn(Severity) -> Option<f64>,
    t: Timing,
    now_ms: i64,
) -> Option<NotificationStatus> {
    let firing_at = (inst.state == AlertState::Firing).then_some(inst.severity).flatten();
    let mut on = None;
    for severity in Severity::ALL {
        let (since, last) = match severity {
            Severity::Warning => (&mut inst.warning_since_ms, &mut inst.warning_last_ms),
            Severity::Critical => (&mut inst.critical_since_ms, &mut inst.critical_last_ms),
        };
        if level >= Some(severity) {
            since.get_or_insert(now_ms);
            *last = Some(now_ms);
        } else {
            *since = None;
        }
        let held = since.is_some_and(|s| now_ms - s >= t.for_ms);
        let kept = firing_at >= Some(severity) && last.is_some_and(|l| now_ms - l <= t.keep_ms);
        if held || kept {
            on = Some(severity);
        }
    }
    inst.value = value;
    match (inst.state, on) {
        (AlertState::Firing, Some(s)) if inst.severity == Some(s) => {
            if inst.last_notified_ms.is_none_or(|n| now_ms - n >= t.repeat_ms) {
                inst.last_notified_ms = Some(now_ms);
                return Some(NotificationStatus::Firing);
            }
            None
        }
        (state, Some(s)) => {
            if state != AlertState::Firing {
                inst.started_ms = Some(now_ms);
            }
            inst.state = AlertState::Firing;
            inst.severity = Some(s);
            inst.threshold = threshold(s);
            inst.since_ms = now_ms;
            inst.last_notified_ms = Some(now_ms);
            Some(NotificationStatus::Firing)
        }
        (AlertState::Firing, None) => {
            inst.state = AlertState::Resolved;
            inst.since_ms = now_ms;
            inst.last_notified_ms = Some(now_ms);
            Some(NotificationStatus::Resolved)
        }
        (state, None) => {
            match level {
                // Holds, not yet long enough.
                Some(s) => {
                    if state != AlertState::Pending {
                        inst.state = AlertState::Pending;
                        inst.since_ms = now_ms;
                    }
                    inst.severity = Some(s);
                    inst.threshold = threshold(s);
                }
                // A blip that never fired leaves nothing behind.
                None if state == AlertState::Pending => inst.state = AlertState::Inactive,
                None => {}
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Severity::{Critical, Warning};

    fn blank() -> AlertInstance {
        AlertInstance::inactive("r", r#"{"tenant":"a"}"#, "a", 0)
    }

    const T: Timing = Timing { for_ms: 60_000, keep_ms: 60_000, repeat_ms: 3_600_000 };

    /// Runs levels at 30 s rounds; returns (state, severity, notification) per round.
    fn run(levels: &[Option<Severity>], t: Timing) -> Vec<(AlertState, Option<Severity>, Option<NotificationStatus>)> {
        let mut inst = blank();
        levels
            .iter()
            .enumerate()
            .map(|(i, &level)| {
                let n = advance(&mut inst, level, Some(1.0), |_| Some(1.0), t, i as i64 * 30_000);
                (inst.state, inst.severity, n)
            })
            .collect()
    }

    fn notes(levels: &[Option<Severity>], t: Timing) -> Vec<(usize, NotificationStatus, Option<Severity>)> {
        run(levels, t).into_iter().enumerate().filter_map(|(i, (_, s, n))| n.map(|n| (i, n, s))).collect()
    }

    use NotificationStatus::{Firing, Resolved};

    #[test]
    fn fires_after_for_and_resolves_after_keep() {
        let w = Some(Warning);
        let r = run(&[w, w, w, None, None, None, None], T);
        assert_eq!(r[0].0, AlertState::Pending);
        assert_eq!(r[1].0, AlertState::Pending);
        assert_eq!(r[2], (AlertState::Firing, w, Some(Firing)), "held 60 s at the third round");
        assert_eq!(r[3].0, AlertState::Firing, "kept");
        assert_eq!(r[4].0, AlertState::Firing, "kept: last held 60 s ago");
        assert_eq!(r[5], (AlertState::Resolved, w, Some(Resolved)));
        assert_eq!(r[6], (AlertState::Resolved, w, None));
    }

    #[test]
    fn a_blip_shorter_than_for_pages_nobody() {
        let w = Some(Warning);
        let r = run(&[w, None, w, None, Some(Critical), None], T);
        assert!(r.iter().all(|(_, _, n)| n.is_none()));
        assert_eq!(r[1].0, AlertState::Inactive);
        assert_eq!(r[5].0, AlertState::Inactive);
    }

    #[test]
    fn dips_shorter_than_keep_do_not_flap() {
        let (w, c) = (Some(Warning), Some(Critical));
        // Fires, then alternates on and off every round: one page, no resolve.
        let levels = [w, w, w, None, w, None, w, None, w];
        assert_eq!(notes(&levels, T), vec![(2, Firing, w)]);
        // Escalates only once critical held for `for`, de-escalates after keep.
        let levels = [w, w, w, c, c, c, w, w, w, w, None, None, None];
        assert_eq!(
            notes(&levels, T),
            vec![(2, Firing, w), (5, Firing, c), (8, Firing, w), (12, Resolved, w)],
            "critical at 5 (held 60 s), warning at 8 (critical last held 60+ s before), resolved at 12"
        );
    }

    #[test]
    fn zero_for_and_keep_follow_the_value_and_repeat_re_sends() {
        let t = Timing { for_ms: 0, keep_ms: 0, repeat_ms: 60_000 };
        let (w, c) = (Some(Warning), Some(Critical));
        assert_eq!(
            notes(&[c, c, c, w, None, w], t),
            vec![(0, Firing, c), (2, Firing, c), (3, Firing, w), (4, Resolved, w), (5, Firing, w)]
        );
    }

    proptest::proptest! {
        /// Whatever the sequence: notifications alternate sensibly (a
        /// resolve only after a firing, never two resolves in a row), and an
        /// instance fires only after its condition held for `for`.
        #[test]
        fn notifications_are_consistent(levels in proptest::collection::vec(0u8..3, 1..60)) {
            let levels: Vec<Option<Severity>> =
                levels.iter().map(|l| [None, Some(Warning), Some(Critical)][*l as usize]).collect();
            let r = run(&levels, T);
            let mut firing = false;
            for (i, (state, _, n)) in r.iter().enumerate() {
                match n {
                    Some(Resolved) => { proptest::prop_assert!(firing); firing = false; }
                    Some(Firing) => {
                        if !firing {
                            // The condition held for the last 3 rounds (60 s at 30 s rounds).
                            proptest::prop_assert!(i >= 2 && levels[i - 2..=i].iter().all(Option::is_some));
                        }
                        firing = true;
                    }
                    None => {}
                }
                proptest::prop_assert_eq!(firing, *state == AlertState::Firing);
            }
        }
    }
}
