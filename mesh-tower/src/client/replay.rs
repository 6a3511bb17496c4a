//! Bodies that can be sent again ([`Replay`]) and reading a body to its end
//! up to a limit ([`buffer`]). The layers use [`super::tee`], which never
//! waits for a streaming body; [`buffer`] is for callers that may wait.
//!
//! [`buffer`] reads a body up to a byte limit. A body that ends within the
//! limit becomes a [`Replay`] (data plus trailers) that can be turned into a
//! fresh body any number of times, without copying the bytes. A body that
//! goes past the limit is handed back whole, the part already read first,
//! so nothing is lost: it is sent once and never replayed.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{self, BoxError, MeshBody};

/// A body read to its end, ready to be sent again.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// All the data.
    pub data: Bytes,
    /// Trailers, if the body had them.
    pub trailers: Option<HeaderMap>,
}

impl Replay {
    /// The copy of an empty body (allocates nothing).
    pub fn empty() -> Self {
        Replay {
            data: Bytes::new(),
            trailers: None,
        }
    }

    /// A fresh body with the same data and trailers.
    pub fn body(&self) -> MeshBody {
        match &self.trailers {
            None if self.data.is_empty() => body::empty(),
            None => body::full(self.data.clone()),
            Some(t) => {
                let mut frames = VecDeque::with_capacity(2);
                if !self.data.is_empty() {
                    frames.push_back(Frame::data(self.data.clone()));
                }
                frames.push_back(Frame::trailers(t.clone()));
                PrefixedBody { frames, rest: None }.boxed_unsync()
            }
        }
    }
}

/// The result of [`buffer`].
// Requests are read by `tee` as they stream; reading a body whole first is
// left to the tests of `Replay`.
#[cfg(test)]
pub enum Buffered {
    /// The body ended within the limit.
    Complete(Replay),
    /// The body is larger than the limit (or unknown and streaming): here it
    /// is again, whole.
    TooLarge(MeshBody),
}

/// Reads `body` up to `limit` bytes. A body whose size hint already says it
/// is larger is not read at all.
#[cfg(test)]
pub async fn buffer(mut body: MeshBody, limit: usize) -> Result<Buffered, BoxError> {
    if body.size_hint().lower() > limit as u64 {
        return Ok(Buffered::TooLarge(body));
    }
    if body.is_end_stream() {
        return Ok(Buffered::Complete(Replay::default()));
    }
    let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut size = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(e),
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    size += d.len();
                }
                frames.push_back(f);
                if size > limit {
                    return Ok(Buffered::TooLarge(
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
    Ok(Buffered::Complete(collect_frames(frames)))
}

/// Joins frames read to the end of a body into a [`Replay`], without
/// copying when there is a single data frame.
pub(crate) fn collect_frames(frames: VecDeque<Frame<Bytes>>) -> Replay {
    let mut trailers = None;
    let mut data = BytesMut::new();
    let mut single: Option<Bytes> = None;
    let mut chunks = 0usize;
    for f in frames {
        match f.into_data() {
            Ok(d) => {
                chunks += 1;
                if chunks == 1 {
                    single = Some(d);
                } else {
                    if let Some(s) = single.take() {
                        data.extend_from_slice(&s);
                    }
                    data.extend_from_slice(&d);
                }
            }
            Err(f) => {
                if let Ok(t) = f.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    let data = match single {
        Some(s) => s,
        None => data.freeze(),
    };
    Replay { data, trailers }
}

/// Frames already read, followed by the rest of the body.
pub(crate) struct PrefixedBody {
    pub(crate) frames: VecDeque<Frame<Bytes>>,
    pub(crate) rest: Option<MeshBody>,
}

impl Body for PrefixedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        match self.rest.as_mut() {
            Some(r) => Pin::new(r).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(r) => {
                let h = r.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + buffered);
                if let Some(u) = h.upper() {
                    out.set_upper(u + buffered);
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::StreamBody;

    fn chunks(parts: Vec<&'static str>) -> MeshBody {
        let frames = parts
            .into_iter()
            .map(|p| Ok::<_, BoxError>(Frame::data(Bytes::from_static(p.as_bytes()))));
        StreamBody::new(stream::iter(frames)).boxed_unsync()
    }

    #[tokio::test]
    async fn small_bodies_replay() {
        let Buffered::Complete(r) = buffer(chunks(vec!["ab", "cd"]), 10).await.unwrap() else {
            panic!("should buffer");
        };
        assert_eq!(r.data, "abcd");
        for _ in 0..2 {
            let b = r.body().collect().await.unwrap().to_bytes();
            assert_eq!(b, "abcd");
        }
    }

    #[tokio::test]
    async fn large_bodies_come_back_whole() {
        let Buffered::TooLarge(b) = buffer(chunks(vec!["abc", "def", "ghi"]), 4).await.unwrap()
        else {
            panic!("too large");
        };
        assert_eq!(b.collect().await.unwrap().to_bytes(), "abcdefghi");
        let Buffered::TooLarge(_) = buffer(body::full(vec![0u8; 100]), 10).await.unwrap() else {
            panic!("too large by size hint");
        };
    }

    #[tokio::test]
    async fn trailers_survive() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "14".parse().unwrap());
        let r = Replay {
            data: Bytes::from_static(b"x"),
            trailers: Some(t),
        };
        let Buffered::Complete(again) = buffer(r.body(), 10).await.unwrap() else {
            panic!("complete");
        };
        assert_eq!(again.trailers.unwrap()["grpc-status"], "14");
    }
}
