//! How long to wait before trying a failed call again.

use std::time::Duration;

use rand::Rng;

/// The wait before each retry: exponential (doubling from `first` up to
/// `max`, for ever) or a configured schedule (one wait per retry; at its
/// end the caller gives up). Every wait is jittered downwards, so senders
/// that failed together do not come back together, and is never shorter
/// than the wait the server asked for (`Retry-After`).
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    steps: Steps,
}

#[derive(Debug, Clone, PartialEq)]
enum Steps {
    Exponential { first: Duration, max: Duration },
    Schedule(Vec<Duration>),
}

impl Backoff {
    /// `first`, `2·first`, `4·first`, … up to `max`, each drawn from its
    /// upper half ("equal jitter").
    pub fn exponential(first: Duration, max: Duration) -> Backoff {
        Backoff { steps: Steps::Exponential { first, max: max.max(first) } }
    }

    /// The configured waits, each drawn from its top tenth (an operator who
    /// wrote "5m" gets about five minutes, never more).
    pub fn schedule(waits: Vec<Duration>) -> Backoff {
        Backoff { steps: Steps::Schedule(waits) }
    }

    /// The wait after the `failures`-th failure in a row (1 for the first),
    /// at least `retry_after`; `None` when the schedule is used up.
    pub fn wait(&self, failures: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let (base, spread) = match &self.steps {
            Steps::Exponential { first, max } => {
                let doublings = failures.saturating_sub(1).min(32);
                (first.saturating_mul(1 << doublings.min(31)).min(*max), 0.5)
            }
            Steps::Schedule(waits) => (*waits.get(failures.saturating_sub(1) as usize)?, 0.1),
        };
        let jittered = base.mul_f64(1.0 - spread * rand::rng().random::<f64>());
        Some(jittered.max(retry_after.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_waits_double_within_their_jitter() {
        let b = Backoff::exponential(Duration::from_millis(200), Duration::from_secs(30));
        for _ in 0..200 {
            let w = |n| b.wait(n, None).unwrap();
            assert!((100..=200).contains(&w(1).as_millis()), "{:?}", w(1));
            assert!((400..=800).contains(&w(3).as_millis()), "{:?}", w(3));
            assert!((15_000..=30_000).contains(&w(20).as_millis()), "{:?}", w(20));
            assert!((15_000..=30_000).contains(&w(u32::MAX).as_millis()));
        }
    }

    #[test]
    fn a_schedule_ends_and_retry_after_is_a_floor() {
        let b = Backoff::schedule(vec![Duration::from_secs(5), Duration::from_secs(300)]);
        let first = b.wait(1, None).unwrap();
        assert!(first <= Duration::from_secs(5) && first >= Duration::from_millis(4500), "{first:?}");
        assert!(b.wait(2, None).unwrap() >= Duration::from_secs(270));
        assert_eq!(b.wait(3, None), None);
        assert_eq!(b.wait(3, Some(Duration::from_secs(1))), None, "retry-after does not extend a schedule");
        assert_eq!(b.wait(1, Some(Duration::from_secs(60))), Some(Duration::from_secs(60)));
        let e = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(e.wait(1, Some(Duration::from_secs(9))), Some(Duration::from_secs(9)));
    }
}
