//! Admission of OTLP requests: a global number of requests handled at once
//! (with `max_request_bytes`, this bounds the memory of requests in flight)
//! and a share of it per caller, so one caller's slow or stalled uploads
//! cannot take every slot. A caller is its API key (tenant or service), or
//! its address when tally runs open. Requests are authenticated before they
//! are admitted, so unauthenticated ones never hold a slot.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tally_core::Principal;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// Callers remembered at most; beyond, idle ones are forgotten.
const MAX_CALLERS: usize = 10_000;

/// Slots held by one admitted request, until it is answered.
#[derive(Debug)]
pub struct Admission {
    _caller: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No slot freed within the wait.
    Busy,
    /// Shutting down.
    Closed,
}

#[derive(Debug)]
pub struct Admissions {
    global: Arc<Semaphore>,
    per_caller: usize,
    callers: Mutex<HashMap<String, Arc<Semaphore>>>,
    wait: Duration,
}

/// Who a request's slots are counted against.
pub fn caller_key(principal: Option<&Principal>, peer: Option<SocketAddr>) -> String {
    match principal {
        Some(Principal::Tenant(t)) => format!("tenant:{t}"),
        Some(Principal::Service(name)) => format!("service:{name}"),
        Some(Principal::Admin) => "admin".to_owned(),
        None => peer.map_or_else(|| "unknown".to_owned(), |p| format!("ip:{}", p.ip())),
    }
}

impl Admissions {
    /// `max` requests at once, at most `per_caller` of one caller; a request
    /// waits up to `wait` for a slot.
    pub fn new(max: usize, per_caller: usize, wait: Duration) -> Admissions {
        let max = max.max(1);
        Admissions {
            global: Arc::new(Semaphore::new(max)),
            per_caller: per_caller.clamp(1, max),
            callers: Mutex::new(HashMap::new()),
            wait,
        }
    }

    fn caller(&self, key: &str) -> Arc<Semaphore> {
        let mut callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = callers.get(key) {
            return s.clone();
        }
        if callers.len() >= MAX_CALLERS {
            let per_caller = self.per_caller;
            callers.retain(|_, s| s.available_permits() < per_caller);
        }
        let s = Arc::new(Semaphore::new(self.per_caller));
        callers.insert(key.to_owned(), s.clone());
        s
    }

    /// A slot for `caller`'s request: its own share first, then the global one.
    pub async fn admit(&self, caller: &str) -> Result<Admission, Refused> {
        let deadline = tokio::time::Instant::now() + self.wait;
        let caller = acquire(self.caller(caller), deadline).await?;
        let global = acquire(self.global.clone(), deadline).await?;
        Ok(Admission { _caller: caller, _global: global })
    }
}

async fn acquire(s: Arc<Semaphore>, deadline: tokio::time::Instant) -> Result<OwnedSemaphorePermit, Refused> {
    match s.clone().try_acquire_owned() {
        Ok(p) => Ok(p),
        Err(TryAcquireError::Closed) => Err(Refused::Closed),
        Err(TryAcquireError::NoPermits) => match tokio::time::timeout_at(deadline, s.acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(Refused::Closed),
            Err(_) => Err(Refused::Busy),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_caller_cannot_take_every_slot() {
        let a = Admissions::new(4, 2, Duration::from_millis(20));
        let held = [a.admit("tenant:a").await.unwrap(), a.admit("tenant:a").await.unwrap()];
        assert_eq!(a.admit("tenant:a").await.unwrap_err(), Refused::Busy);
        // Others still get in, up to the global bound.
        let b = [a.admit("tenant:b").await.unwrap(), a.admit("tenant:c").await.unwrap()];
        assert_eq!(a.admit("tenant:d").await.unwrap_err(), Refused::Busy);
        drop(held);
        assert!(a.admit("tenant:a").await.is_ok());
        drop(b);
    }
}
