//! [`Fetcher`]: ranged reads of fetch URLs (presigned object URLs), shared by every transport.
//!
//! A range is read as a stream ([`RangeBody`]) so that a download can decode
//! it as it arrives, whatever size the server makes its ranges. A connection
//! that fails part-way is reopened at the first byte not yet delivered, so
//! the bytes already handed on are not asked for again (a server that
//! ignores `Range` and answers the whole object sends them again; they are
//! skipped).

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_RANGE, HeaderValue, RANGE};
use reqwest::{Response, StatusCode};

use super::client::check_status;
use super::error::XetError;
use super::range::ByteRange;
use crate::retry::RetryPolicy;

/// Most bytes [`Fetcher::fetch_range`] reserves before any arrive.
const PREALLOCATE_MAX: u64 = 16 << 20;

/// Reads byte ranges of fetch URLs with retries; cheap to clone (clones share connections).
#[derive(Clone, Debug)]
pub struct Fetcher {
    http: reqwest::Client,
    retry: RetryPolicy,
}

impl Fetcher {
    /// A fetcher over `http` retrying with `retry`.
    pub fn new(http: reqwest::Client, retry: RetryPolicy) -> Self {
        Fetcher { http, retry }
    }

    /// GETs bytes `start..=end` (inclusive, as in the reconstruction's ranges)
    /// of a fetch URL into one buffer ([`open_range`](Self::open_range), read to the end).
    pub async fn fetch_range(&self, url: &str, start: u64, end: u64) -> Result<Bytes, XetError> {
        let mut body = self.open_range(url, start, end).await?;
        // Grown as bytes arrive beyond this: a range is no promise of an answer.
        let reserve = body.remaining().min(PREALLOCATE_MAX);
        let mut out = BytesMut::with_capacity(usize::try_from(reserve).unwrap_or(0));
        while let Some(piece) = body.next_bytes().await? {
            out.extend_from_slice(&piece);
        }
        Ok(out.freeze())
    }

    /// Opens a read of bytes `start..=end` (inclusive) of a fetch URL: a
    /// single-range request without credentials, retried until it is answered.
    /// A 206 must start at `start`; a 200 (the whole object) is cut to the range.
    pub async fn open_range(&self, url: &str, start: u64, end: u64) -> Result<RangeBody, XetError> {
        if end < start || end == u64::MAX {
            return Err(XetError::Config(format!(
                "fetch range {start}-{end} is inverted or past any object's end"
            )));
        }
        let mut body = RangeBody {
            fetcher: self.clone(),
            url: url.to_string(),
            next: start,
            end,
            open: None,
            resumes: 0,
        };
        body.open().await?;
        Ok(body)
    }
}

/// An answer being read, and how many of its leading bytes precede the range.
#[derive(Debug)]
struct Open {
    resp: Response,
    /// Bytes still to drop before the next wanted byte (a 200 starts at byte 0).
    skip: u64,
    /// Whether the answer is a 206 (exactly the range asked for).
    partial: bool,
}

/// An open ranged read ([`Fetcher::open_range`]): yields exactly the bytes of
/// the range, in order. When the connection fails or ends early part-way, the
/// rest of the range is asked for again (bounded by the fetcher's retry
/// policy), so the caller sees one unbroken run of bytes or an error. A 206
/// longer than the range is an error (by its `Content-Length`, or by its
/// bytes when it has none); once the range is complete the rest of a whole
/// object is not read.
#[derive(Debug)]
pub struct RangeBody {
    fetcher: Fetcher,
    url: String,
    /// The next byte of the object to deliver.
    next: u64,
    /// The last byte of the range (inclusive).
    end: u64,
    open: Option<Open>,
    /// Reopenings after failures part-way.
    resumes: u32,
}

impl RangeBody {
    /// Bytes of the range not yet delivered.
    pub fn remaining(&self) -> u64 {
        (self.end + 1).saturating_sub(self.next)
    }

    /// The next piece of the range; `None` once all of it was delivered.
    pub async fn next_bytes(&mut self) -> Result<Option<Bytes>, XetError> {
        loop {
            let left = self.remaining();
            if left == 0 {
                // Dropping the answer stops reading a whole object at the range's end.
                self.open = None;
                return Ok(None);
            }
            if self.open.is_none() {
                self.open().await?;
            }
            let open = self.open.as_mut().expect("opened above");
            let failure = match open.resp.chunk().await {
                Ok(Some(mut piece)) => {
                    if open.skip > 0 {
                        let drop = open.skip.min(piece.len() as u64);
                        open.skip -= drop;
                        piece = piece.slice(drop as usize..);
                    }
                    if piece.is_empty() {
                        continue;
                    }
                    if piece.len() as u64 > left {
                        if open.partial {
                            return Err(XetError::protocol(
                                &self.url,
                                format!(
                                    "the answer to a range request runs past the range's last byte {}",
                                    self.end
                                ),
                            ));
                        }
                        piece.truncate(left as usize);
                    }
                    self.next += piece.len() as u64;
                    return Ok(Some(piece));
                }
                Ok(None) => XetError::incomplete(
                    &self.url,
                    format!(
                        "the answer ended at byte {}, the range ends at byte {}",
                        self.next, self.end
                    ),
                ),
                Err(e) => XetError::transport(&self.url, e),
            };
            self.open = None;
            self.resumes += 1;
            let policy = self.fetcher.retry;
            if self.resumes >= policy.max_attempts.max(1) || !failure.is_retryable() {
                return Err(failure);
            }
            tokio::time::sleep(policy.delay(self.resumes)).await;
        }
    }

    /// Asks for bytes `next..=end` (with retries) and checks the answer's status.
    async fn open(&mut self) -> Result<(), XetError> {
        let (url, start, end) = (self.url.as_str(), self.next, self.end);
        let range = ByteRange::inclusive(start, end).expect("start <= end");
        let header = HeaderValue::from_str(&range.header_value()).expect("ASCII header value");
        let http = &self.fetcher.http;
        let open = self
            .fetcher
            .retry
            .run(|_| {
                let header = header.clone();
                async move {
                    // No Authorization and no session header: fetch URLs carry their own authorization.
                    let resp = http
                        .get(url)
                        .header(RANGE, header)
                        .send()
                        .await
                        .map_err(|e| XetError::transport(url, e))?;
                    let resp = check_status(url, resp).await?;
                    Ok(check_answer(url, resp, start, end)?)
                }
            })
            .await?;
        self.open = Some(open);
        Ok(())
    }
}

/// Checks a success answer to a request for bytes `start..=end`: a 206 must
/// be that range (its `Content-Range` and `Content-Length`, when present,
/// say so); a 200 is the whole object, whose first `start` bytes are to be
/// skipped.
fn check_answer(url: &str, resp: Response, start: u64, end: u64) -> Result<Open, XetError> {
    let status = resp.status();
    if status == StatusCode::PARTIAL_CONTENT {
        let want = end - start + 1;
        if let Some(len) = resp.content_length()
            && len != want
        {
            return Err(XetError::protocol(
                url,
                format!("asked for {want} bytes from {start}, got a 206 of {len} bytes"),
            ));
        }
        if let Some(cr) = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            && let Some(first) = content_range_start(cr)
            && first != start
        {
            return Err(XetError::protocol(
                url,
                format!("asked for bytes from {start}, got Content-Range {cr:?}"),
            ));
        }
        return Ok(Open {
            resp,
            skip: 0,
            partial: true,
        });
    }
    if status != StatusCode::OK {
        return Err(XetError::protocol(
            url,
            format!("expected 206 or 200 to a range request, got {status}"),
        ));
    }
    Ok(Open {
        resp,
        skip: start,
        partial: false,
    })
}

/// The first byte of a `Content-Range: bytes S-E/N` value.
fn content_range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (first, _) = rest.split_once('-')?;
    first.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// The object every test server holds.
    fn object() -> Vec<u8> {
        (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// How a test server answers request `n` (0-based) for bytes `first..=last`.
    type Answer = fn(n: usize, first: u64, last: u64, object: &[u8]) -> Vec<u8>;

    /// A server on loopback answering at most 8 requests, one per connection,
    /// with `answer`; returns its URL and the `Range` header of every request.
    async fn serve(answer: Answer) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/xorb", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let object = object();
            for n in 0..8 {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let range = head
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes="))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                log.lock().unwrap().push(range.clone());
                let (first, last) = range.split_once('-').unwrap();
                let (first, last) = (first.parse().unwrap(), last.parse().unwrap());
                let _ = sock.write_all(&answer(n, first, last, &object)).await;
                let _ = sock.shutdown().await;
            }
        });
        (url, seen)
    }

    /// A 206 head for bytes `first..=last` of `object`.
    fn partial_head(first: u64, last: u64, object: &[u8]) -> Vec<u8> {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {first}-{last}/{}\r\nConnection: close\r\n\r\n",
            last - first + 1,
            object.len()
        )
        .into_bytes()
    }

    /// A full 206 answer.
    fn partial(first: u64, last: u64, object: &[u8]) -> Vec<u8> {
        let mut out = partial_head(first, last, object);
        out.extend_from_slice(&object[first as usize..=last as usize]);
        out
    }

    fn fetcher() -> Fetcher {
        Fetcher::new(
            reqwest::Client::new(),
            RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            },
        )
    }

    #[tokio::test]
    async fn a_cut_answer_is_resumed_at_the_first_missing_byte() {
        // The first two answers stop after 30 000 bytes of the range.
        let (url, seen) = serve(|n, first, last, object| {
            let mut out = partial(first, last, object);
            if n < 2 {
                out.truncate(partial_head(first, last, object).len() + 30_000);
            }
            out
        })
        .await;
        let got = fetcher().fetch_range(&url, 1_000, 150_999).await.unwrap();
        assert!(got[..] == object()[1_000..151_000]);
        assert_eq!(
            *seen.lock().unwrap(),
            ["1000-150999", "31000-150999", "61000-150999"]
        );
    }

    #[tokio::test]
    async fn answers_cut_too_often_fail() {
        let (url, seen) = serve(|_, first, last, object| {
            let mut out = partial(first, last, object);
            out.truncate(partial_head(first, last, object).len() + 10);
            out
        })
        .await;
        let err = fetcher().fetch_range(&url, 0, 99_999).await.unwrap_err();
        assert!(
            matches!(
                err,
                XetError::Transport { .. } | XetError::Incomplete { .. }
            ),
            "{err}"
        );
        // The policy's three attempts, each resumed where the last stopped.
        assert_eq!(*seen.lock().unwrap(), ["0-99999", "10-99999", "20-99999"]);
    }

    #[tokio::test]
    async fn whole_object_answers_are_cut_to_the_range() {
        let (url, _) = serve(|_, _, _, object| {
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                object.len()
            )
            .into_bytes();
            out.extend_from_slice(object);
            out
        })
        .await;
        let got = fetcher().fetch_range(&url, 70_000, 70_004).await.unwrap();
        assert_eq!(&got[..], &object()[70_000..70_005]);
        let got = fetcher().fetch_range(&url, 0, 199_999).await;
        assert!(got.unwrap()[..] == object()[..]);
    }

    #[tokio::test]
    async fn a_partial_answer_must_be_the_range_asked_for() {
        // Content-Range from the wrong byte.
        let (url, _) = serve(|_, first, last, object| partial(first + 1, last, object)).await;
        let err = fetcher().fetch_range(&url, 10, 20).await.unwrap_err();
        assert!(matches!(err, XetError::Protocol { .. }), "{err}");
        // More bytes than asked for.
        let (url, _) = serve(|_, first, last, object| partial(first, last + 5, object)).await;
        let err = fetcher().fetch_range(&url, 10, 20).await.unwrap_err();
        assert!(matches!(err, XetError::Protocol { .. }), "{err}");
        assert!(err.to_string().contains("a 206 of 16 bytes"), "{err}");
        // Neither 206 nor 200.
        let (url, _) =
            serve(|_, _, _, _| b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_vec())
                .await;
        let err = fetcher().fetch_range(&url, 10, 20).await.unwrap_err();
        assert!(matches!(err, XetError::Protocol { .. }), "{err}");
        assert!(matches!(
            fetcher().open_range(&url, 5, 4).await,
            Err(XetError::Config(_))
        ));
        assert!(matches!(
            fetcher().open_range(&url, 5, u64::MAX).await,
            Err(XetError::Config(_))
        ));
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(content_range_start("bytes 10-14/100"), Some(10));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start("items 1-2/3"), None);
    }
}
