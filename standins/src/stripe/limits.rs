//! Rate limits, the per-(customer, meter) concurrency rule and fault injection.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Global request-rate limits, per UTC second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Meter-event calls (v1 `meter_events`, v2 `meter_event_stream`) per second.
    pub meter_event_calls: Option<u32>,
    /// Every other call per second.
    pub other_calls: Option<u32>,
    /// Meter-event calls count toward one shared budget with every other call
    /// (`other_calls` is then the one limit).
    pub shared: bool,
}

impl RateLimits {
    /// Live mode: meter events have their own 1,000 calls/s; other calls 100/s.
    pub const LIVE: RateLimits = RateLimits { meter_event_calls: Some(1000), other_calls: Some(100), shared: false };
    /// Test mode and sandboxes: meter events count toward the basic 25 req/s.
    pub const TEST_MODE: RateLimits = RateLimits { meter_event_calls: None, other_calls: Some(25), shared: true };
    pub const UNLIMITED: RateLimits = RateLimits { meter_event_calls: None, other_calls: None, shared: false };
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::LIVE
    }
}

/// Fixed one-second windows for the two budgets.
#[derive(Debug, Default)]
pub struct RateWindows {
    second: i64,
    meter: u32,
    other: u32,
}

impl RateWindows {
    /// Count one call in `now_second`; `false` when it is over its limit.
    pub fn admit(&mut self, limits: &RateLimits, now_second: i64, meter_call: bool) -> bool {
        if now_second != self.second {
            *self = RateWindows { second: now_second, meter: 0, other: 0 };
        }
        let (used, limit) = if meter_call && !limits.shared {
            (&mut self.meter, limits.meter_event_calls)
        } else {
            (&mut self.other, limits.other_calls)
        };
        match limit {
            Some(l) if *used >= l => false,
            _ => {
                *used += 1;
                true
            }
        }
    }
}

/// One injected misbehaviour of a meter-event call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// 429 `rate_limit`; nothing recorded.
    RateLimit,
    /// 500 `api_error` with `Stripe-Should-Retry: true`; nothing recorded.
    ServerError,
    /// The event is recorded, but the answer comes only after `slow_delay`.
    Slow,
    /// TCP reset with no answer, before the event is recorded.
    ResetBeforeRecord,
    /// TCP reset with no answer, after the event is recorded (and its answer
    /// saved under the idempotency key, as Stripe would).
    ResetAfterRecord,
}

/// Per-call probabilities (0.0–1.0), checked in the order of the fields.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultPlan {
    pub rate_limit: f64,
    pub server_error: f64,
    pub slow: f64,
    pub reset_before_record: f64,
    pub reset_after_record: f64,
}

/// Where faults come from: a queue of forced ones, then the seeded dice.
#[derive(Debug)]
pub struct FaultSource {
    pub plan: FaultPlan,
    pub queue: VecDeque<Fault>,
    rng: StdRng,
}

impl FaultSource {
    pub fn new(seed: u64, plan: FaultPlan) -> Self {
        FaultSource { plan, queue: VecDeque::new(), rng: StdRng::seed_from_u64(seed) }
    }

    pub fn reseed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// The fault for the next call, if any.
    pub fn draw(&mut self) -> Option<Fault> {
        if let Some(f) = self.queue.pop_front() {
            return Some(f);
        }
        let p = self.plan;
        let table = [
            (p.rate_limit, Fault::RateLimit),
            (p.server_error, Fault::ServerError),
            (p.slow, Fault::Slow),
            (p.reset_before_record, Fault::ResetBeforeRecord),
            (p.reset_after_record, Fault::ResetAfterRecord),
        ];
        if table.iter().all(|(prob, _)| *prob <= 0.0) {
            return None;
        }
        let roll: f64 = self.rng.random();
        let mut acc = 0.0;
        for (prob, fault) in table {
            acc += prob.max(0.0);
            if roll < acc {
                return Some(fault);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_limits_keep_meter_events_apart() {
        let mut w = RateWindows::default();
        let l = RateLimits { meter_event_calls: Some(2), other_calls: Some(1), shared: false };
        assert!(w.admit(&l, 10, true));
        assert!(w.admit(&l, 10, true));
        assert!(!w.admit(&l, 10, true));
        assert!(w.admit(&l, 10, false));
        assert!(!w.admit(&l, 10, false));
        // a new second starts afresh
        assert!(w.admit(&l, 11, true));
    }

    #[test]
    fn test_mode_shares_one_budget() {
        let mut w = RateWindows::default();
        let l = RateLimits::TEST_MODE;
        for _ in 0..25 {
            assert!(w.admit(&l, 5, true));
        }
        assert!(!w.admit(&l, 5, false));
        assert!(!w.admit(&l, 5, true));
        assert!(RateWindows::default().admit(&RateLimits::UNLIMITED, 5, true));
    }

    #[test]
    fn faults_are_seeded_and_queued_first() {
        let plan = FaultPlan { server_error: 0.5, ..FaultPlan::default() };
        let draws = |seed| {
            let mut s = FaultSource::new(seed, plan);
            (0..50).map(|_| s.draw()).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        let n = draws(7).iter().filter(|f| f.is_some()).count();
        assert!((10..=40).contains(&n), "about half: {n}");
        let mut s = FaultSource::new(1, FaultPlan::default());
        assert_eq!(s.draw(), None);
        s.queue.push_back(Fault::Slow);
        assert_eq!(s.draw(), Some(Fault::Slow));
        assert_eq!(s.draw(), None);
    }
}
