//! Keeping a copy of a request body while it streams, so a retry or a
//! mirror can replay it without ever making the request wait.
//!
//! [`prepare`] never blocks: it reads the frames a body has ready right now
//! (a `Full` body, or a tonic unary message, is complete at once). A body
//! that ends is a [`Replay`] straight away; one that would wait (a stream,
//! a slow upload) is sent as it comes through a tee that copies up to a
//! limit; once the stream has ended within the limit, [`Tee::replay`] gives
//! the copy. A body past the limit is sent once, as is. Waiting for a whole
//! streaming body before sending it could deadlock a bidirectional gRPC
//! stream, which is why Envoy streams and copies too.
//!
//! [`peek_trailers`] is the response side: it looks for a `grpc-status` in
//! the trailers of a response without holding a stream.

use mesh_core::sync::LockExt;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::body::{BoxError, MeshBody};

use super::replay::{collect_frames, PrefixedBody, Replay};

/// How far a teed body got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Still streaming.
    Streaming,
    /// Ended within the limit: the copy is whole.
    Complete,
    /// Went past the limit: no copy.
    Overflow,
    /// Failed or dropped before its end: no copy.
    Abandoned,
}

#[derive(Debug, Default)]
struct Copy {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    size: usize,
}

#[derive(Debug)]
struct Shared {
    copy: Mutex<Copy>,
    progress: watch::Sender<Progress>,
    limit: usize,
}

impl Shared {
    fn finish(&self, to: Progress) {
        let changed = self.progress.send_if_modified(|p| {
            if *p == Progress::Streaming {
                *p = to;
                true
            } else {
                false
            }
        });
        if changed && to != Progress::Complete {
            *self.copy.locked() = Copy::default();
        }
    }
}

/// The copy side of a teed body.
#[derive(Debug, Clone)]
pub struct Tee(Arc<Shared>);

impl Tee {
    /// How far the body got.
    pub fn progress(&self) -> Progress {
        *self.0.progress.borrow()
    }

    /// The whole body, once it ended within the limit.
    pub fn replay(&self) -> Option<Replay> {
        if self.progress() != Progress::Complete {
            return None;
        }
        let c = self.0.copy.locked();
        let data = match c.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut b = bytes::BytesMut::with_capacity(c.size);
                for chunk in many {
                    b.extend_from_slice(chunk);
                }
                b.freeze()
            }
        };
        Some(Replay {
            data,
            trailers: c.trailers.clone(),
        })
    }

    /// Waits until the body ended (or can no longer be copied), then gives
    /// the copy if there is one.
    pub async fn finished(&self) -> Option<Replay> {
        let mut rx = self.0.progress.subscribe();
        rx.wait_for(|p| *p != Progress::Streaming).await.ok()?;
        self.replay()
    }
}

/// A body that copies what passes through it into a [`Tee`].
struct TeeBody {
    inner: MeshBody,
    shared: Arc<Shared>,
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                let mut overflow = false;
                {
                    let mut c = self.shared.copy.locked();
                    if let Some(d) = f.data_ref() {
                        c.size += d.len();
                        overflow = c.size > self.shared.limit;
                        if !overflow {
                            c.chunks.push(d.clone());
                        }
                    } else if let Some(t) = f.trailers_ref() {
                        c.trailers = Some(t.clone());
                    }
                }
                if overflow {
                    self.shared.finish(Progress::Overflow);
                } else if self.inner.is_end_stream() {
                    self.shared.finish(Progress::Complete);
                }
            }
            Poll::Ready(None) => self.shared.finish(Progress::Complete),
            Poll::Ready(Some(Err(_))) => self.shared.finish(Progress::Abandoned),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TeeBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.shared.finish(Progress::Complete);
        } else {
            self.shared.finish(Progress::Abandoned);
        }
    }
}

/// A request body made ready for replay by [`prepare`].
pub enum Prepared {
    /// A body that had ended already: send it as it is; its copy is
    /// [`Replay::empty`].
    Empty(MeshBody),
    /// The whole body, read without waiting.
    Complete(Replay),
    /// The body to send (copied as it streams) and its copy.
    Teed(MeshBody, Tee),
    /// Larger than the limit: send it once.
    TooLarge(MeshBody),
}

/// Makes `body` replayable up to `limit` bytes without waiting (see the
/// module docs).
pub fn prepare(mut body: MeshBody, limit: usize) -> Result<Prepared, BoxError> {
    if body.is_end_stream() {
        return Ok(Prepared::Empty(body));
    }
    if body.size_hint().lower() > limit as u64 {
        return Ok(Prepared::TooLarge(body));
    }
    let mut frames = VecDeque::new();
    let mut size = 0usize;
    loop {
        if body.is_end_stream() {
            return Ok(Prepared::Complete(collect_frames(frames)));
        }
        match body.frame().now_or_never() {
            Some(None) => return Ok(Prepared::Complete(collect_frames(frames))),
            Some(Some(Err(e))) => return Err(e),
            Some(Some(Ok(f))) => {
                size += f.data_ref().map_or(0, |d| d.len());
                frames.push_back(f);
                if size > limit {
                    let rest = PrefixedBody {
                        frames,
                        rest: Some(body),
                    };
                    return Ok(Prepared::TooLarge(rest.boxed_unsync()));
                }
            }
            None => {
                let rest = PrefixedBody {
                    frames,
                    rest: Some(body),
                }
                .boxed_unsync();
                let (tx, _) = watch::channel(Progress::Streaming);
                let shared = Arc::new(Shared {
                    copy: Mutex::new(Copy::default()),
                    progress: tx,
                    limit,
                });
                let teed = TeeBody {
                    inner: rest,
                    shared: shared.clone(),
                };
                return Ok(Prepared::Teed(teed.boxed_unsync(), Tee(shared)));
            }
        }
    }
}

/// Looks for `grpc-status` in the trailers of a response body: waits for
/// the first frame only, then takes the frames that are ready without
/// waiting, up to `limit` bytes. Gives the status when the trailers were
/// reached and the body to pass on (nothing lost). A stream that sends a
/// message and then waits is passed on at once rather than held.
pub async fn peek_trailers(
    mut body: MeshBody,
    limit: usize,
) -> Result<(Option<HeaderMap>, MeshBody), BoxError> {
    let mut frames = VecDeque::new();
    let mut size = 0usize;
    let mut first = true;
    loop {
        if body.is_end_stream() {
            break;
        }
        let next = if first {
            first = false;
            Some(body.frame().await)
        } else {
            body.frame().now_or_never()
        };
        match next {
            None => {
                return Ok((
                    None,
                    PrefixedBody {
                        frames,
                        rest: Some(body),
                    }
                    .boxed_unsync(),
                ))
            }
            Some(None) => break,
            Some(Some(Err(e))) => return Err(e),
            Some(Some(Ok(f))) => {
                size += f.data_ref().map_or(0, |d| d.len());
                let trailers = f.trailers_ref().cloned();
                frames.push_back(f);
                if trailers.is_some() {
                    return Ok((
                        trailers,
                        PrefixedBody {
                            frames,
                            rest: Some(body),
                        }
                        .boxed_unsync(),
                    ));
                }
                if size > limit {
                    return Ok((
                        None,
                        PrefixedBody {
                            frames,
                            rest: Some(body),
                        }
                        .boxed_unsync(),
                    ));
                }
            }
        }
    }
    Ok((None, PrefixedBody { frames, rest: None }.boxed_unsync()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use tokio::sync::mpsc;

    fn channel_body() -> (mpsc::Sender<Frame<Bytes>>, MeshBody) {
        let (tx, rx) = mpsc::channel::<Frame<Bytes>>(8);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|f| (Ok::<_, BoxError>(f), rx))
        });
        (tx, http_body_util::StreamBody::new(stream).boxed_unsync())
    }

    #[tokio::test]
    async fn full_bodies_are_complete_at_once() {
        let Ok(Prepared::Complete(r)) = prepare(body::full("abc"), 10) else {
            panic!("complete");
        };
        assert_eq!(r.data, "abc");
        assert!(matches!(
            prepare(body::full("abcdef"), 3),
            Ok(Prepared::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn streams_are_teed_not_waited_for() {
        let (tx, b) = channel_body();
        tx.send(Frame::data(Bytes::from_static(b"ab")))
            .await
            .unwrap();
        let Ok(Prepared::Teed(mut sent, tee)) = prepare(b, 10) else {
            panic!("teed");
        };
        // The ready frame passes through at once.
        let f = sent.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "ab");
        assert_eq!(tee.progress(), Progress::Streaming);
        assert!(tee.replay().is_none());
        tx.send(Frame::data(Bytes::from_static(b"cd")))
            .await
            .unwrap();
        drop(tx);
        let rest = sent.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "cd");
        assert_eq!(tee.finished().await.unwrap().data, "abcd");
    }

    #[tokio::test]
    async fn overflow_and_abandon_give_no_copy() {
        let (tx, b) = channel_body();
        let Ok(Prepared::Teed(sent, tee)) = prepare(b, 3) else {
            panic!("teed");
        };
        tx.send(Frame::data(Bytes::from_static(b"abcd")))
            .await
            .unwrap();
        drop(tx);
        assert_eq!(sent.collect().await.unwrap().to_bytes(), "abcd");
        assert_eq!(tee.progress(), Progress::Overflow);
        assert!(tee.finished().await.is_none());

        let (_tx, b) = channel_body();
        let Ok(Prepared::Teed(sent, tee)) = prepare(b, 3) else {
            panic!("teed");
        };
        drop(sent);
        assert_eq!(tee.progress(), Progress::Abandoned);
    }

    #[tokio::test]
    async fn peeks_trailers_without_holding_streams() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "14".parse().unwrap());
        let r = Replay {
            data: Bytes::from_static(b"x"),
            trailers: Some(t),
        };
        let (found, rest) = peek_trailers(r.body(), 100).await.unwrap();
        assert_eq!(found.unwrap()["grpc-status"], "14");
        let c = rest.collect().await.unwrap();
        assert_eq!(c.trailers().unwrap()["grpc-status"], "14");

        // A stream with one message and then silence is passed on.
        let (tx, b) = channel_body();
        tx.send(Frame::data(Bytes::from_static(b"m1")))
            .await
            .unwrap();
        let (found, mut rest) = peek_trailers(b, 100).await.unwrap();
        assert!(found.is_none());
        assert_eq!(
            rest.frame().await.unwrap().unwrap().into_data().unwrap(),
            "m1"
        );
        drop(tx);
    }
}
