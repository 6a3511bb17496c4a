//! Waiting for an event instead of sleeping for a guessed time: poll a
//! condition, bounded overall, and say what never happened.

use std::time::Duration;

/// How long [`until`] waits before it gives up.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `done` every 10 ms until it holds; panics saying `what` did not
/// happen within [`DEADLINE`]. On tokio's paused clock the polls advance
/// virtual time only.
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the async condition `done` every 50 ms until it holds; panics
/// saying `what` did not happen within `within`. For conditions that need
/// I/O to check (an API server's object, an HTTP answer).
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
