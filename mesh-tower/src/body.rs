//! The body type that flows through every layer.
//!
//! Layers generate responses of their own (faults, direct responses, local
//! errors) and replay request bodies on retries, so requests and responses
//! are boxed to one type rather than carrying each service's body type
//! through every generic.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// The error type bodies and services use.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed HTTP body.
pub type MeshBody = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> MeshBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> MeshBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body whose error converts into [`BoxError`]; a body that
/// already is a [`MeshBody`] is passed on as it is, not boxed again.
pub fn boxed<B>(body: B) -> MeshBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut slot = Some(body);
    if let Some(same) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<MeshBody>>() {
        if let Some(b) = same.take() {
            return b;
        }
    }
    match slot {
        Some(b) => b.map_err(Into::into).boxed_unsync(),
        None => empty(),
    }
}
