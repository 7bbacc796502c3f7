//! Reading the NDJSON progress stream of `POST /v2/shards` up to its terminal frame.

use super::types::{ShardFrame, ShardUploadOutcome};

/// Longest frame accepted; a longer line is a protocol error, not a reason to buffer without bound.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Why a shard stream did not end in success.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A line is not a JSON frame, or is too long.
    #[error("bad frame: {0}")]
    Malformed(String),
    /// The stream ended before a terminal frame.
    #[error("the stream ended without a result or error frame")]
    MissingTerminal,
    /// The terminal frame was an error frame.
    #[error("{message}")]
    Rejected {
        /// The server's message.
        message: String,
        /// Whether the server asked for a retry.
        retryable: bool,
    },
}

/// Splits network chunks into NDJSON frames and stops at the terminal one.
///
/// Feed it every received chunk with [`FrameReader::feed`], which returns the
/// outcome once a terminal frame has arrived, then [`FrameReader::finish`] at the
/// end of the body. Blank lines and frames of unknown type are skipped; bytes
/// after the terminal frame are ignored.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    outcome: Option<Result<ShardUploadOutcome, FrameError>>,
    frames: usize,
}

impl FrameReader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of frames read so far (progress frames included).
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Takes the next received bytes; returns the outcome once the terminal frame has been read.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<Result<ShardUploadOutcome, FrameError>> {
        if self.outcome.is_some() {
            return self.outcome.clone();
        }
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if self.buf.len() + line.len() > MAX_FRAME_BYTES {
                return self.fail(FrameError::Malformed(format!(
                    "a frame is longer than {MAX_FRAME_BYTES} bytes"
                )));
            }
            self.buf.extend_from_slice(line);
            let frame = std::mem::take(&mut self.buf);
            if let Some(done) = self.line(&frame) {
                return Some(done);
            }
        }
        if self.buf.len() + rest.len() > MAX_FRAME_BYTES {
            return self.fail(FrameError::Malformed(format!(
                "a frame is longer than {MAX_FRAME_BYTES} bytes"
            )));
        }
        self.buf.extend_from_slice(rest);
        None
    }

    /// Ends the stream: the outcome, reading a last frame that had no newline.
    pub fn finish(mut self) -> Result<ShardUploadOutcome, FrameError> {
        if let Some(done) = self.outcome.take() {
            return done;
        }
        let last = std::mem::take(&mut self.buf);
        if let Some(done) = self.line(&last) {
            return done;
        }
        Err(FrameError::MissingTerminal)
    }

    /// Records a final outcome.
    fn fail(&mut self, e: FrameError) -> Option<Result<ShardUploadOutcome, FrameError>> {
        self.outcome = Some(Err(e));
        self.outcome.clone()
    }

    /// Reads one line; returns the outcome if it was a terminal frame (or malformed).
    fn line(&mut self, line: &[u8]) -> Option<Result<ShardUploadOutcome, FrameError>> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return None;
        }
        let frame: ShardFrame = match serde_json::from_slice(line) {
            Ok(f) => f,
            Err(e) => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                return self.fail(FrameError::Malformed(format!("{e} in {shown:?}")));
            }
        };
        self.frames += 1;
        let done = match frame {
            ShardFrame::Result { result } => Ok(ShardUploadOutcome::from_result(result)),
            ShardFrame::Error { message, retryable } => {
                Err(FrameError::Rejected { message, retryable })
            }
            ShardFrame::Validating { .. } | ShardFrame::Committing { .. } | ShardFrame::Unknown => {
                return None;
            }
        };
        self.outcome = Some(done);
        self.outcome.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUCCESS: &str = concat!(
        r#"{"type":"validating","verified":0,"total":1}"#,
        "\n",
        r#"{"type":"validating","verified":1,"total":1}"#,
        "\n",
        r#"{"type":"committing","stage":"uploading"}"#,
        "\n",
        r#"{"type":"committing","stage":"syncing"}"#,
        "\n",
        r#"{"type":"result","result":1}"#,
        "\n"
    );

    /// Feeds `body` split at the given cut points, then finishes.
    fn run(body: &[u8], cuts: &[usize]) -> Result<ShardUploadOutcome, FrameError> {
        let mut r = FrameReader::new();
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&body.len())) {
            if let Some(done) = r.feed(&body[prev..c]) {
                return done;
            }
            prev = c;
        }
        r.finish()
    }

    #[test]
    fn success_whole_and_split_at_every_byte() {
        let body = SUCCESS.as_bytes();
        assert_eq!(run(body, &[]), Ok(ShardUploadOutcome::Registered));
        for cut in 0..=body.len() {
            assert_eq!(
                run(body, &[cut]),
                Ok(ShardUploadOutcome::Registered),
                "cut {cut}"
            );
        }
        // One byte per network chunk.
        let cuts: Vec<usize> = (1..body.len()).collect();
        assert_eq!(run(body, &cuts), Ok(ShardUploadOutcome::Registered));
    }

    #[test]
    fn result_zero_and_missing_result_field() {
        assert_eq!(
            run(b"{\"type\":\"result\",\"result\":0}\n", &[]),
            Ok(ShardUploadOutcome::AlreadyExisted)
        );
        assert_eq!(
            run(b"{\"type\":\"result\"}", &[]),
            Ok(ShardUploadOutcome::Registered),
            "a last frame without newline still counts"
        );
    }

    #[test]
    fn error_frame_is_a_rejection() {
        let body = concat!(
            r#"{"type":"validating","verified":0,"total":1}"#,
            "\n",
            r#"{"type":"error","message":"referenced xorb missing","retryable":false}"#,
            "\n"
        )
        .as_bytes();
        for cut in [0, 10, 50, body.len() - 1] {
            assert_eq!(
                run(body, &[cut]),
                Err(FrameError::Rejected {
                    message: "referenced xorb missing".into(),
                    retryable: false
                })
            );
        }
        assert_eq!(
            run(
                b"{\"type\":\"error\",\"message\":\"busy\",\"retryable\":true}\r\n",
                &[]
            ),
            Err(FrameError::Rejected {
                message: "busy".into(),
                retryable: true
            })
        );
    }

    #[test]
    fn missing_terminal_frame_is_an_error() {
        let body = concat!(
            r#"{"type":"validating","verified":0,"total":1}"#,
            "\n",
            r#"{"type":"committing","stage":"syncing"}"#,
            "\n"
        )
        .as_bytes();
        assert_eq!(run(body, &[17]), Err(FrameError::MissingTerminal));
        assert_eq!(run(b"", &[]), Err(FrameError::MissingTerminal));
        assert_eq!(run(b"\n\n", &[]), Err(FrameError::MissingTerminal));
    }

    #[test]
    fn unknown_frames_are_skipped_and_trailing_bytes_ignored() {
        let body = concat!(
            r#"{"type":"heartbeat"}"#,
            "\n\n",
            r#"{"type":"result","result":1}"#,
            "\n",
            "garbage after the end"
        );
        assert_eq!(
            run(body.as_bytes(), &[5]),
            Ok(ShardUploadOutcome::Registered)
        );
    }

    #[test]
    fn malformed_or_oversized_frames_fail() {
        assert!(matches!(
            run(b"not json\n", &[]),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            run(b"{\"type\":\"result\"", &[]),
            Err(FrameError::Malformed(_))
        ));
        let mut r = FrameReader::new();
        let big = vec![b' '; MAX_FRAME_BYTES / 2 + 1];
        assert!(r.feed(&big).is_none());
        assert!(matches!(r.feed(&big), Some(Err(FrameError::Malformed(_)))));
    }
}
