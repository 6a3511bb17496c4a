//! Bodies that count: bytes and gRPC messages of a request body while it
//! streams, and a response body that finishes its request's telemetry
//! when it ends (or is dropped: a caller that stops reading still ends
//! the request).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::record::{Outcome, Pending};
use crate::body::{BoxError, MeshBody};

/// Counts gRPC's length-prefixed messages across frames.
#[derive(Debug, Default, Clone, Copy)]
pub struct Messages {
    /// Bytes of the current 5-byte prefix seen so far.
    prefix_seen: u8,
    prefix: [u8; 5],
    /// Bytes of the current message still to come.
    remaining: u64,
    /// Messages started.
    pub count: u64,
}

impl Messages {
    /// Feeds one data frame.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            self.prefix[self.prefix_seen as usize] = data[0];
            self.prefix_seen += 1;
            data = &data[1..];
            if self.prefix_seen == 5 {
                self.prefix_seen = 0;
                self.count += 1;
                self.remaining = u64::from(u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]));
            }
        }
    }
}

/// What a counted request body saw, read when the response ends.
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// Body bytes.
    pub bytes: AtomicU64,
    /// gRPC messages.
    pub messages: AtomicU64,
}

pin_project! {
    /// A request body that counts what passes.
    pub struct CountedRequest {
        #[pin]
        inner: MeshBody,
        counts: Arc<RequestCounts>,
        messages: Option<Messages>,
    }
}

impl CountedRequest {
    /// Counts `inner` into `counts`; gRPC messages too when `grpc`.
    pub fn new(inner: MeshBody, counts: Arc<RequestCounts>, grpc: bool) -> Self {
        CountedRequest {
            inner,
            counts,
            messages: grpc.then(Messages::default),
        }
    }
}

impl Body for CountedRequest {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            if let Some(d) = f.data_ref() {
                this.counts.bytes.fetch_add(d.remaining() as u64, Relaxed);
                if let Some(m) = this.messages {
                    let before = m.count;
                    m.feed(d);
                    this.counts.messages.fetch_add(m.count - before, Relaxed);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response's telemetry, waiting for the body to end.
pub struct Finishing {
    pub(super) pending: Pending,
    pub(super) outcome: Outcome,
    pub(super) counts: Option<Arc<RequestCounts>>,
    pub(super) messages: Option<Messages>,
}

impl Finishing {
    pub(super) fn finish_now(mut self) {
        if let Some(c) = &self.counts {
            self.outcome.request_bytes = c.bytes.load(Relaxed);
            self.outcome.request_messages = c.messages.load(Relaxed);
        }
        if let Some(m) = &self.messages {
            self.outcome.response_messages = m.count;
        }
        self.pending.finish(self.outcome);
    }
}

pin_project! {
    /// A response body that records its request when it ends.
    pub struct RecordedResponse {
        #[pin]
        inner: MeshBody,
        state: Option<Finishing>,
    }

    impl PinnedDrop for RecordedResponse {
        fn drop(this: Pin<&mut Self>) {
            if let Some(s) = this.project().state.take() {
                s.finish_now();
            }
        }
    }
}

impl RecordedResponse {
    /// Records `state` when `inner` ends.
    pub fn new(inner: MeshBody, state: Finishing) -> Self {
        RecordedResponse {
            inner,
            state: Some(state),
        }
    }
}

impl Body for RecordedResponse {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(s) = this.state.as_mut() {
            // A broken stream reports what was sent so far, as Envoy does.
            if let Some(Ok(f)) = &frame {
                if let Some(d) = f.data_ref() {
                    s.outcome.response_bytes += d.remaining() as u64;
                    if let Some(m) = &mut s.messages {
                        m.feed(d);
                    }
                } else if let Some(t) = f.trailers_ref() {
                    if let Some(g) = super::grpc_status(t) {
                        s.outcome.grpc_status = Some(g);
                    }
                }
            }
            if frame.is_none() || this.inner.is_end_stream() {
                if let Some(s) = this.state.take() {
                    s.finish_now();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_across_frame_boundaries() {
        let mut m = Messages::default();
        // Two messages of 3 and 0 bytes, split mid-prefix and mid-message.
        let wire = [0u8, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0];
        m.feed(&wire[..2]);
        m.feed(&wire[2..6]);
        m.feed(&wire[6..10]);
        m.feed(&wire[10..]);
        assert_eq!(m.count, 2);
        let mut one = Messages::default();
        one.feed(&wire);
        assert_eq!(one.count, 2);
    }
}
