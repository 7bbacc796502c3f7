//! Deterministic benchmark inputs: new data (mixed random, tensor-like and text
//! content), a large text-like file and its one-line edits, and two versions of a
//! safetensors-like model file where a share of the tensors changed.

use std::path::{Path, PathBuf};

use cas_compat::datasets;

/// Writes `data` to `dir/name`.
fn write(dir: &Path, name: &str, data: &[u8]) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, data)?;
    Ok(p)
}

/// `mb` MiB of new data (the mix the chunking benchmark uses).
pub fn new_data(dir: &Path, name: &str, mb: usize, seed: u64) -> anyhow::Result<PathBuf> {
    write(dir, name, &datasets::mixed(seed, mb << 20))
}

/// A text-like file of `mb` MiB, the same file with one line changed in place in its
/// middle, and with one line inserted there.
pub fn text_versions(dir: &Path, mb: usize) -> anyhow::Result<[PathBuf; 3]> {
    let base = datasets::text(7, mb << 20);
    let mid = base.len() / 2;
    let line_start = base[..mid]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let mut edited = base.clone();
    let replacement = b"an edited line";
    for (i, b) in replacement.iter().enumerate() {
        if line_start + i < edited.len() && edited[line_start + i] != b'\n' {
            edited[line_start + i] = *b;
        }
    }
    let mut inserted = base[..line_start].to_vec();
    inserted.extend_from_slice(b"a new line inserted here\n");
    inserted.extend_from_slice(&base[line_start..]);
    Ok([
        write(dir, "text-v1.txt", &base)?,
        write(dir, "text-edited.txt", &edited)?,
        write(dir, "text-inserted.txt", &inserted)?,
    ])
}

/// A safetensors-like file: an 8-byte header length, a JSON header, then `tensors`
/// float32 tensors of equal size filling `mb` MiB.
fn model(tensors: &[Vec<u8>]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut offset = 0usize;
    for (i, t) in tensors.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"layer.{i}.weight\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            t.len() / 4,
            offset + t.len()
        ));
        offset += t.len();
    }
    header.push('}');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for t in tensors {
        out.extend_from_slice(t);
    }
    out
}

/// Two versions of a model of `mb` MiB in `n` tensors; in the second, `changed_pct`
/// percent of the tensors (spread through the file) hold new values.
pub fn model_versions(
    dir: &Path,
    mb: usize,
    n: usize,
    changed_pct: usize,
) -> anyhow::Result<(PathBuf, PathBuf, usize)> {
    let size = (mb << 20) / n / 4 * 4;
    let v1: Vec<Vec<u8>> = (0..n)
        .map(|i| datasets::float_tensor(1_000 + i as u64, size))
        .collect();
    let changed = (n * changed_pct).div_ceil(100);
    let mut v2 = v1.clone();
    for k in 0..changed {
        let i = k * n / changed;
        v2[i] = datasets::float_tensor(9_000 + i as u64, size);
    }
    Ok((
        write(dir, "model-v1.safetensors", &model(&v1))?,
        write(dir, "model-v2.safetensors", &model(&v2))?,
        changed,
    ))
}
