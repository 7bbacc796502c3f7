//! The bytes of a file being uploaded: mapped read-only, never read whole into memory,
//! and its SHA-256 computed on a thread of its own.

use std::fs::File;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use memmap2::{Advice, Mmap};
use sha2::{Digest, Sha256};

use super::TransferError;
use crate::pipeline::PipelineError;

/// A file's bytes, mapped read-only (an empty file maps nothing).
///
/// The pages are read on demand and shared with the page cache, so uploading a
/// file costs no copy and no allocation of its size. As with any mapping, a file
/// truncated by another process while it is uploaded can make the process fault.
#[derive(Debug)]
pub struct FileData(Option<Mmap>);

impl FileData {
    /// Maps the file at `path`.
    pub fn open(path: &Path) -> Result<Self, TransferError> {
        let file = File::open(path).map_err(|e| TransferError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| TransferError::io(path, e))?
            .len();
        if len == 0 {
            return Ok(FileData(None));
        }
        // SAFETY: the mapping is read-only and private to this process; the file
        // is not expected to change while it is uploaded (see the type's documentation).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| TransferError::io(path, e))?;
        // Only a hint: chunking reads the file front to back.
        let _ = map.advise(Advice::Sequential);
        Ok(FileData(Some(map)))
    }
}

impl Deref for FileData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

/// A SHA-256 being computed on its own thread.
#[derive(Debug)]
pub struct Sha256Job(JoinHandle<[u8; 32]>);

impl Sha256Job {
    /// Starts hashing `data[from..]` on a new thread, continuing `state` (a fresh
    /// hasher hashes the whole input).
    pub fn spawn(data: Arc<FileData>, state: Sha256, from: usize) -> Result<Self, TransferError> {
        std::thread::Builder::new()
            .name("cas-sha256".into())
            .spawn(move || {
                let mut h = state;
                h.update(&data[from.min(data.len())..]);
                h.finalize().into()
            })
            .map(Sha256Job)
            .map_err(|e| TransferError::Task(format!("cannot start the SHA-256 thread: {e}")))
    }

    /// Waits for the digest.
    pub fn join(self) -> Result<[u8; 32], PipelineError> {
        self.0
            .join()
            .map_err(|_| PipelineError::Sha256("the hashing thread panicked".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_files_and_hashes_them_on_a_thread() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(FileData::open(&empty).unwrap().is_empty());
        let full = dir.path().join("full");
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(&full, &bytes).unwrap();
        let data = Arc::new(FileData::open(&full).unwrap());
        assert_eq!(&data[..], &bytes[..]);
        let whole = Sha256Job::spawn(data.clone(), Sha256::new(), 0).unwrap();
        assert_eq!(
            whole.join().unwrap(),
            <[u8; 32]>::from(Sha256::digest(&bytes))
        );
        let mut head = Sha256::new();
        head.update(&bytes[..640]);
        let rest = Sha256Job::spawn(data, head, 640).unwrap();
        assert_eq!(
            rest.join().unwrap(),
            <[u8; 32]>::from(Sha256::digest(&bytes))
        );
        assert!(FileData::open(&dir.path().join("missing")).is_err());
    }
}
