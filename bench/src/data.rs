//! Deterministic test data, generated from a seed and streamed to files.
//!
//! Every generator writes in blocks of at most [`BLOCK`] bytes, so memory stays
//! small whatever the file size, and every byte is a pure function of the seed
//! (and of the block, line or tensor it belongs to), so edited versions of a
//! file share all their unedited bytes with the original.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// Largest write of a generator, and the buffer size of [`files_equal`].
pub const BLOCK: usize = 1 << 20;

/// One piece of the mixed data set ([`write_mixed`]): 4 MiB.
const MIXED_PIECE: u64 = 4 << 20;

/// SplitMix64: a tiny, fast, deterministic generator (not cryptographic).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`; the slight modulo bias does not matter here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fills `buf` with pseudo-random (incompressible) bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut words = buf.chunks_exact_mut(8);
        for word in &mut words {
            word.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = words.into_remainder();
        if !rest.is_empty() {
            let bytes = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&bytes[..rest.len()]);
        }
    }

    /// A float uniform in `[-scale, scale)`, like a trained weight.
    fn weight(&mut self, scale: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u32 << 24) as f32;
        (unit * 2.0 - 1.0) * scale
    }
}

/// A seed derived from `seed` and a label (a block, line or tensor number).
pub fn derive(seed: u64, label: u64) -> u64 {
    SplitMix64::new(seed ^ label.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// bfloat16: the top half of a float32.
    Bf16,
}

impl Dtype {
    /// Bytes per element.
    pub fn width(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 => 2,
        }
    }

    /// The safetensors name of the type.
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::Bf16 => "BF16",
        }
    }
}

/// Fills `buf` (a whole number of elements) with weights of type `dtype`.
fn fill_tensor(rng: &mut SplitMix64, dtype: Dtype, scale: f32, buf: &mut [u8]) {
    match dtype {
        Dtype::F32 => {
            for element in buf.chunks_exact_mut(4) {
                element.copy_from_slice(&rng.weight(scale).to_le_bytes());
            }
        }
        Dtype::Bf16 => {
            for element in buf.chunks_exact_mut(2) {
                let bits = rng.weight(scale).to_bits();
                element.copy_from_slice(&((bits >> 16) as u16).to_le_bytes());
            }
        }
    }
}

/// Writes `size` bytes of mixed new data to `path`: 4 MiB pieces that are, in
/// turn, random bytes, float32 weights, random bytes and bf16 weights (half
/// incompressible, half the byte-groupable tensor data LZ4/BG4 compress).
pub fn write_mixed(path: &Path, seed: u64, size: u64) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(BLOCK, File::create(path)?);
    let mut buf = vec![0u8; BLOCK];
    let mut written = 0u64;
    let mut piece = 0u64;
    while written < size {
        let mut rng = SplitMix64::new(derive(seed, piece));
        let piece_len = MIXED_PIECE.min(size - written);
        let mut done = 0u64;
        while done < piece_len {
            let n = (BLOCK as u64).min(piece_len - done) as usize;
            let block = &mut buf[..n];
            match piece % 4 {
                1 => fill_tensor(&mut rng, Dtype::F32, 0.05, block),
                3 => fill_tensor(&mut rng, Dtype::Bf16, 0.05, block),
                _ => rng.fill(block),
            }
            out.write_all(block)?;
            done += n as u64;
        }
        written += piece_len;
        piece += 1;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// How a version of the text file differs from the first version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEdit {
    /// The first version.
    None,
    /// One line in the middle rewritten in place (same length).
    ReplaceLine,
    /// One new line inserted in the middle (the file grows by its length).
    InsertLine,
}

/// Words of the generated text records.
const WORDS: [&str; 32] = [
    "model",
    "weights",
    "tensor",
    "layer",
    "gradient",
    "token",
    "batch",
    "epoch",
    "loss",
    "dataset",
    "shard",
    "vector",
    "matrix",
    "kernel",
    "attention",
    "head",
    "embedding",
    "optimizer",
    "schedule",
    "warmup",
    "checkpoint",
    "inference",
    "latency",
    "throughput",
    "region",
    "replica",
    "chunk",
    "xorb",
    "merkle",
    "hash",
    "bucket",
    "object",
];

/// Appends text record `index` of the data set `seed` to `line`. `variant` 0 is
/// the original; any other variant has a different `score` of the same width.
fn text_line(seed: u64, index: u64, variant: u64, line: &mut String) {
    use std::fmt::Write as _;
    let mut rng = SplitMix64::new(derive(seed, index));
    let user = rng.below(100_000);
    let score = (rng.below(1_000_000) + variant * 500_000) % 1_000_000;
    let words = 5 + rng.below(20);
    let _ = write!(
        line,
        "{{\"id\":{index:010},\"user\":\"user{user:05}\",\"score\":0.{score:06},\"text\":\""
    );
    for i in 0..words {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    line.push_str("\"}\n");
}

/// Writes a JSON-lines text file of `size` bytes (its last line cut short) to
/// `path`, with `edit` applied to the first line starting at or after the middle;
/// returns the file's size (`size`, plus the inserted line for
/// [`TextEdit::InsertLine`]).
pub fn write_text(path: &Path, seed: u64, size: u64, edit: TextEdit) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(BLOCK, File::create(path)?);
    let mut limit = size;
    let mut written = 0u64;
    let mut edited = edit == TextEdit::None;
    let mut line = String::with_capacity(256);
    let mut index = 0u64;
    while written < limit {
        line.clear();
        if !edited && written >= size / 2 {
            edited = true;
            match edit {
                TextEdit::ReplaceLine => text_line(seed, index, 1, &mut line),
                TextEdit::InsertLine => {
                    // A record of another data set, followed by the original line.
                    text_line(derive(seed, u64::MAX), index, 0, &mut line);
                    limit += line.len() as u64;
                    text_line(seed, index, 0, &mut line);
                }
                TextEdit::None => unreachable!("the original needs no edit"),
            }
        } else {
            text_line(seed, index, 0, &mut line);
        }
        let n = (line.len() as u64).min(limit - written) as usize;
        out.write_all(&line.as_bytes()[..n])?;
        written += n as u64;
        index += 1;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(written)
}

/// One tensor of a generated model.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    /// Tensor name, e.g. `model.layers.0.mlp.up_proj.weight`.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (row-major).
    pub shape: Vec<u64>,
}

impl TensorSpec {
    /// Size of the tensor's data in bytes.
    pub fn bytes(&self) -> u64 {
        self.shape.iter().product::<u64>() * self.dtype.width()
    }
}

/// The tensors of a small Llama-like model of about `size` bytes: a bf16
/// embedding of about a tenth of the size, then as many decoder layers (four
/// attention and three MLP projections in bf16, two float32 norms) as fill the
/// rest, then a final norm.
pub fn model_layout(size: u64) -> Vec<TensorSpec> {
    const HIDDEN: u64 = 1024;
    const INTER: u64 = 2816;
    let tensor = |name: String, dtype, shape: Vec<u64>| TensorSpec { name, dtype, shape };
    let vocab = ((size / 10 / (HIDDEN * 2)) / 64 * 64).max(64);
    let mut tensors = vec![tensor(
        "model.embed_tokens.weight".into(),
        Dtype::Bf16,
        vec![vocab, HIDDEN],
    )];
    let per_layer = 2 * HIDDEN * 4 + 4 * HIDDEN * HIDDEN * 2 + 3 * HIDDEN * INTER * 2;
    let rest = size.saturating_sub(tensors[0].bytes());
    let layers = ((rest + per_layer / 2) / per_layer).max(1);
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        tensors.push(tensor(
            format!("{p}.input_layernorm.weight"),
            Dtype::F32,
            vec![HIDDEN],
        ));
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            tensors.push(tensor(
                format!("{p}.self_attn.{proj}.weight"),
                Dtype::Bf16,
                vec![HIDDEN, HIDDEN],
            ));
        }
        tensors.push(tensor(
            format!("{p}.post_attention_layernorm.weight"),
            Dtype::F32,
            vec![HIDDEN],
        ));
        for (proj, shape) in [
            ("gate_proj", vec![INTER, HIDDEN]),
            ("up_proj", vec![INTER, HIDDEN]),
            ("down_proj", vec![HIDDEN, INTER]),
        ] {
            tensors.push(tensor(format!("{p}.mlp.{proj}.weight"), Dtype::Bf16, shape));
        }
    }
    tensors.push(tensor("model.norm.weight".into(), Dtype::F32, vec![HIDDEN]));
    tensors
}

/// Which of `count` tensors a second version changes: `round(count * fraction)`
/// of them, picked pseudo-randomly from `seed`.
pub fn changed_tensors(seed: u64, count: usize, fraction: f64) -> Vec<bool> {
    let changed = ((count as f64) * fraction).round() as usize;
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by_key(|&i| derive(seed ^ 0xC4A9_6ED0, i as u64));
    let mut picked = vec![false; count];
    for &i in order.iter().take(changed) {
        picked[i] = true;
    }
    picked
}

/// The safetensors header of `tensors` (data in layout order) for model
/// `version`: an 8-byte little-endian length, then JSON padded with spaces to a
/// multiple of 8 bytes. Versions below 10 give headers of one length, so every
/// tensor keeps its offset across versions.
fn safetensors_header(tensors: &[TensorSpec], version: u32) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    let mut offset = 0u64;
    for t in tensors {
        let end = offset + t.bytes();
        map.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": t.dtype.name(),
                "shape": t.shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    map.insert(
        "__metadata__".into(),
        serde_json::json!({"format": "pt", "version": version.to_string()}),
    );
    let mut json = serde_json::Value::Object(map).to_string().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut header = (json.len() as u64).to_le_bytes().to_vec();
    header.extend_from_slice(&json);
    header
}

/// Writes version `version` (1 or 2) of a safetensors-like model to `path`:
/// every tensor has weights determined by `seed` and its index, and in version
/// 2 the tensors marked in `changed` have new weights (as after fine-tuning);
/// returns the file's size.
pub fn write_model(
    path: &Path,
    seed: u64,
    tensors: &[TensorSpec],
    changed: &[bool],
    version: u32,
) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(BLOCK, File::create(path)?);
    let header = safetensors_header(tensors, version);
    out.write_all(&header)?;
    let mut written = header.len() as u64;
    let mut buf = vec![0u8; BLOCK];
    for (i, t) in tensors.iter().enumerate() {
        let generation = if version >= 2 && changed[i] { 2 } else { 1 };
        let mut rng = SplitMix64::new(derive(derive(seed, i as u64), generation));
        let mut left = t.bytes();
        while left > 0 {
            let n = (BLOCK as u64).min(left) as usize;
            fill_tensor(&mut rng, t.dtype, 0.02, &mut buf[..n]);
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        written += t.bytes();
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(written)
}

/// Reads `path` through once, so that a timed transfer of it starts with the
/// file in the page cache whichever system went before: this machine's memory
/// manager reclaims page cache left idle for a minute or so, which would
/// otherwise make the first reader of a file after a long step pay for the disk.
pub fn warm(path: &Path) -> io::Result<()> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; BLOCK];
    while read_full(&mut f, &mut buf)? > 0 {}
    Ok(())
}

/// Writes out every dirty page of the machine (`sync`) and waits for it, so
/// the transfer timed next does not pay for the writeback of the steps before
/// it (generating a file, or another system storing a gigabyte): which system
/// that writeback landed on would otherwise depend on the turn order.
pub fn settle() -> io::Result<()> {
    let status = std::process::Command::new("sync").status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("sync failed: {status}")))
    }
}

/// Whether two files have identical contents (read block by block).
pub fn files_equal(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).expect("read")
    }

    #[test]
    fn generators_are_deterministic_and_sized() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_mixed(&a, 7, 9 << 20).expect("write");
        write_mixed(&b, 7, 9 << 20).expect("write");
        assert_eq!(read(&a).len(), 9 << 20);
        assert!(files_equal(&a, &b).expect("compare"));
        write_mixed(&b, 8, 9 << 20).expect("write");
        assert!(!files_equal(&a, &b).expect("compare"));
    }

    #[test]
    fn text_edits_change_one_line_in_the_middle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |n: &str| dir.path().join(n);
        let size = 1 << 20;
        assert_eq!(
            write_text(&path("v1"), 3, size, TextEdit::None).unwrap(),
            size
        );
        assert_eq!(
            write_text(&path("r"), 3, size, TextEdit::ReplaceLine).unwrap(),
            size
        );
        let grown = write_text(&path("i"), 3, size, TextEdit::InsertLine).unwrap();
        let (v1, r, i) = (read(&path("v1")), read(&path("r")), read(&path("i")));
        let differing: Vec<usize> = (0..v1.len()).filter(|&k| v1[k] != r[k]).collect();
        assert!(
            !differing.is_empty() && differing.len() <= 6,
            "{differing:?}"
        );
        assert!(differing[0] as u64 >= size / 2);
        let inserted = (grown - size) as usize;
        assert!(inserted > 20);
        let at = (0..v1.len())
            .find(|&k| v1[k] != i[k])
            .expect("a difference");
        assert_eq!(v1[at..], i[at + inserted..]);
    }

    #[test]
    fn model_versions_differ_only_in_changed_tensors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tensors = model_layout(32 << 20);
        let changed = changed_tensors(5, tensors.len(), 0.3);
        assert_eq!(
            changed.iter().filter(|&&c| c).count(),
            (tensors.len() as f64 * 0.3).round() as usize
        );
        let (a, b) = (dir.path().join("v1"), dir.path().join("v2"));
        let size = write_model(&a, 5, &tensors, &changed, 1).unwrap();
        assert_eq!(write_model(&b, 5, &tensors, &changed, 2).unwrap(), size);
        let (v1, v2) = (read(&a), read(&b));
        let header = 8 + u64::from_le_bytes(v1[..8].try_into().unwrap()) as usize;
        let mut offset = header;
        for (t, &c) in tensors.iter().zip(&changed) {
            let end = offset + t.bytes() as usize;
            assert_eq!(v1[offset..end] != v2[offset..end], c, "{}", t.name);
            offset = end;
        }
        assert_eq!(offset as u64, size);
    }
}
