//! Byte ranges of a file, as requested from a reconstruction.

use std::fmt;
use std::str::FromStr;

/// A byte range of a file: `start..end` (end exclusive), or `start..` to the end of the file.
///
/// On the wire it is an HTTP `Range: bytes=S-E` with an inclusive end, or
/// `bytes=S-` when open. A range is never empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ByteRange {
    start: u64,
    end: Option<u64>,
}

/// Why a byte range is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid byte range {input:?}: {reason}")]
pub struct RangeError {
    /// The text or numbers given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ByteRange {
    /// `start..end` (end exclusive); `None` when it would be empty.
    pub fn new(start: u64, end: u64) -> Option<Self> {
        (end > start).then_some(ByteRange {
            start,
            end: Some(end),
        })
    }

    /// `first..=last` (both inclusive, as in HTTP); `None` when `last < first`.
    pub fn inclusive(first: u64, last: u64) -> Option<Self> {
        (last >= first).then(|| ByteRange {
            start: first,
            end: last.checked_add(1),
        })
    }

    /// `start..`: from `start` to the end of the file.
    pub fn from_start(start: u64) -> Self {
        ByteRange { start, end: None }
    }

    /// `offset..offset + length`; `None` for a zero length or an overflow.
    pub fn offset_length(offset: u64, length: u64) -> Option<Self> {
        ByteRange::new(offset, offset.checked_add(length)?)
    }

    /// First byte.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// One past the last byte, or `None` for "to the end of the file".
    pub fn end(&self) -> Option<u64> {
        self.end
    }

    /// Number of bytes, or `None` for an open range.
    pub fn len(&self) -> Option<u64> {
        self.end.map(|e| e - self.start)
    }

    /// Always false: a byte range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Range` header value: `bytes=S-E` (inclusive end) or `bytes=S-`.
    pub fn header_value(&self) -> String {
        match self.end {
            Some(e) => format!("bytes={}-{}", self.start, e - 1),
            None => format!("bytes={}-", self.start),
        }
    }

    /// The part of this range inside a file of `size` bytes, `None` if it starts at or past the end.
    pub fn clamp(&self, size: u64) -> Option<std::ops::Range<u64>> {
        let end = self.end.map_or(size, |e| e.min(size));
        (self.start < end).then_some(self.start..end)
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end {
            Some(e) => write!(f, "{}-{}", self.start, e - 1),
            None => write!(f, "{}-", self.start),
        }
    }
}

impl FromStr for ByteRange {
    type Err = RangeError;

    /// Parses `START-END` (inclusive end, as in HTTP) or `START-` (to the end of the file).
    fn from_str(s: &str) -> Result<Self, RangeError> {
        let err = |reason| RangeError {
            input: s.to_string(),
            reason,
        };
        let text = s.trim();
        let text = text.strip_prefix("bytes=").unwrap_or(text);
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| err("expected START-END or START-"))?;
        let number = |t: &str| -> Result<u64, RangeError> {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err("START and END must be non-negative integers"));
            }
            t.parse().map_err(|_| err("number too large"))
        };
        let start = number(a)?;
        if b.trim().is_empty() {
            return Ok(ByteRange::from_start(start));
        }
        let last = number(b)?;
        ByteRange::inclusive(start, last).ok_or_else(|| err("END is before START"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inclusive_and_exclusive_forms_agree() {
        let r = ByteRange::inclusive(5_000_000, 6_499_999).unwrap();
        assert_eq!(r, ByteRange::new(5_000_000, 6_500_000).unwrap());
        assert_eq!(r, ByteRange::offset_length(5_000_000, 1_500_000).unwrap());
        assert_eq!(r.len(), Some(1_500_000));
        assert_eq!(r.header_value(), "bytes=5000000-6499999");
        assert_eq!(r.to_string(), "5000000-6499999");
        let one = ByteRange::inclusive(7, 7).unwrap();
        assert_eq!(one.len(), Some(1));
        assert_eq!(one.header_value(), "bytes=7-7");
    }

    #[test]
    fn empty_and_inverted_ranges_do_not_exist() {
        assert!(ByteRange::new(5, 5).is_none());
        assert!(ByteRange::new(6, 5).is_none());
        assert!(ByteRange::inclusive(6, 5).is_none());
        assert!(ByteRange::offset_length(3, 0).is_none());
        assert!(ByteRange::offset_length(u64::MAX, 1).is_none());
    }

    #[test]
    fn open_ranges() {
        let r = ByteRange::from_start(10);
        assert_eq!(r.len(), None);
        assert_eq!(r.header_value(), "bytes=10-");
        assert_eq!(r.clamp(100), Some(10..100));
        assert_eq!(r.clamp(10), None);
        // An inclusive range ending at u64::MAX is open.
        assert_eq!(ByteRange::inclusive(0, u64::MAX).unwrap().end(), None);
    }

    #[test]
    fn clamp_to_file_size() {
        let r = ByteRange::inclusive(90, 199).unwrap();
        assert_eq!(r.clamp(1000), Some(90..200));
        assert_eq!(r.clamp(100), Some(90..100));
        assert_eq!(r.clamp(90), None);
    }

    #[test]
    fn parses_text() {
        assert_eq!(
            "0-99".parse::<ByteRange>().unwrap(),
            ByteRange::new(0, 100).unwrap()
        );
        assert_eq!(
            "bytes=3-3".parse::<ByteRange>().unwrap(),
            ByteRange::new(3, 4).unwrap()
        );
        assert_eq!(
            " 12- ".parse::<ByteRange>().unwrap(),
            ByteRange::from_start(12)
        );
        for bad in [
            "",
            "-5",
            "5",
            "a-b",
            "5-4",
            "1-2-3",
            "+1-2",
            "99999999999999999999-",
        ] {
            assert!(bad.parse::<ByteRange>().is_err(), "{bad:?}");
        }
    }
}
