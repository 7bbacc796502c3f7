//! Shards known to be registered on one endpoint, kept on disk.
//!
//! One file per shard, `<shard hash>.mdb`, under `shards/<endpoint>/` in the
//! cache directory: different clusters hold different xorbs, so every endpoint
//! has its own. The newest shards are kept up to a size bound; a shard that is
//! used again counts as new (its modification time is refreshed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use cas_core::MerkleHash;
use cas_core::hash::shard_hash;
use cas_core::shard::ParsedShard;

use super::{CacheError, evict_oldest, list_files, safe_name, write_atomic};
use crate::transfer::usable_answer;

/// Extension of cached shard files.
const EXT: &str = "mdb";

/// The shards cached for one endpoint.
#[derive(Clone, Debug)]
pub struct ShardCache {
    dir: PathBuf,
    max_bytes: u64,
}

/// Cached shards loaded into memory, with an index from chunk hash to shard.
#[derive(Debug, Default)]
pub struct CachedShards {
    shards: Vec<(PathBuf, Arc<ParsedShard>)>,
    /// Truncated raw chunk hash → shard (a collision only costs learning one shard too many).
    plain: HashMap<u64, u32>,
    /// Per HMAC key: truncated keyed chunk hash → shard.
    keyed: Vec<(MerkleHash, HashMap<u64, u32>)>,
}

impl CachedShards {
    /// Number of shards loaded.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether no shard was loaded.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The number of a cached shard that may describe a xorb holding `chunk` (raw hash).
    pub fn find(&self, chunk: &MerkleHash) -> Option<usize> {
        if let Some(&i) = self.plain.get(&chunk.truncated()) {
            return Some(i as usize);
        }
        self.keyed
            .iter()
            .find_map(|(key, map)| map.get(&chunk.hmac(key).truncated()))
            .map(|&i| i as usize)
    }

    /// Shard number `i` (as [`CachedShards::find`] returns), marked as used
    /// so that eviction keeps it longer.
    pub fn take(&self, i: usize) -> Option<Arc<ParsedShard>> {
        let (path, shard) = self.shards.get(i)?;
        touch(path);
        Some(shard.clone())
    }

    /// Adds a parsed shard to the index.
    fn add(&mut self, path: PathBuf, shard: ParsedShard) {
        let n = self.shards.len() as u32;
        let key = shard
            .footer
            .as_ref()
            .and_then(|f| f.hmac_key)
            .filter(|k| !k.is_zero());
        let map = match key {
            None => &mut self.plain,
            Some(k) => match self.keyed.iter().position(|(kk, _)| *kk == k) {
                Some(p) => &mut self.keyed[p].1,
                None => {
                    self.keyed.push((k, HashMap::new()));
                    &mut self.keyed.last_mut().expect("just pushed").1
                }
            },
        };
        for x in &shard.shard.xorbs {
            for c in &x.chunks {
                map.entry(c.hash.truncated()).or_insert(n);
            }
        }
        self.shards.push((path, Arc::new(shard)));
    }
}

/// Whether a cache file is a shard.
fn is_shard(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == EXT)
}

/// Refreshes a file's modification time (best effort).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

impl ShardCache {
    /// The shard cache for `endpoint` under the cache directory `root`, bounded
    /// to `max_bytes` of shards. Nothing is read or created until used.
    pub fn new(root: &Path, endpoint: &str, max_bytes: u64) -> Self {
        let name = safe_name(endpoint.trim().trim_end_matches('/'));
        ShardCache {
            dir: root.join("shards").join(name),
            max_bytes,
        }
    }

    /// The directory holding this endpoint's shards.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached shard files with their sizes and modification times.
    fn entries(&self) -> Vec<(PathBuf, u64, SystemTime)> {
        list_files(&self.dir, is_shard)
    }

    /// Reads every cached shard. Unreadable, corrupt or expired ones (at `now`,
    /// seconds since the epoch) are removed; a missing directory is an empty cache.
    pub fn load(&self, now: u64) -> CachedShards {
        let mut out = CachedShards::default();
        let mut entries = self.entries();
        // Newest first: they win index collisions.
        entries.sort_by_key(|e| std::cmp::Reverse(e.2));
        for (path, _, _) in entries {
            let parsed = std::fs::read(&path)
                .ok()
                .filter(|b| path.file_stem() == Some(shard_hash(b).to_hex().as_ref()))
                .and_then(|b| usable_answer(&b, now));
            match parsed {
                Some(shard) => out.add(path, shard),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        out
    }

    /// Keeps a shard the server holds (as registered, or as a global-dedup
    /// answer), written atomically; a shard already cached is only marked used.
    pub fn insert(&self, shard: &[u8]) -> Result<(), CacheError> {
        let path = self
            .dir
            .join(format!("{}.{EXT}", shard_hash(shard).to_hex()));
        if path.is_file() {
            touch(&path);
            return Ok(());
        }
        write_atomic(&path, shard)
    }

    /// Removes the oldest shards until the rest fit the size bound.
    pub fn evict(&self) -> Result<(), CacheError> {
        evict_oldest(&self.dir, self.max_bytes, is_shard)
    }

    /// Forgets every shard cached for this endpoint.
    pub fn clear(&self) -> Result<(), CacheError> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CacheError::io(&self.dir, e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_core::hash::chunk_hash;
    use cas_core::shard::{FooterOptions, Shard, XorbInfo};

    fn shard(seed: u8, n: usize) -> (Vec<u8>, Vec<MerkleHash>) {
        let chunks: Vec<(MerkleHash, u32)> = (0..n)
            .map(|i| (chunk_hash(&[seed, i as u8, (i >> 8) as u8]), 1000))
            .collect();
        let x = XorbInfo::from_chunks_hashed(&chunks).unwrap();
        let bytes = Shard::new(Vec::new(), vec![x]).to_bytes().unwrap();
        (bytes, chunks.iter().map(|c| c.0).collect())
    }

    #[test]
    fn finds_chunks_of_inserted_shards_per_endpoint() {
        let root = tempfile::tempdir().unwrap();
        let a = ShardCache::new(root.path(), "http://a:1/", 1 << 20);
        let b = ShardCache::new(root.path(), "http://b:1", 1 << 20);
        assert_eq!(a.dir(), ShardCache::new(root.path(), "http://a:1", 1).dir());
        assert!(
            a.load(0).is_empty(),
            "a missing directory is an empty cache"
        );
        let (s1, c1) = shard(1, 50);
        a.insert(&s1).unwrap();
        a.insert(&s1).unwrap();
        let loaded = a.load(0);
        assert_eq!(loaded.len(), 1);
        let i = loaded.find(&c1[17]).unwrap();
        let parsed = loaded.take(i).unwrap();
        assert_eq!(parsed.shard.xorbs[0].chunks[17].hash, c1[17]);
        assert_eq!(loaded.find(&chunk_hash(b"other")), None);
        assert!(b.load(0).is_empty(), "endpoints do not share shards");
        a.clear().unwrap();
        assert!(a.load(0).is_empty());
        a.clear().unwrap();
    }

    #[test]
    fn keyed_answers_are_found_by_raw_hash_and_expired_ones_dropped() {
        let root = tempfile::tempdir().unwrap();
        let cache = ShardCache::new(root.path(), "grpc://n:1", 1 << 20);
        let key = chunk_hash(b"key");
        let raw = chunk_hash(b"raw chunk");
        let x = XorbInfo::from_chunks_hashed(&[(raw, 10)]).unwrap();
        let bytes = Shard::new(Vec::new(), vec![x])
            .to_bytes_with_footer(&FooterOptions {
                hmac_key: Some(key),
                key_expiry: 100,
                ..FooterOptions::default()
            })
            .unwrap();
        cache.insert(&bytes).unwrap();
        let loaded = cache.load(50);
        assert!(loaded.find(&raw).is_some());
        assert!(cache.load(200).is_empty(), "expired");
        assert!(cache.entries().is_empty(), "the expired shard was removed");
    }

    #[test]
    fn corrupt_files_are_removed_and_the_oldest_evicted() {
        let root = tempfile::tempdir().unwrap();
        let (s1, _) = shard(1, 100);
        let (s2, c2) = shard(2, 100);
        let cache = ShardCache::new(root.path(), "http://x", (s1.len() + s2.len()) as u64);
        cache.insert(&s1).unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        let p1 = cache
            .dir()
            .join(format!("{}.mdb", shard_hash(&s1).to_hex()));
        std::fs::File::options()
            .append(true)
            .open(&p1)
            .unwrap()
            .set_modified(old)
            .unwrap();
        cache.insert(&s2).unwrap();
        // Garbage under a shard's name, a truncated shard, an empty file.
        let (s3, _) = shard(3, 10);
        let p3 = cache
            .dir()
            .join(format!("{}.mdb", shard_hash(&s3).to_hex()));
        std::fs::write(&p3, &s3[..s3.len() - 7]).unwrap();
        std::fs::write(cache.dir().join("junk.mdb"), b"not a shard").unwrap();
        std::fs::write(cache.dir().join("empty.mdb"), b"").unwrap();
        let loaded = cache.load(0);
        assert_eq!(loaded.len(), 2);
        assert_eq!(cache.entries().len(), 2, "corrupt files were removed");
        // Over the bound: the oldest goes.
        let (s4, c4) = shard(4, 100);
        cache.insert(&s4).unwrap();
        cache.evict().unwrap();
        let loaded = cache.load(0);
        assert_eq!(loaded.len(), 2);
        assert!(!p1.exists());
        assert!(loaded.find(&c2[0]).is_some() && loaded.find(&c4[99]).is_some());
    }
}
