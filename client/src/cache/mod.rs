//! The client's local cache directory: what earlier uploads taught it.
//!
//! - [`ShardCache`]: per endpoint, the shards this client registered and the
//!   global-dedup answers it received, so a later upload finds every chunk the
//!   store is known to hold without asking the server.
//! - [`manifest`]: per uploaded path, the file's chunk list and SHA-256
//!   checkpoints, so re-uploading an edited file re-hashes only what changed.
//!
//! The cache is an optimisation only: unreadable or corrupt entries are removed
//! and ignored, writes are atomic (temporary file, then rename), and no cache
//! error ever fails an upload.

pub mod manifest;
mod shards;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use manifest::{Manifest, ManifestStore};
pub use shards::{CachedShards, ShardCache};

/// Default bound of one endpoint's shard cache, and of the file manifests
/// (256 MiB of shards describe about 160 GiB of uploaded data).
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 256 << 20;

/// What can go wrong in the cache (reported, never fatal to an upload).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A cache file or directory could not be read or written.
    #[error("cache {}: {source}", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A cache entry could not be encoded.
    #[error("cache entry: {0}")]
    Encode(String),
}

impl CacheError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CacheError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/cas`, else `~/.cache/cas`.
pub fn default_dir() -> Option<PathBuf> {
    let nonempty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    std::env::var_os("XDG_CACHE_HOME")
        .and_then(nonempty)
        .map(|d| d.join("cas"))
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(nonempty)
                .map(|h| h.join(".cache").join("cas"))
        })
}

/// A local cache rooted at one directory, for uploads to one endpoint.
#[derive(Clone, Debug)]
pub struct LocalCache {
    /// Shards known for this endpoint.
    pub shards: ShardCache,
    /// Manifests of uploaded files (shared by all endpoints: chunks are content).
    pub manifests: ManifestStore,
}

impl LocalCache {
    /// The cache under `root` for `endpoint`, its shards and its manifests each
    /// bounded by `max_bytes`. Nothing is read or created until used.
    pub fn new(root: &Path, endpoint: &str, max_bytes: u64) -> Self {
        LocalCache {
            shards: ShardCache::new(root, endpoint, max_bytes),
            manifests: ManifestStore::new(root.join("manifests"), max_bytes),
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory,
/// then a rename over `path` (readers see the old file or the new one, never half).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| CacheError::io(dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| CacheError::io(tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| CacheError::io(path, e.error))?;
    Ok(())
}

/// The regular files in `dir` that `keep` selects, with sizes and modification times.
pub(crate) fn list_files(
    dir: &Path,
    keep: impl Fn(&Path) -> bool,
) -> Vec<(PathBuf, u64, SystemTime)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| keep(&e.path()) && !e.file_name().to_string_lossy().starts_with(".tmp-"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file().then(|| {
                let t = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                (e.path(), m.len(), t)
            })
        })
        .collect()
}

/// Removes the least recently modified files of `dir` that `keep` selects
/// until the rest fit in `max_bytes`.
pub(crate) fn evict_oldest(
    dir: &Path,
    max_bytes: u64,
    keep: impl Fn(&Path) -> bool,
) -> Result<(), CacheError> {
    let mut entries = list_files(dir, keep);
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    if total <= max_bytes {
        return Ok(());
    }
    entries.sort_by_key(|e| e.2);
    for (path, len, _) in entries {
        if total <= max_bytes {
            break;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => total -= len,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= len,
            Err(e) => return Err(CacheError::io(path, e)),
        }
    }
    Ok(())
}

/// A file name part safe on every platform, made from `text` and a hash of it.
pub(crate) fn safe_name(text: &str) -> String {
    let readable: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(48)
        .collect();
    let digest = cas_core::hash::chunk_hash(text.as_bytes()).to_hex();
    format!("{readable}-{}", &digest[..24])
}
