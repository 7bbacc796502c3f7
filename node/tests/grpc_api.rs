//! The gRPC API of a real `cas-node demo` process (embedded S3, RocksDB index):
//! `cas` uploads and downloads over gRPC, interoperating with the HTTP API;
//! batched lookups; refused input answered with the documented gRPC code and
//! stable error code, leaving nothing behind.

mod support;

use bytes::Bytes;
use cas_client::grpc::{GrpcClient, GrpcError};
use cas_client::pipeline::UploadSession;
use cas_client::transfer::{
    DownloadOptions, Transport, UploadOptions, UploadReport, download_bytes, upload_paths,
};
use cas_client::xet::{ByteRange, XetClient};
use cas_core::chunking::chunk_and_hash;
use cas_core::hash::MerkleHash;
use cas_proto::api::cas_client::CasClient;
use cas_proto::api::{
    HasXorbsRequest, QueryChunksRequest, RegisterFilesRequest, UploadXorbRequest,
};
use rand::{Rng, SeedableRng};
use support::{DemoNode, ExternalS3};
use tonic::Code;

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

fn grpc(node: &DemoNode, token: Option<&str>) -> GrpcClient {
    GrpcClient::new(&node.grpc_endpoint, token).expect("gRPC client")
}

async fn upload<T: Transport>(
    client: &T,
    dir: &std::path::Path,
    name: &str,
    data: &[u8],
) -> (MerkleHash, UploadReport) {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write");
    let report = upload_paths(client, &[path], &UploadOptions::default())
        .await
        .expect("upload");
    (report.files[0].file_hash, report)
}

async fn download<T: Transport>(
    client: &T,
    hash: &MerkleHash,
    range: Option<ByteRange>,
) -> Vec<u8> {
    download_bytes(client, hash, range, &DownloadOptions::default())
        .await
        .expect("download")
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_over_grpc_round_trips_and_interoperates_with_http() {
    cas_over_grpc_round_trips_and_interoperates_with_http_on(DemoNode::start()).await;
}

/// The same against Garage (CI runs it; skipped when `GARAGE_ENDPOINT` is not set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_over_grpc_round_trips_and_interoperates_with_http_on_garage() {
    if let Some(s3) = ExternalS3::garage() {
        cas_over_grpc_round_trips_and_interoperates_with_http_on(DemoNode::start_with(Some(s3)))
            .await;
    }
}

/// `cas` over gRPC and HTTP against `node`.
async fn cas_over_grpc_round_trips_and_interoperates_with_http_on(node: DemoNode) {
    let dir = tempfile::tempdir().unwrap();
    let g = grpc(&node, Some(&node.token));
    let h = XetClient::new(&node.endpoint, Some(&node.token)).unwrap();

    // Uploaded over gRPC: downloads over both APIs, whole and in ranges.
    let mut a = random_bytes(3_000_000, 1);
    a.extend(std::iter::repeat_n(7u8, 500_000));
    let (ha, report) = upload(&g, dir.path(), "a", &a).await;
    // The zero run repeats one chunk, stored once.
    assert!(report.new_bytes > 3_000_000 && report.new_bytes < a.len() as u64);
    assert!(report.xorbs_sent >= 1 && report.shards_sent == 1);
    assert_eq!(download(&g, &ha, None).await, a);
    assert_eq!(download(&h, &ha, None).await, a);
    let r = ByteRange::new(1_000, 2_000_001).unwrap();
    assert_eq!(download(&g, &ha, Some(r)).await, &a[1_000..2_000_001]);
    let tail = ByteRange::from_start(a.len() as u64 - 10);
    assert_eq!(download(&g, &ha, Some(tail)).await, &a[a.len() - 10..]);
    let past = download_bytes(
        &g,
        &ha,
        Some(ByteRange::from_start(a.len() as u64 + 5)),
        &DownloadOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(past.is_range_not_satisfiable(), "{past}");
    let unknown = download_bytes(&g, &MerkleHash([9; 32]), None, &DownloadOptions::default())
        .await
        .unwrap_err();
    assert!(unknown.is_not_found(), "{unknown}");

    // Uploaded over HTTP: downloads over gRPC.
    let b = random_bytes(1_200_000, 2);
    let (hb, _) = upload(&h, dir.path(), "b", &b).await;
    assert_eq!(download(&g, &hb, None).await, b);

    // The empty file.
    let (he, _) = upload(&g, dir.path(), "empty", &[]).await;
    assert_eq!(download(&g, &he, None).await, Vec::<u8>::new());

    // A one-byte edit is deduplicated through the batched dedup query.
    let mut edited = a.clone();
    edited[1_500_000] ^= 0xff;
    let (he2, report) = upload(&g, dir.path(), "a2", &edited).await;
    assert!(report.dedup_hits >= 1, "{report:?}");
    assert!(
        report.bytes_sent() < 500_000,
        "a one-byte edit sent {} bytes",
        report.bytes_sent()
    );
    assert_eq!(download(&h, &he2, None).await, edited);

    // Batched lookups: chunks and xorbs the node holds, and ones it does not.
    let chunks = chunk_and_hash(&a);
    let mut asked: Vec<MerkleHash> = chunks.iter().map(|c| c.hash).collect();
    asked.push(MerkleHash([3; 32]));
    let shards = g.query_chunks(&asked).await.expect("query chunks");
    assert!(!shards.is_empty());
    assert!(
        g.query_chunks(&[MerkleHash([4; 32])])
            .await
            .unwrap()
            .is_empty()
    );
    let recon = g.reconstruction(&ha, None).await.expect("reconstruction");
    let xorb = recon.terms[0].hash;
    assert_eq!(
        g.has_xorbs(&[xorb, MerkleHash([5; 32])]).await.unwrap(),
        vec![true, false]
    );
    // More than one server batch is split by the client.
    let many: Vec<MerkleHash> = (0..5000u32)
        .map(|i| {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            MerkleHash(h)
        })
        .chain([xorb])
        .collect();
    let present = g.has_xorbs(&many).await.unwrap();
    assert_eq!(present.len(), many.len());
    assert_eq!(present.iter().filter(|p| **p).count(), 1);
    assert!(present[5000]);
}

fn code_of(e: &GrpcError) -> (Option<Code>, Option<String>) {
    (e.code(), e.server_code().map(str::to_owned))
}

fn expect(e: GrpcError, code: Code, server_code: &str) {
    assert_eq!(
        code_of(&e),
        (Some(code), Some(server_code.to_owned())),
        "{e}"
    );
}

/// A raw stub for requests our client never sends.
async fn raw(node: &DemoNode) -> CasClient<tonic::transport::Channel> {
    let url = node.grpc_endpoint.replace("grpc://", "http://");
    CasClient::connect(url).await.expect("connect")
}

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refuses_bad_input_with_stable_codes_and_keeps_nothing() {
    let node = DemoNode::start();
    let read_token = node.issue_token("read", "1h");
    let write = grpc(&node, Some(&node.token));
    let before = node.s3_objects();

    // Tokens: none, garbage, read scope on writes.
    let e = grpc(&node, None)
        .has_xorbs(&[MerkleHash([1; 32])])
        .await
        .unwrap_err();
    expect(e, Code::Unauthenticated, "token_missing");
    let e = grpc(&node, Some("garbage"))
        .has_xorbs(&[MerkleHash([1; 32])])
        .await
        .unwrap_err();
    expect(e, Code::Unauthenticated, "token_malformed");
    let e = grpc(&node, Some(&node.expired_token()))
        .has_xorbs(&[MerkleHash([1; 32])])
        .await
        .unwrap_err();
    expect(e, Code::Unauthenticated, "token_expired");
    let reader = grpc(&node, Some(&read_token));
    assert_eq!(
        reader.has_xorbs(&[MerkleHash([1; 32])]).await.unwrap(),
        vec![false]
    );
    let e = reader
        .upload_xorb(&MerkleHash([1; 32]), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    expect(e, Code::PermissionDenied, "insufficient_scope");

    // A real xorb under the wrong name, garbage, a truncated xorb.
    let data = random_bytes(200_000, 7);
    let mut session = UploadSession::new();
    session.add_file(&data, &chunk_and_hash(&data)).unwrap();
    let plan = session.finish().unwrap();
    let x = &plan.xorbs[0];
    let e = write
        .upload_xorb(&MerkleHash([2; 32]), Bytes::from(x.bytes.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    let e = write
        .upload_xorb(&x.hash, Bytes::from_static(b"not a xorb at all"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    let e = write
        .upload_xorb(&x.hash, Bytes::from(x.bytes[..x.bytes.len() - 9].to_vec()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");

    // A shard naming a xorb that was never uploaded; a garbage shard.
    let mut shard = plan.shard.clone();
    shard.canonicalize();
    let e = write
        .register_files(Bytes::from(shard.to_bytes().unwrap()))
        .await
        .unwrap_err();
    expect(e, Code::FailedPrecondition, "unknown_xorb");
    let e = write
        .register_files(Bytes::from_static(b"garbage shard"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");

    // Malformed requests our client never sends.
    let mut stub = raw(&node).await;
    let bad_hash = stub
        .has_xorbs(authed(
            HasXorbsRequest {
                xorb_hashes: vec![Bytes::from_static(&[1; 31])],
            },
            &node.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_hash.code(), Code::InvalidArgument);
    assert_eq!(
        bad_hash.metadata().get("x-cas-error-code").unwrap(),
        "invalid_hash"
    );
    let too_many = stub
        .query_chunks(authed(
            QueryChunksRequest {
                chunk_hashes: vec![Bytes::from_static(&[1; 32]); 1025],
            },
            &node.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert_eq!(
        too_many.metadata().get("x-cas-error-code").unwrap(),
        "batch_too_large"
    );
    let empty = stub
        .upload_xorb(authed(
            futures::stream::iter(Vec::<UploadXorbRequest>::new()),
            &node.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        empty.metadata().get("x-cas-error-code").unwrap(),
        "empty_upload"
    );
    // Streams that start like a footer: longer than any footer is malformed
    // (the rest is still read, to the limit); past the size limit, or
    // announcing more than it (refused before its bytes are read), too large.
    // (A first message of 6 MiB: more than a check batch of footer at once.)
    let part = Bytes::from(vec![0u8; 1 << 20]);
    let cases = [
        (0, 1 << 20, 2, Code::InvalidArgument, "malformed_xorb"),
        (0, 6 << 20, 1, Code::InvalidArgument, "malformed_xorb"),
        (0, 1 << 20, 70, Code::ResourceExhausted, "body_too_large"),
        (
            70 << 20,
            1 << 20,
            1,
            Code::ResourceExhausted,
            "body_too_large",
        ),
    ];
    for (size, first_len, parts, code, stable) in cases {
        let mut first = vec![0u8; first_len];
        first[..7].copy_from_slice(b"XETBLOB");
        let pieces =
            std::iter::once(Bytes::from(first)).chain(std::iter::repeat_n(part.clone(), parts - 1));
        let parts = xorb_messages(&MerkleHash([6; 32]), pieces, size);
        let e = stub
            .upload_xorb(authed(futures::stream::iter(parts), &node.token))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert_eq!(e.metadata().get("x-cas-error-code").unwrap(), stable);
    }
    let shard_parts = vec![RegisterFilesRequest {
        data: Bytes::from_static(b"HFRepoMetaData\0but not really"),
    }];
    let e = stub
        .register_files(authed(futures::stream::iter(shard_parts), &node.token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Unknown file, bad range.
    let e = write
        .reconstruction(&MerkleHash([8; 32]), None)
        .await
        .unwrap_err();
    expect(e, Code::NotFound, "file_not_found");

    assert_eq!(
        node.s3_objects(),
        before,
        "refused input left objects behind"
    );

    // A valid xorb of 30 MB streamed in messages of 1 MiB, 5 MiB (more than a
    // check batch) and 300 kB without announcing its size: stored once all of
    // it checked out.
    let data = random_bytes(30_000_000, 8);
    let mut session = UploadSession::new();
    session.add_file(&data, &chunk_and_hash(&data)).unwrap();
    let big = session.finish().unwrap().xorbs.remove(0);
    let mut pieces = Vec::new();
    let mut rest = &big.bytes[..];
    for size in [1 << 20, (5 << 20) + 3, 300_001].into_iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at(size.min(rest.len()));
        pieces.push(Bytes::copy_from_slice(piece));
        rest = after;
    }
    let parts = xorb_messages(&big.hash, pieces, 0);
    let stored = stub
        .upload_xorb(authed(futures::stream::iter(parts), &node.token))
        .await
        .expect("streamed upload");
    assert!(stored.into_inner().inserted);
    assert_eq!(write.has_xorbs(&[big.hash]).await.unwrap(), vec![true]);
    assert!(node.stored_xorb(&big.hash) == big.to_bytes_with_footer());

    // A xorb sent with its own footer in one message, the footer starting 100
    // bytes before the end of the first check batch (2 MiB): 32 records of
    // 64 KiB, the last 100 bytes short, of random (so uncompressed) chunks.
    // The rest of the footer arrives in the same message as the batch.
    let mut builder = cas_core::xorb::XorbBuilder::new();
    for i in 0..32u64 {
        let len = (64 << 10) - 8 - if i == 31 { 100 } else { 0 };
        let added = builder.add_chunk(&random_bytes(len, 100 + i)).unwrap();
        assert_eq!(added, cas_core::xorb::AddChunk::Added(i as usize));
    }
    let x = builder.finish().unwrap();
    assert_eq!(x.bytes.len(), (2 << 20) - 100, "records of 64 KiB");
    let with_footer = x.to_bytes_with_footer();
    let parts = xorb_messages(&x.hash, [Bytes::from(with_footer.clone())], 0);
    let stored = stub
        .upload_xorb(authed(futures::stream::iter(parts), &node.token))
        .await
        .expect("xorb with its footer");
    assert!(stored.into_inner().inserted);
    assert!(node.stored_xorb(&x.hash) == with_footer);
}

/// The messages of a xorb upload: the name and the announced `size` (0: none)
/// in the first, then one piece each.
fn xorb_messages(
    hash: &MerkleHash,
    pieces: impl IntoIterator<Item = Bytes>,
    size: u64,
) -> Vec<UploadXorbRequest> {
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, data)| UploadXorbRequest {
            hash: if i == 0 {
                Bytes::copy_from_slice(&hash.0)
            } else {
                Bytes::new()
            },
            data,
            size: if i == 0 { size } else { 0 },
        })
        .collect()
}

/// A transport whose first reconstruction is handed out only after its fetch URLs expired.
struct SlowFirstReconstruction {
    inner: cas_client::transfer::Remote,
    calls: std::sync::atomic::AtomicUsize,
}

impl Transport for SlowFirstReconstruction {
    async fn query_dedup(
        &self,
        chunks: Vec<MerkleHash>,
        concurrency: usize,
    ) -> cas_client::transfer::DedupAnswers {
        self.inner.query_dedup(chunks, concurrency).await
    }

    async fn upload_xorb(
        &self,
        hash: MerkleHash,
        bytes: Bytes,
    ) -> Result<bool, cas_client::transfer::TransferError> {
        self.inner.upload_xorb(hash, bytes).await
    }

    async fn upload_shard(&self, shard: Bytes) -> Result<(), cas_client::transfer::TransferError> {
        self.inner.upload_shard(shard).await
    }

    async fn reconstruction(
        &self,
        file: MerkleHash,
        range: Option<ByteRange>,
    ) -> Result<cas_client::xet::ReconstructionV2, cas_client::transfer::TransferError> {
        let r = self.inner.reconstruction(file, range).await;
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        }
        r
    }

    fn fetcher(&self) -> &cas_client::xet::Fetcher {
        self.inner.fetcher()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_fetch_urls_are_renewed_once() {
    let node = DemoNode::start_with_env(&[("CAS_NODE__S3__PRESIGN_TTL", "1s")]);
    let dir = tempfile::tempdir().unwrap();
    for grpc in [false, true] {
        let endpoint = if grpc {
            &node.grpc_endpoint
        } else {
            &node.endpoint
        };
        let remote = cas_client::transfer::Remote::connect(
            endpoint,
            Some(&node.token),
            cas_client::xet::RetryPolicy::none(),
        )
        .unwrap();
        let data = random_bytes(2_000_000, 40 + grpc as u64);
        let (hash, _) = upload(&remote, dir.path(), "f", &data).await;
        let slow = SlowFirstReconstruction {
            inner: remote,
            calls: Default::default(),
        };
        assert_eq!(download(&slow, &hash, None).await, data);
        assert_eq!(
            slow.calls.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "the reconstruction was asked for again once"
        );
    }
}
