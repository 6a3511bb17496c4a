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
