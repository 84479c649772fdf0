//! A request-rate limiter: callers take evenly spaced slots (a small burst
//! allowed), and a rate-limit answer from Stripe pauses everyone.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

pub struct Limiter {
    interval: Duration,
    burst: Duration,
    state: Mutex<State>,
}

struct State {
    /// The next free slot.
    next: Instant,
    paused_until: Option<Instant>,
}

impl Limiter {
    /// `per_second` calls a second on average; a burst of a twentieth of a
    /// second's worth, at most 5 calls, may go at once (a server counting
    /// calls per second sees at most the rate plus that).
    pub fn new(per_second: f64) -> Limiter {
        let interval = Duration::from_secs_f64(1.0 / per_second.max(0.001));
        let burst = interval.mul_f64((per_second / 20.0).floor().clamp(0.0, 5.0));
        let now = Instant::now();
        let next = now.checked_sub(burst).unwrap_or(now);
        Limiter { interval, burst, state: Mutex::new(State { next, paused_until: None }) }
    }

    /// Waits for a slot.
    pub async fn acquire(&self) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            // Idle time earns at most `burst` of slots; a pause earns none.
            let floor = match s.paused_until {
                Some(p) if p > now => p,
                _ => now.checked_sub(self.burst).unwrap_or(now),
            };
            let slot = s.next.max(floor);
            s.next = slot + self.interval;
            slot.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Nobody gets a slot for `d` (Stripe said the account is over its rate).
    pub fn pause(&self, d: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let until = Instant::now() + d;
        s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
        s.next = s.next.max(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_and_a_pause_holds_everyone() {
        let l = Limiter::new(100.0); // 10 ms apart, burst of 5
        let start = Instant::now();
        for _ in 0..105 {
            l.acquire().await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(990) && took <= Duration::from_millis(1010), "{took:?}");
        l.pause(Duration::from_secs(2));
        let t = Instant::now();
        l.acquire().await;
        assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
