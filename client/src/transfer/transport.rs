//! [`Transport`]: what an upload or a download needs from a CAS server, so the
//! same transfer code runs over the Xet HTTP API ([`XetClient`]) and our gRPC API
//! ([`GrpcClient`]); [`Remote`] picks one from the endpoint's scheme.

use std::future::Future;

use bytes::Bytes;
use cas_core::MerkleHash;
use futures::StreamExt;

use super::TransferError;
use crate::grpc::{GrpcClient, GrpcClientConfig, GrpcError};
use crate::retry::RetryPolicy;
use crate::xet::{ByteRange, Fetcher, ReconstructionV2, XetClient, XetClientConfig, XetError};

/// Global-dedup answers to a set of chunk queries.
#[derive(Debug, Default)]
pub struct DedupAnswers {
    /// The shards the server answered with (complete, possibly HMAC-keyed).
    pub shards: Vec<Bytes>,
    /// Chunk queries that failed (counted as misses).
    pub failed: usize,
}

/// The server operations of an upload or a download.
pub trait Transport: Sync {
    /// Asks the global-dedup index about `chunks`, with at most `concurrency`
    /// requests in flight. Failures are counted, never fatal: a miss only costs bytes.
    fn query_dedup(
        &self,
        chunks: Vec<MerkleHash>,
        concurrency: usize,
    ) -> impl Future<Output = DedupAnswers> + Send;

    /// Uploads one serialized xorb; `false` if the server already had it.
    fn upload_xorb(
        &self,
        hash: MerkleHash,
        bytes: Bytes,
    ) -> impl Future<Output = Result<bool, TransferError>> + Send;

    /// Registers the files of a shard (without footer).
    fn upload_shard(&self, shard: Bytes) -> impl Future<Output = Result<(), TransferError>> + Send;

    /// How to rebuild `file` (or a byte range of it).
    fn reconstruction(
        &self,
        file: MerkleHash,
        range: Option<ByteRange>,
    ) -> impl Future<Output = Result<ReconstructionV2, TransferError>> + Send;

    /// Reads the fetch URLs of reconstructions.
    fn fetcher(&self) -> &Fetcher;
}

impl Transport for XetClient {
    async fn query_dedup(&self, chunks: Vec<MerkleHash>, concurrency: usize) -> DedupAnswers {
        // The HTTP API answers one chunk per request.
        let results: Vec<Result<Option<Vec<u8>>, XetError>> = futures::stream::iter(chunks)
            .map(|h| async move { XetClient::query_dedup(self, &h).await })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut answers = DedupAnswers::default();
        for r in results {
            match r {
                Ok(Some(shard)) => answers.shards.push(Bytes::from(shard)),
                Ok(None) => {}
                Err(_) => answers.failed += 1,
            }
        }
        answers
    }

    async fn upload_xorb(&self, hash: MerkleHash, bytes: Bytes) -> Result<bool, TransferError> {
        Ok(XetClient::upload_xorb(self, &hash, bytes).await?)
    }

    async fn upload_shard(&self, shard: Bytes) -> Result<(), TransferError> {
        XetClient::upload_shard(self, shard).await?;
        Ok(())
    }

    async fn reconstruction(
        &self,
        file: MerkleHash,
        range: Option<ByteRange>,
    ) -> Result<ReconstructionV2, TransferError> {
        Ok(XetClient::reconstruction(self, &file, range).await?)
    }

    fn fetcher(&self) -> &Fetcher {
        XetClient::fetcher(self)
    }
}

impl Transport for GrpcClient {
    async fn query_dedup(&self, chunks: Vec<MerkleHash>, _concurrency: usize) -> DedupAnswers {
        // Batched: one call per 1024 chunks.
        match self.query_chunks(&chunks).await {
            Ok(shards) => DedupAnswers { shards, failed: 0 },
            Err(_) => DedupAnswers {
                shards: Vec::new(),
                failed: chunks.len(),
            },
        }
    }

    async fn upload_xorb(&self, hash: MerkleHash, bytes: Bytes) -> Result<bool, TransferError> {
        Ok(GrpcClient::upload_xorb(self, &hash, bytes).await?)
    }

    async fn upload_shard(&self, shard: Bytes) -> Result<(), TransferError> {
        self.register_files(shard).await?;
        Ok(())
    }

    async fn reconstruction(
        &self,
        file: MerkleHash,
        range: Option<ByteRange>,
    ) -> Result<ReconstructionV2, TransferError> {
        Ok(GrpcClient::reconstruction(self, &file, range).await?)
    }

    fn fetcher(&self) -> &Fetcher {
        GrpcClient::fetcher(self)
    }
}

/// A server reached over either API, chosen by the endpoint's scheme:
/// `http://` / `https://` for the Xet HTTP API, `grpc://` for our gRPC API.
#[derive(Clone, Debug)]
pub enum Remote {
    /// The Xet HTTP API.
    Http(XetClient),
    /// Our gRPC API.
    Grpc(Box<GrpcClient>),
}

impl Remote {
    /// A client for `endpoint` with an optional bearer token and retry policy.
    pub fn connect(
        endpoint: &str,
        token: Option<&str>,
        retry: RetryPolicy,
    ) -> Result<Self, TransferError> {
        if endpoint.starts_with("grpc://") {
            let mut config = GrpcClientConfig::new(endpoint).with_retry(retry);
            config.token = token.map(str::to_owned);
            Ok(Remote::Grpc(Box::new(GrpcClient::with_config(config)?)))
        } else {
            let mut config = XetClientConfig::new(endpoint).with_retry(retry);
            config.token = token.map(str::to_owned);
            Ok(Remote::Http(XetClient::with_config(config)?))
        }
    }
}

impl Transport for Remote {
    async fn query_dedup(&self, chunks: Vec<MerkleHash>, concurrency: usize) -> DedupAnswers {
        match self {
            Remote::Http(c) => Transport::query_dedup(c, chunks, concurrency).await,
            Remote::Grpc(c) => Transport::query_dedup(&**c, chunks, concurrency).await,
        }
    }

    async fn upload_xorb(&self, hash: MerkleHash, bytes: Bytes) -> Result<bool, TransferError> {
        match self {
            Remote::Http(c) => Transport::upload_xorb(c, hash, bytes).await,
            Remote::Grpc(c) => Transport::upload_xorb(&**c, hash, bytes).await,
        }
    }

    async fn upload_shard(&self, shard: Bytes) -> Result<(), TransferError> {
        match self {
            Remote::Http(c) => Transport::upload_shard(c, shard).await,
            Remote::Grpc(c) => Transport::upload_shard(&**c, shard).await,
        }
    }

    async fn reconstruction(
        &self,
        file: MerkleHash,
        range: Option<ByteRange>,
    ) -> Result<ReconstructionV2, TransferError> {
        match self {
            Remote::Http(c) => Transport::reconstruction(c, file, range).await,
            Remote::Grpc(c) => Transport::reconstruction(&**c, file, range).await,
        }
    }

    fn fetcher(&self) -> &Fetcher {
        match self {
            Remote::Http(c) => c.fetcher(),
            Remote::Grpc(c) => c.fetcher(),
        }
    }
}

impl From<GrpcError> for TransferError {
    fn from(e: GrpcError) -> Self {
        TransferError::Grpc(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_scheme_picks_the_transport() {
        let r = RetryPolicy::none();
        assert!(matches!(
            Remote::connect("grpc://127.0.0.1:1", Some("t"), r),
            Ok(Remote::Grpc(_))
        ));
        assert!(matches!(
            Remote::connect("http://127.0.0.1:1", None, r),
            Ok(Remote::Http(_))
        ));
        assert!(matches!(
            Remote::connect("https://cas.example.com", None, r),
            Ok(Remote::Http(_))
        ));
        assert!(matches!(
            Remote::connect("grpc://h:1/path", None, r),
            Err(TransferError::Grpc(GrpcError::Config(_)))
        ));
        assert!(matches!(
            Remote::connect("ftp://h", None, r),
            Err(TransferError::Xet(XetError::Config(_)))
        ));
    }
}
