//! How the routing stage reads failures of the inner (endpoint) service:
//! as a retry [`Outcome`] and as a response a caller can act on.

use mesh_core::retry::Outcome;

use crate::body::BoxError;
use crate::error::{MeshError, ResponseFlag};

/// The retry outcome of a failed attempt, or `None` when the failure is
/// never retried (pool overflow, no healthy upstream, faults, other local
/// decisions), as in Envoy.
pub fn outcome_of(err: &BoxError) -> Option<Outcome> {
    let e: &(dyn std::error::Error + 'static) = err.as_ref();
    if let Some(m) = MeshError::find(e) {
        return match m.flag {
            ResponseFlag::UpstreamConnectionFailure => Some(Outcome::ConnectFailure),
            ResponseFlag::UpstreamRemoteReset => Some(Outcome::Reset { request_sent: true }),
            ResponseFlag::UpstreamRequestTimeout => Some(Outcome::PerTryTimeout),
            _ => None,
        };
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(h) = c.downcast_ref::<hyper_util::client::legacy::Error>() {
            if h.is_connect() {
                return Some(Outcome::ConnectFailure);
            }
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            ) {
                return Some(Outcome::ConnectFailure);
            }
        }
        cur = c.source();
    }
    // HTTP/2 REFUSED_STREAM arrives inside hyper's error; h2's reason only
    // shows in the debug form.
    if format!("{err:?}").contains("REFUSED_STREAM") {
        return Some(Outcome::RefusedStream);
    }
    Some(Outcome::Reset { request_sent: true })
}

/// The typed failure for an error of the inner service: the `MeshError` it
/// carries, else an upstream reset (503, flag UR) naming the cause.
pub fn mesh_error_of(err: &BoxError) -> MeshError {
    if let Some(m) = MeshError::find(err.as_ref()) {
        return m.clone();
    }
    let flag = match outcome_of(err) {
        Some(Outcome::ConnectFailure) => ResponseFlag::UpstreamConnectionFailure,
        _ => ResponseFlag::UpstreamRemoteReset,
    };
    MeshError::new(flag, format!("upstream connect error or reset: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        let e: BoxError = Box::new(MeshError::new(
            ResponseFlag::UpstreamConnectionFailure,
            "refused",
        ));
        assert_eq!(outcome_of(&e), Some(Outcome::ConnectFailure));
        let e: BoxError = Box::new(MeshError::new(ResponseFlag::UpstreamOverflow, "full"));
        assert_eq!(outcome_of(&e), None);
        let e: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(outcome_of(&e), Some(Outcome::ConnectFailure));
        assert_eq!(
            mesh_error_of(&e).flag,
            ResponseFlag::UpstreamConnectionFailure
        );
        let e: BoxError = "boom".into();
        assert_eq!(outcome_of(&e), Some(Outcome::Reset { request_sent: true }));
    }
}
