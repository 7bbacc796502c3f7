//! The Xet CAS HTTP transport.
//!
//! [`XetClient`] speaks the public Xet CAS API: global-dedup queries, xorb and
//! shard uploads, reconstructions and ranged fetches of xorb bytes. Every CAS
//! request carries `Authorization: Bearer <token>` (when a token is set),
//! `X-Xet-Session-Id` and `User-Agent: cas/<version>`; fetch URLs get neither
//! credentials nor session id. Requests are retried on 5xx, 408, 429 and
//! transport failures ([`RetryPolicy`]); other errors come back at once as a
//! typed [`XetError`] carrying the status and what the server said.

mod client;
mod error;
mod fetch;
mod ndjson;
mod range;
mod types;

pub use crate::retry::{Retry, RetryPolicy};
pub use client::{
    DEDUP_PREFIX, SESSION_ID_HEADER, USER_AGENT, XORB_PREFIX, XetClient, XetClientConfig,
};
pub use error::{ServerMessage, XetError, is_retryable_status};
pub use fetch::{Fetcher, RangeBody};
pub use ndjson::{FrameError, FrameReader, MAX_FRAME_BYTES};
pub use range::{ByteRange, RangeError};
pub use types::{
    ChunkRange, FetchInfoV1, HttpRange, ReconstructionTerm, ReconstructionV1, ReconstructionV2,
    ShardFrame, ShardUploadOutcome, ShardUploadResponseV1, XorbFetch, XorbRangeDescriptor,
    XorbUploadResponse,
};
