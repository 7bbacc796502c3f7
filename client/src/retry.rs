//! Bounded retries with exponential backoff and jitter.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

#[cfg(test)]
use crate::xet::XetError;

/// An error that knows whether repeating the request may succeed.
pub trait Retryable {
    /// Whether a later attempt of the same request may succeed.
    fn is_retryable(&self) -> bool;
}

/// How often and how patiently a failed request is repeated.
///
/// Attempt `n` (counting from 1) that fails with a retryable error
/// ([`Retryable::is_retryable`]) waits a random delay in `[d/2, d]` with
/// `d = min(base_delay * 2^(n-1), max_delay)` (or the server's `Retry-After`
/// when it is shorter than `max_delay`), up to `max_attempts` attempts in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay before the second attempt (before jitter).
    pub base_delay: Duration,
    /// Longest delay between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The upper bound of the wait after failed attempt `attempt` (1-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The wait after failed attempt `attempt`: uniform in `[ceiling/2, ceiling]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos))
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or the attempts run out.
    ///
    /// `op` receives the 1-based attempt number. A server's `Retry-After` (seconds)
    /// carried in [`Retry::after`] replaces the computed delay when it is not longer
    /// than `max_delay`.
    pub async fn run<T, E, F, Fut>(&self, mut op: F) -> Result<T, E>
    where
        E: Retryable,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Retry<E>>>,
    {
        let attempts = self.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(Retry { error, after }) => {
                    if attempt >= attempts || !error.is_retryable() {
                        return Err(error);
                    }
                    let wait = match after {
                        Some(a) if a <= self.max_delay => a,
                        _ => self.delay(attempt),
                    };
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// A failed attempt: the error and the server's requested wait, if any.
#[derive(Debug)]
pub struct Retry<E> {
    /// Why the attempt failed.
    pub error: E,
    /// The server's `Retry-After`, if it sent one.
    pub after: Option<Duration>,
}

impl<E> From<E> for Retry<E> {
    fn from(error: E) -> Self {
        Retry { error, after: None }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use reqwest::StatusCode;

    use super::*;

    fn fast(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_range() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(1), Duration::from_millis(200));
        assert_eq!(p.ceiling(2), Duration::from_millis(400));
        assert_eq!(p.ceiling(4), Duration::from_millis(1600));
        assert_eq!(p.ceiling(10), Duration::from_secs(10));
        assert_eq!(p.ceiling(200), Duration::from_secs(10));
        for attempt in 1..8 {
            for _ in 0..50 {
                let d = p.delay(attempt);
                assert!(d <= p.ceiling(attempt) && d >= p.ceiling(attempt) / 2);
            }
        }
    }

    #[tokio::test]
    async fn retries_retryable_errors_a_bounded_number_of_times() {
        let calls = AtomicU32::new(0);
        let r: Result<(), XetError> = fast(3)
            .run(|_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    Err(Retry::from(XetError::from_status(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "u",
                        b"",
                    )))
                }
            })
            .await;
        assert_eq!(
            r.unwrap_err().status(),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn does_not_retry_client_errors_and_stops_on_success() {
        let calls = AtomicU32::new(0);
        let r: Result<(), XetError> = fast(5)
            .run(|_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    Err(Retry::from(XetError::from_status(
                        StatusCode::FORBIDDEN,
                        "u",
                        b"",
                    )))
                }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let r = fast(5)
            .run(|attempt| async move {
                if attempt < 3 {
                    Err(Retry::from(XetError::incomplete("u", "cut")))
                } else {
                    Ok(attempt)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 3);
    }
}
