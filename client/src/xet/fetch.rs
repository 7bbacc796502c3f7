//! [`Fetcher`]: ranged reads of fetch URLs (presigned object URLs), shared by every transport.

use bytes::Bytes;
use reqwest::header::{CONTENT_RANGE, HeaderValue, RANGE};
use reqwest::{Response, StatusCode};

use super::client::{check_status, read_body};
use super::error::XetError;
use super::range::ByteRange;
use crate::retry::RetryPolicy;

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

    /// GETs bytes `start..=end` (inclusive, as in the reconstruction's ranges) of a
    /// fetch URL: a single-range request without credentials; a 206 must carry
    /// exactly the range, a 200 the whole object (the range is cut from it).
    pub async fn fetch_range(&self, url: &str, start: u64, end: u64) -> Result<Bytes, XetError> {
        let range = ByteRange::inclusive(start, end)
            .ok_or_else(|| XetError::Config(format!("fetch range {start}-{end} is inverted")))?;
        let want = range.len().unwrap_or(u64::MAX);
        let header = HeaderValue::from_str(&range.header_value()).expect("ASCII header value");
        self.retry
            .run(|_| {
                let header = header.clone();
                async move {
                    // No Authorization and no session header: fetch URLs carry their own authorization.
                    let resp = self
                        .http
                        .get(url)
                        .header(RANGE, header)
                        .send()
                        .await
                        .map_err(|e| XetError::transport(url, e))?;
                    let resp = check_status(url, resp).await?;
                    let status = resp.status();
                    let content_range = resp
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let body = if status == StatusCode::PARTIAL_CONTENT {
                        read_body(url, resp, usize::try_from(want).unwrap_or(usize::MAX)).await?
                    } else {
                        // A whole object: only the bytes up to the end of the range are needed.
                        let upto = usize::try_from(end.saturating_add(1)).unwrap_or(usize::MAX);
                        read_prefix(url, resp, upto).await?
                    };
                    Ok(cut_range(
                        url,
                        status,
                        content_range.as_deref(),
                        body,
                        start,
                        want,
                    )?)
                }
            })
            .await
    }
}

/// Reads the first `n` bytes of a response body (fewer if it is shorter) and drops the rest.
async fn read_prefix(url: &str, mut resp: Response, n: usize) -> Result<Vec<u8>, XetError> {
    let mut out = Vec::new();
    while out.len() < n {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(n - out.len());
                out.extend_from_slice(&chunk[..take]);
            }
            Ok(None) => break,
            Err(e) => return Err(XetError::transport(url, e)),
        }
    }
    Ok(out)
}

/// Checks a fetched body against the requested range and returns exactly those bytes.
///
/// A 206 must hold `want` bytes starting at `start` (its `Content-Range`, if
/// present, must say so); a 200 is the whole object, from which the range is cut.
fn cut_range(
    url: &str,
    status: StatusCode,
    content_range: Option<&str>,
    body: Vec<u8>,
    start: u64,
    want: u64,
) -> Result<Bytes, XetError> {
    if status == StatusCode::PARTIAL_CONTENT {
        if let Some(cr) = content_range
            && let Some(first) = content_range_start(cr)
            && first != start
        {
            return Err(XetError::protocol(
                url,
                format!("asked for bytes from {start}, got Content-Range {cr:?}"),
            ));
        }
        if body.len() as u64 != want {
            return Err(XetError::incomplete(
                url,
                format!("asked for {want} bytes, got {}", body.len()),
            ));
        }
        return Ok(Bytes::from(body));
    }
    if status != StatusCode::OK {
        return Err(XetError::protocol(
            url,
            format!("expected 206 or 200 to a range request, got {status}"),
        ));
    }
    let end = start.saturating_add(want);
    if (body.len() as u64) < end {
        return Err(XetError::incomplete(
            url,
            format!(
                "a 200 answer to a range request holds {} bytes, the range ends at byte {end}",
                body.len()
            ),
        ));
    }
    Ok(Bytes::from(body).slice(start as usize..end as usize))
}

/// The first byte of a `Content-Range: bytes S-E/N` value.
fn content_range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (first, _) = rest.split_once('-')?;
    first.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_content_must_be_exactly_the_range() {
        let ok = cut_range(
            "u",
            StatusCode::PARTIAL_CONTENT,
            Some("bytes 10-14/100"),
            b"abcde".to_vec(),
            10,
            5,
        )
        .unwrap();
        assert_eq!(&ok[..], b"abcde");
        let ok = cut_range(
            "u",
            StatusCode::PARTIAL_CONTENT,
            None,
            b"abcde".to_vec(),
            10,
            5,
        );
        assert!(ok.is_ok());
        let short = cut_range(
            "u",
            StatusCode::PARTIAL_CONTENT,
            None,
            b"abcd".to_vec(),
            10,
            5,
        );
        assert!(matches!(short, Err(XetError::Incomplete { .. })));
        let wrong = cut_range(
            "u",
            StatusCode::PARTIAL_CONTENT,
            Some("bytes 0-4/100"),
            b"abcde".to_vec(),
            10,
            5,
        );
        assert!(matches!(wrong, Err(XetError::Protocol { .. })));
    }

    #[test]
    fn whole_object_answers_are_cut() {
        let body: Vec<u8> = (0..100).collect();
        let got = cut_range("u", StatusCode::OK, None, body.clone(), 10, 5).unwrap();
        assert_eq!(&got[..], &body[10..15]);
        let short = cut_range("u", StatusCode::OK, None, body[..12].to_vec(), 10, 5);
        assert!(matches!(short, Err(XetError::Incomplete { .. })));
        let odd = cut_range("u", StatusCode::NO_CONTENT, None, Vec::new(), 0, 1);
        assert!(matches!(odd, Err(XetError::Protocol { .. })));
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(content_range_start("bytes 10-14/100"), Some(10));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start("items 1-2/3"), None);
    }
}
