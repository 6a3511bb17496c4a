//! A response body that keeps the request's slots (active count,
//! connection slot, the connection itself) until it is finished or
//! dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::BoxError;

/// What a [`GuardedBody`] lets go of when it ends.
pub(crate) trait Release {
    /// `clean`: the body was read to its end, so the connection under it
    /// can carry another request.
    fn release(self, clean: bool);
}

pin_project_lite::pin_project! {
    /// The upstream body plus what to release when it ends.
    pub(crate) struct GuardedBody<B: Body, G: Release> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }

    impl<B: Body, G: Release> PinnedDrop for GuardedBody<B, G> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(g) = this.guard.take() {
                // Read to the end without seeing the end (a reader that
                // stops at `is_end_stream`) still counts as clean.
                g.release(this.inner.is_end_stream());
            }
        }
    }
}

impl<B: Body, G: Release> GuardedBody<B, G> {
    /// Guards `inner`; an already finished body releases at once.
    pub fn new(inner: B, guard: G) -> Self {
        let done = inner.is_end_stream();
        let mut body = Self {
            inner,
            guard: Some(guard),
        };
        if done {
            if let Some(g) = body.guard.take() {
                g.release(true);
            }
        }
        body
    }
}

impl<B, G> Body for GuardedBody<B, G>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    G: Release,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let r = this.inner.as_mut().poll_frame(cx);
        let clean = match &r {
            Poll::Ready(None) => Some(true),
            Poll::Ready(Some(Err(_))) => Some(false),
            // The last frame: let go now rather than on the next poll.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => Some(true),
            _ => None,
        };
        if let Some(clean) = clean {
            if let Some(g) = this.guard.take() {
                g.release(clean);
            }
        }
        r.map(|o| o.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
