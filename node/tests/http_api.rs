//! The Xet HTTP API of a real `cas-node demo` process (embedded S3, RocksDB index):
//! uploads, reconstructions, dedup queries, and refused input leaving nothing behind.

mod support;

use cas_client::pipeline::{UploadPlan, UploadSession};
use cas_core::chunking::chunk_and_hash;
use cas_core::hash::MerkleHash;
use cas_core::shard::{FileInfo, Shard, parse_shard};
use cas_core::xorb::decode_range_body;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::{DemoNode, ExternalS3};

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Api {
    fn new(node: &DemoNode) -> Self {
        Api {
            http: reqwest::Client::new(),
            base: node.endpoint.clone(),
            token: node.token.clone(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("body").to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, String)]) -> Reply {
        self.send(reqwest::Method::GET, path, Some(&self.token), headers, None)
            .await
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Reply {
        self.send(
            reqwest::Method::POST,
            path,
            Some(&self.token),
            &[],
            Some(body),
        )
        .await
    }

    async fn head(&self, path: &str) -> Reply {
        self.send(reqwest::Method::HEAD, path, Some(&self.token), &[], None)
            .await
    }

    /// Uploads a plan's xorbs and its shard (v2); returns the NDJSON frames.
    async fn upload_plan(&self, plan: &UploadPlan) -> Vec<Value> {
        for x in &plan.xorbs {
            let r = self
                .post(&format!("/v1/xorbs/default/{}", x.hash), x.bytes.clone())
                .await;
            assert_eq!(
                r.status,
                200,
                "xorb upload: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
        let mut shard = plan.shard.clone();
        shard.canonicalize();
        let r = self
            .post("/v2/shards", shard.to_bytes().expect("shard"))
            .await;
        assert_eq!(
            r.status,
            200,
            "shard upload: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.headers["content-type"], "application/x-ndjson");
        String::from_utf8(r.body)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("frame"))
            .collect()
    }

    /// Downloads through `/v2/reconstructions` with an optional `Range`.
    async fn download(
        &self,
        file: &MerkleHash,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>, Reply> {
        let headers: Vec<(&str, String)> = range
            .map(|(s, e)| ("range", format!("bytes={s}-{e}")))
            .into_iter()
            .collect();
        let r = self
            .get(&format!("/v2/reconstructions/{file}"), &headers)
            .await;
        if r.status != 200 {
            return Err(r);
        }
        let v = r.json();
        let mut out = Vec::new();
        for term in v["terms"].as_array().expect("terms") {
            let (cs, ce) = (
                term["range"]["start"].as_u64().unwrap(),
                term["range"]["end"].as_u64().unwrap(),
            );
            let fetches = v["xorbs"][term["hash"].as_str().unwrap()]
                .as_array()
                .expect("xorb entry");
            let (url, fr) = fetches
                .iter()
                .flat_map(|f| {
                    f["ranges"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(move |fr| (f["url"].as_str().unwrap(), fr))
                })
                .find(|(_, fr)| {
                    fr["chunks"]["start"].as_u64().unwrap() <= cs
                        && ce <= fr["chunks"]["end"].as_u64().unwrap()
                })
                .expect("a fetch range contains the term");
            // Fetch URLs are self-authorising: no bearer token.
            let body = self
                .http
                .get(url)
                .header(
                    "range",
                    format!("bytes={}-{}", fr["bytes"]["start"], fr["bytes"]["end"]),
                )
                .send()
                .await
                .expect("fetch")
                .bytes()
                .await
                .expect("fetch body");
            let mut data = Vec::new();
            let ends = decode_range_body(&body, &mut data).expect("range body decodes");
            let first = fr["chunks"]["start"].as_u64().unwrap();
            // `ends` holds n + 1 boundaries, 0 first.
            let skip = ends[(cs - first) as usize];
            let end = ends[(ce - first) as usize];
            assert_eq!(
                (end - skip) as u64,
                term["unpacked_length"].as_u64().unwrap()
            );
            out.extend_from_slice(&data[skip..end]);
        }
        let skip = v["offset_into_first_range"].as_u64().unwrap() as usize;
        out.drain(..skip.min(out.len()));
        if let Some((s, e)) = range {
            out.truncate((e - s + 1) as usize);
        }
        Ok(out)
    }
}

/// Sends only the headers of a POST declaring `len` body bytes; returns the raw answer.
async fn oversized_upload_status(endpoint: &str, path: &str, token: &str, len: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: {len}\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.expect("send headers");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("answer within 10 s")
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A xorb upload sent by hand over one connection (`Connection: close`), to
/// control how its body arrives: chunked (no length) or with a length, in
/// pieces, paused, or cut off by dropping it.
struct RawUpload {
    conn: tokio::net::TcpStream,
    chunked: bool,
}

impl RawUpload {
    /// Sends the request head for xorb `hash`: `Content-Length: len`, or
    /// chunked when `len` is `None`.
    async fn start(node: &DemoNode, hash: &MerkleHash, len: Option<usize>) -> Self {
        use tokio::io::AsyncWriteExt;
        let addr = node.endpoint.trim_start_matches("http://");
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let framing = match len {
            None => "Transfer-Encoding: chunked".to_owned(),
            Some(n) => format!("Content-Length: {n}"),
        };
        let head = format!(
            "POST /v1/xorbs/default/{hash} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n{framing}\r\nConnection: close\r\n\r\n",
            node.token
        );
        conn.write_all(head.as_bytes()).await.expect("send headers");
        RawUpload {
            conn,
            chunked: len.is_none(),
        }
    }

    /// Sends the next body bytes (as 1 MiB chunks when chunked).
    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        if !self.chunked {
            self.conn.write_all(bytes).await.expect("send");
            return;
        }
        for piece in bytes.chunks(1 << 20) {
            let size = format!("{:x}\r\n", piece.len());
            for part in [size.as_bytes(), piece, b"\r\n"] {
                self.conn.write_all(part).await.expect("send");
            }
        }
    }

    /// Ends the body and returns the whole answer.
    async fn answer(mut self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.chunked {
            self.conn.write_all(b"0\r\n\r\n").await.expect("send");
        }
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            self.conn.read_to_end(&mut answer),
        )
        .await
        .expect("answer within 60 s")
        .expect("read");
        String::from_utf8_lossy(&answer).into_owned()
    }
}

/// Uploads `body` as xorb `hash`, chunked; returns the answer.
async fn chunked_xorb_upload(node: &DemoNode, hash: &MerkleHash, body: &[u8]) -> String {
    let mut upload = RawUpload::start(node, hash, None).await;
    upload.send(body).await;
    upload.answer().await
}

fn plan_for(files: &[&[u8]], answers: &[Vec<u8>]) -> (UploadPlan, Vec<MerkleHash>) {
    let mut session = UploadSession::new();
    for a in answers {
        session.add_dedup_answer(&parse_shard(a).expect("dedup answer parses"));
    }
    let hashes = files
        .iter()
        .map(|f| {
            session
                .add_file(f, &chunk_and_hash(f))
                .expect("add file")
                .file_hash
        })
        .collect();
    (session.finish().expect("plan"), hashes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_then_reconstruct_whole_and_ranges() {
    upload_then_reconstruct_whole_and_ranges_on(DemoNode::start()).await;
}

/// The same against Garage (CI runs it; skipped when `GARAGE_ENDPOINT` is not set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_then_reconstruct_whole_and_ranges_on_garage() {
    if let Some(s3) = ExternalS3::garage() {
        upload_then_reconstruct_whole_and_ranges_on(DemoNode::start_with(Some(s3))).await;
    }
}

/// Uploads through the HTTP API of `node`, then reads back whole files and ranges.
async fn upload_then_reconstruct_whole_and_ranges_on(node: DemoNode) {
    let api = Api::new(&node);
    let a = random_bytes(3_000_000, 1);
    let mut b = vec![0u8; 700_000];
    b.extend_from_slice(&random_bytes(100_000, 2));
    let (plan, hashes) = plan_for(&[&a, &b, &[]], &[]);

    let frames = api.upload_plan(&plan).await;
    assert_eq!(
        frames.last().unwrap(),
        &serde_json::json!({"type": "result", "result": 1}),
        "{frames:?}"
    );
    assert!(frames.iter().any(|f| f["type"] == "committing"));

    // Idempotent: the same xorb again is not inserted, the same shard again says 0.
    let x = &plan.xorbs[0];
    let again = api
        .post(&format!("/v1/xorbs/default/{}", x.hash), x.bytes.clone())
        .await;
    assert_eq!(again.json(), serde_json::json!({"was_inserted": false}));
    let mut shard = plan.shard.clone();
    shard.canonicalize();
    let v1 = api.post("/v1/shards", shard.to_bytes().unwrap()).await;
    assert_eq!(v1.json(), serde_json::json!({"result": 0}));

    let head = api.head(&format!("/v1/xorbs/default/{}", x.hash)).await;
    assert_eq!(head.status, 200);
    assert!(
        head.headers["content-length"]
            .to_str()
            .unwrap()
            .parse::<usize>()
            .unwrap()
            >= x.bytes.len()
    );
    let head = api.head(&format!("/v1/files/{}", hashes[0])).await;
    assert_eq!(
        (
            head.status,
            head.headers["content-length"].to_str().unwrap()
        ),
        (200, "3000000")
    );

    assert_eq!(api.download(&hashes[0], None).await.ok().unwrap(), a);
    assert_eq!(api.download(&hashes[1], None).await.ok().unwrap(), b);
    for (s, e) in [
        (0, 0),
        (1, 99_999),
        (65_000, 1_500_000),
        (2_999_999, 2_999_999),
        (2_500_000, 9_999_999),
    ] {
        let got = api.download(&hashes[0], Some((s, e))).await.ok().unwrap();
        assert_eq!(
            got,
            a[s as usize..=(e as usize).min(a.len() - 1)],
            "range {s}-{e}"
        );
    }
    let r = api
        .download(&hashes[0], Some((3_000_000, 3_000_010)))
        .await
        .unwrap_err();
    assert_eq!(
        (r.status, r.code().as_str()),
        (416, "range_not_satisfiable")
    );

    // v1 answers the same reconstruction with fetch_info.
    let v1 = api
        .get(&format!("/v1/reconstructions/{}", hashes[0]), &[])
        .await
        .json();
    assert!(!v1["fetch_info"].as_object().unwrap().is_empty());
    assert_eq!(
        v1["terms"].as_array().unwrap().len(),
        api.get(&format!("/v2/reconstructions/{}", hashes[0]), &[])
            .await
            .json()["terms"]
            .as_array()
            .unwrap()
            .len()
    );
    let batch = api
        .get(
            &format!(
                "/v1/reconstructions?file_id={}&file_id={}",
                hashes[0], hashes[1]
            ),
            &[],
        )
        .await;
    assert_eq!(batch.json()["files"].as_object().unwrap().len(), 2);

    let missing = MerkleHash([7; 32]);
    let r = api
        .get(&format!("/v2/reconstructions/{missing}"), &[])
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "file_not_found"));
    let r = api.head(&format!("/v1/files/{missing}")).await;
    assert_eq!(r.status, 404);

    // Telemetry is accepted; grants are not offered.
    let r = api
        .post("/v1/telemetry", br#"{"event":"x"}"#.to_vec())
        .await;
    assert_eq!(r.status, 200);
    let r = api
        .post(
            &format!("/v1/xorb-grants/default/{}", x.hash),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "grants_unavailable"));
}

/// A xorb larger than a fetch piece is answered in pieces of at most
/// `FETCH_RANGE_BYTES` (whole chunks), each term lying in exactly one, and the
/// file and ranges crossing the cuts read back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_xorbs_are_fetched_in_pieces() {
    use cas_node::service::reconstruction::FETCH_RANGE_BYTES;
    let node = DemoNode::start();
    let api = Api::new(&node);
    // Random bytes do not compress: one xorb of ~3 pieces.
    let a = random_bytes(3 * FETCH_RANGE_BYTES as usize - 12_345, 9);
    let (plan, hashes) = plan_for(&[&a], &[]);
    assert_eq!(plan.xorbs.len(), 1);
    let frames = api.upload_plan(&plan).await;
    assert_eq!(
        frames.last().unwrap(),
        &serde_json::json!({"type": "result", "result": 1})
    );

    let v = api
        .get(&format!("/v2/reconstructions/{}", hashes[0]), &[])
        .await
        .json();
    let ranges = v["xorbs"][plan.xorbs[0].hash.to_hex()][0]["ranges"]
        .as_array()
        .expect("ranges")
        .clone();
    assert!(ranges.len() >= 3, "{} fetch ranges", ranges.len());
    let field = |r: &Value, k: &str, e: &str| r[k][e].as_u64().unwrap();
    let mut next_chunk = 0;
    for r in &ranges {
        let (start, end) = (field(r, "bytes", "start"), field(r, "bytes", "end"));
        assert!(end + 1 - start <= FETCH_RANGE_BYTES, "range {start}-{end}");
        assert_eq!(field(r, "chunks", "start"), next_chunk, "contiguous pieces");
        next_chunk = field(r, "chunks", "end");
    }
    let terms = v["terms"].as_array().expect("terms");
    let mut total = 0;
    for t in terms {
        let (s, e) = (field(t, "range", "start"), field(t, "range", "end"));
        let holding = ranges
            .iter()
            .filter(|r| field(r, "chunks", "start") <= s && e <= field(r, "chunks", "end"))
            .count();
        assert_eq!(holding, 1, "term {s}..{e} lies in exactly one fetch range");
        total += t["unpacked_length"].as_u64().unwrap();
    }
    assert_eq!(total, a.len() as u64);

    assert_eq!(api.download(&hashes[0], None).await.ok().unwrap(), a);
    let cut = FETCH_RANGE_BYTES; // near the first cut, in file bytes
    for (s, e) in [(cut - 70_000, cut + 70_000), (1, a.len() as u64 - 2)] {
        let got = api.download(&hashes[0], Some((s, e))).await.ok().unwrap();
        assert_eq!(got, a[s as usize..=e as usize], "range {s}-{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_query_finds_stored_chunks_under_both_prefixes() {
    let node = DemoNode::start();
    let api = Api::new(&node);
    let a = random_bytes(4_000_000, 3);
    let (plan, _) = plan_for(&[&a], &[]);
    api.upload_plan(&plan).await;

    let first_chunk = chunk_and_hash(&a)[0].hash;
    let mut answers = Vec::new();
    for prefix in ["default", "default-merkledb"] {
        let r = api
            .get(&format!("/v1/chunks/{prefix}/{first_chunk}"), &[])
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let parsed = parse_shard(&r.body).expect("a complete shard");
        let footer = parsed.footer.as_ref().expect("with footer");
        assert!(
            footer.options().effective_key().is_some(),
            "chunk hashes are keyed"
        );
        assert_eq!(parsed.shard.xorbs.len(), 1);
        assert!(parsed.shard.files.is_empty());
        answers.push(r.body);
    }
    let r = api
        .get(&format!("/v1/chunks/default/{}", MerkleHash([9; 32])), &[])
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "chunk_not_found"));

    // A one-byte edit re-uploads only around the edit.
    let mut edited = a.clone();
    edited[2_000_000] ^= 0xff;
    let (plan2, hashes2) = plan_for(&[&edited], &answers[..1]);
    let sent: usize = plan2.xorbs.iter().map(|x| x.bytes.len()).sum();
    assert!(sent < 500_000, "sent {sent} bytes for a one-byte edit");
    api.upload_plan(&plan2).await;
    assert_eq!(api.download(&hashes2[0], None).await.ok().unwrap(), edited);
}

/// Xorbs streamed in (chunked, without a length) are stored exactly as checked:
/// the records and the footer they came with (its reserved bytes kept), or a
/// fresh footer; one whose client goes away half-way leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_xorb_uploads_store_what_was_checked() {
    let node = DemoNode::start();
    let api = Api::new(&node);
    // Three xorbs of about 30 MB, each a file of its own.
    let x: Vec<_> = (0..3)
        .map(|i| {
            let (plan, _) = plan_for(&[&random_bytes(30_000_000, 40 + i)], &[]);
            assert_eq!(plan.xorbs.len(), 1);
            plan.xorbs[0].clone()
        })
        .collect();

    // With its own footer, carrying a nonce in the reserved bytes.
    let mut footer = x[0].footer();
    footer.set_nonce([9, 8, 7, 6]);
    let with_footer = [x[0].bytes.clone(), footer.to_bytes()].concat();
    let answer = chunked_xorb_upload(&node, &x[0].hash, &with_footer).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""was_inserted":true"#), "{answer}");
    assert!(node.stored_xorb(&x[0].hash) == with_footer);
    // Without a footer: the node appends one.
    let answer = chunked_xorb_upload(&node, &x[1].hash, &x[1].bytes).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(node.stored_xorb(&x[1].hash) == x[1].to_bytes_with_footer());
    for xorb in [&x[0], &x[1]] {
        let head = api.head(&format!("/v1/xorbs/default/{}", xorb.hash)).await;
        assert_eq!(head.status, 200);
    }

    // Cut off two thirds in: parts went to S3, the upload is aborted.
    let before = node.s3_objects();
    let cut = x[2].bytes.len() * 2 / 3;
    let mut upload = RawUpload::start(&node, &x[2].hash, Some(x[2].bytes.len())).await;
    upload.send(&x[2].bytes[..cut]).await;
    drop(upload);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while node.s3_objects() != before {
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {:?}",
            node.s3_objects().difference(&before).collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let head = api.head(&format!("/v1/xorbs/default/{}", x[2].hash)).await;
    assert_eq!(head.status, 404);
}

/// S3 failing while a xorb streams in: the client, which sends it whole, gets
/// a retryable 503 with the store's code, and nothing is registered or
/// stored under the xorb's key; once S3 is back the same upload succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_during_a_streamed_xorb_fails_it_cleanly() {
    use cas_node::local_cluster::{S3Fault, S3Proxy};
    use cas_node::store::{LocalS3, LocalS3Config};
    let dir = tempfile::tempdir().unwrap();
    let local = LocalS3::start(LocalS3Config::new(dir.path()))
        .await
        .unwrap();
    let proxy = S3Proxy::start("127.0.0.1:0".parse().unwrap(), local.addr())
        .await
        .unwrap();
    let s3 = ExternalS3::at(&local.settings(), &proxy.endpoint());
    let node = tokio::task::block_in_place(|| DemoNode::start_with(Some(s3)));
    let api = Api::new(&node);
    let (plan, _) = plan_for(&[&random_bytes(30_000_000, 50)], &[]);
    let x = &plan.xorbs[0];
    let stored = || support::xorb_object(local.root(), &x.hash).is_some();

    // Two thirds go through (parts reach S3), then S3 fails.
    let mut upload = RawUpload::start(&node, &x.hash, Some(x.bytes.len())).await;
    let cut = x.bytes.len() * 2 / 3;
    upload.send(&x.bytes[..cut]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    proxy.set(S3Fault::Unavailable);
    upload.send(&x.bytes[cut..]).await;
    let answer = upload.answer().await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("store_unavailable"), "{answer}");
    assert!(!stored(), "the failed xorb was stored");

    proxy.set(S3Fault::None);
    let head = api.head(&format!("/v1/xorbs/default/{}", x.hash)).await;
    assert_eq!(head.status, 404);
    let r = api
        .post(&format!("/v1/xorbs/default/{}", x.hash), x.bytes.clone())
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(stored());
    drop(node);
    local.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_input_gets_its_status_and_leaves_nothing() {
    let node = DemoNode::start();
    let api = Api::new(&node);
    let a = random_bytes(1_000_000, 4);
    let (plan, hashes) = plan_for(&[&a], &[]);
    let x = &plan.xorbs[0];
    let before = node.s3_objects();

    // Xorbs: wrong name, truncated, garbage, bad hash text, unknown prefix, too large.
    let other = MerkleHash([1; 32]);
    let cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        (
            format!("/v1/xorbs/default/{other}"),
            x.bytes.clone(),
            400,
            "xorb_hash_mismatch",
        ),
        (
            format!("/v1/xorbs/default/{}", x.hash),
            x.bytes[..x.bytes.len() - 5].to_vec(),
            400,
            "malformed_xorb",
        ),
        (
            format!("/v1/xorbs/default/{}", x.hash),
            vec![0xAB; 1000],
            400,
            "malformed_xorb",
        ),
        (
            "/v1/xorbs/default/not-a-hash".to_owned(),
            x.bytes.clone(),
            400,
            "invalid_hash",
        ),
        (
            format!("/v1/xorbs/other/{}", x.hash),
            x.bytes.clone(),
            400,
            "unknown_prefix",
        ),
    ];
    // An oversized body is refused from its Content-Length, before it is read.
    let head = oversized_upload_status(
        &node.endpoint,
        &format!("/v1/xorbs/default/{}", x.hash),
        &node.token,
        70 << 20,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("body_too_large"), "{head}");
    for (path, body, status, code) in cases {
        let r = api.post(&path, body).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // A large xorb is checked as it streams in and its checked parts are sent
    // to S3 meanwhile: refused late (wrong name, a bad record three quarters
    // in, cut short), its multipart upload is aborted and leaves nothing.
    let big_data = random_bytes(30_000_000, 5);
    let (big_plan, _) = plan_for(&[&big_data], &[]);
    let big = &big_plan.xorbs[0];
    assert_eq!(big_plan.xorbs.len(), 1);
    let late = big
        .chunks
        .iter()
        .find(|c| c.serialized_offset > big.bytes.len() * 3 / 4)
        .expect("a chunk three quarters in");
    let mut bad_record = big.bytes.clone();
    bad_record[late.serialized_offset] = 1;
    let big_cases = [
        (other, big.bytes.clone(), "xorb_hash_mismatch"),
        (big.hash, bad_record, "malformed_xorb"),
        (
            big.hash,
            big.bytes[..big.bytes.len() - 1].to_vec(),
            "malformed_xorb",
        ),
    ];
    for (name, body, code) in big_cases {
        let r = api.post(&format!("/v1/xorbs/default/{name}"), body).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, code),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(node.s3_objects(), before, "refused xorbs left S3 state");
    assert_eq!(
        api.head(&format!("/v1/xorbs/default/{}", x.hash))
            .await
            .status,
        404
    );

    // Shards: referencing a xorb that was never uploaded; garbage; wrong file hash.
    let mut shard = plan.shard.clone();
    shard.canonicalize();
    for path in ["/v1/shards", "/v2/shards"] {
        let r = api.post(path, shard.to_bytes().unwrap()).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "unknown_xorb"),
            "{path}"
        );
        let r = api.post(path, b"not a shard".to_vec()).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "malformed_shard"),
            "{path}"
        );
    }
    for x in &plan.xorbs {
        assert_eq!(
            api.post(&format!("/v1/xorbs/default/{}", x.hash), x.bytes.clone())
                .await
                .status,
            200
        );
    }
    let after_xorbs = node.s3_objects();
    let mut bad = shard.clone();
    bad.files[0].file_hash = MerkleHash([3; 32]);
    let r = api.post("/v1/shards", bad.to_bytes().unwrap()).await;
    assert_eq!((r.status, r.code().as_str()), (400, "file_hash_mismatch"));
    let mut bad = shard.clone();
    bad.files[0].verification.as_mut().unwrap()[0] = MerkleHash([4; 32]);
    let r = api.post("/v1/shards", bad.to_bytes().unwrap()).await;
    assert_eq!((r.status, r.code().as_str()), (400, "malformed_shard"));
    let mut bad: Shard = shard.clone();
    let t = &mut bad.files[0].terms[0];
    t.chunk_end += 100;
    let r = api.post("/v1/shards", bad.to_bytes().unwrap()).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        node.s3_objects(),
        after_xorbs,
        "refused shards stored nothing"
    );
    assert_eq!(
        api.head(&format!("/v1/files/{}", hashes[0])).await.status,
        404
    );

    // Tokens: none, garbage, expired, read scope on a write endpoint.
    let path = format!("/v1/xorbs/default/{}", x.hash);
    let r = api
        .send(
            reqwest::Method::POST,
            &path,
            None,
            &[],
            Some(x.bytes.clone()),
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.headers.contains_key("www-authenticate"));
    let r = api
        .send(
            reqwest::Method::POST,
            &path,
            Some("garbage"),
            &[],
            Some(x.bytes.clone()),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = api
        .send(
            reqwest::Method::POST,
            &path,
            Some(&node.expired_token()),
            &[],
            Some(x.bytes.clone()),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (401, "token_expired"));
    let read = node.issue_token("read", "1h");
    let r = api
        .send(
            reqwest::Method::POST,
            "/v1/shards",
            Some(&read),
            &[],
            Some(shard.to_bytes().unwrap()),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = api
        .send(
            reqwest::Method::GET,
            &format!("/v2/reconstructions/{}", hashes[0]),
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        api.head(&format!("/v1/files/{}", hashes[0])).await.status,
        404
    );
    let _ = before;

    // With every xorb present the same shard registers, and the read token can read it.
    assert_eq!(
        api.post("/v1/shards", shard.to_bytes().unwrap())
            .await
            .json(),
        serde_json::json!({"result": 1})
    );
    let r = api
        .send(
            reqwest::Method::HEAD,
            &format!("/v1/files/{}", hashes[0]),
            Some(&read),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let _: &FileInfo = &shard.files[0];
}
