//! [`ObjectBody`]: the bytes of an object as a list of segments, sent to S3 as
//! one body without being joined.
//!
//! A xorb is stored as the uploaded body followed by a small storage footer;
//! joining them would copy up to 64 MiB per xorb. Instead the two are chained:
//! a PUT (or a multipart part straddling them) streams one segment after the
//! other with an exact `Content-Length`, and a retried attempt replays the same
//! segments (cheap clones of [`Bytes`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use aws_smithy_types::body::SdkBody;
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

/// The bytes of an object: the concatenation of its segments, never copied to join them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectBody {
    segments: Vec<Bytes>,
    len: usize,
}

impl ObjectBody {
    /// The concatenation of `segments` (empty segments are dropped).
    pub fn new(segments: impl IntoIterator<Item = Bytes>) -> Self {
        let segments: Vec<Bytes> = segments.into_iter().filter(|s| !s.is_empty()).collect();
        let len = segments.iter().map(Bytes::len).sum();
        ObjectBody { segments, len }
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The non-empty segments, in order.
    pub fn segments(&self) -> &[Bytes] {
        &self.segments
    }

    /// Bytes `range` of the body, sharing the segments' memory.
    ///
    /// # Panics
    /// If the range is inverted or reaches past the end.
    pub fn slice(&self, range: Range<usize>) -> ObjectBody {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "slice {range:?} of a body of {} bytes",
            self.len
        );
        let mut out = Vec::new();
        let mut at = 0usize;
        for s in &self.segments {
            let (start, end) = (at, at + s.len());
            at = end;
            if end <= range.start {
                continue;
            }
            if start >= range.end {
                break;
            }
            let from = range.start.max(start) - start;
            let to = range.end.min(end) - start;
            out.push(s.slice(from..to));
        }
        ObjectBody::new(out)
    }

    /// Appends `bytes` as a new segment (an empty one is dropped).
    pub fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.segments.push(bytes);
        }
    }

    /// Splits off the first `n` bytes, leaving the rest (sharing the segments' memory).
    ///
    /// # Panics
    /// If `n` is past the end.
    pub fn split_to(&mut self, n: usize) -> ObjectBody {
        let head = self.slice(0..n);
        *self = self.slice(n..self.len);
        head
    }

    /// The bytes in one buffer (a copy unless there is at most one segment).
    pub fn to_bytes(&self) -> Bytes {
        match self.segments.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut joined = BytesMut::with_capacity(self.len);
                for s in many {
                    joined.extend_from_slice(s);
                }
                joined.freeze()
            }
        }
    }

    /// The request body: in memory for one segment, else a replayable stream
    /// of the segments with an exact size.
    pub(crate) fn into_sdk_body(self) -> SdkBody {
        match self.segments.len() {
            0 => SdkBody::empty(),
            1 => SdkBody::from(self.segments.into_iter().next().unwrap_or_default()),
            _ => {
                let segments = self.segments;
                let len = self.len as u64;
                SdkBody::retryable(move || {
                    SdkBody::from_body_1_x(Segments {
                        rest: segments.iter().cloned().collect(),
                        remaining: len,
                    })
                })
            }
        }
    }
}

impl From<Bytes> for ObjectBody {
    fn from(bytes: Bytes) -> Self {
        ObjectBody::new([bytes])
    }
}

impl From<Vec<u8>> for ObjectBody {
    fn from(bytes: Vec<u8>) -> Self {
        ObjectBody::from(Bytes::from(bytes))
    }
}

/// An HTTP body yielding the segments one frame each.
struct Segments {
    rest: VecDeque<Bytes>,
    remaining: u64,
}

impl http_body::Body for Segments {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.rest.pop_front();
        if let Some(b) = &next {
            self.remaining -= b.len() as u64;
        }
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> (ObjectBody, Vec<u8>) {
        let parts = [&b"0123"[..], b"", b"45", b"6789abc"];
        let joined: Vec<u8> = parts.concat();
        (
            ObjectBody::new(parts.iter().map(|p| Bytes::copy_from_slice(p))),
            joined,
        )
    }

    #[test]
    fn slices_across_segments_match_the_joined_bytes() {
        let (b, joined) = body();
        assert_eq!(b.len(), joined.len());
        assert_eq!(b.segments().len(), 3);
        assert_eq!(b.to_bytes(), joined);
        for start in 0..=joined.len() {
            for end in start..=joined.len() {
                let s = b.slice(start..end);
                assert_eq!(s.to_bytes(), joined[start..end], "{start}..{end}");
                assert_eq!(s.len(), end - start);
            }
        }
    }

    #[tokio::test]
    async fn the_request_body_streams_every_segment_and_replays() {
        use http_body_util::BodyExt as _;
        let (b, joined) = body();
        let sdk = b.into_sdk_body();
        let again = sdk.try_clone().expect("replayable");
        for body in [sdk, again] {
            assert_eq!(body.content_length(), Some(joined.len() as u64));
            let got = body.collect().await.expect("body").to_bytes();
            assert_eq!(got, joined);
        }
    }
}
