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
use crate::cache::manifest::{CHECKPOINT_INTERVAL, Checkpoint};
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

/// A file's SHA-256, being computed on its own thread (or known already), with
/// the hasher's state every [`CHECKPOINT_INTERVAL`] bytes.
#[derive(Debug)]
pub enum Sha256Job {
    /// Hashing on a thread.
    Running(JoinHandle<([u8; 32], Vec<Checkpoint>)>),
    /// Known already: the digest and the checkpoints.
    Done([u8; 32], Vec<Checkpoint>),
}

impl Sha256Job {
    /// Starts hashing `data[from..]` on a new thread, continuing `state` (a fresh
    /// hasher and `from = 0` hash the whole input). `from` must be a multiple of
    /// [`CHECKPOINT_INTERVAL`]; `earlier` are the checkpoints before it.
    pub fn spawn(
        data: Arc<FileData>,
        state: Sha256,
        from: u64,
        earlier: Vec<Checkpoint>,
    ) -> Result<Self, TransferError> {
        std::thread::Builder::new()
            .name("cas-sha256".into())
            .spawn(move || {
                let mut h = state;
                let mut checkpoints = earlier;
                let len = data.len() as u64;
                let mut pos = from.min(len);
                while pos < len {
                    let next = ((pos / CHECKPOINT_INTERVAL + 1) * CHECKPOINT_INTERVAL).min(len);
                    h.update(&data[pos as usize..next as usize]);
                    pos = next;
                    if pos.is_multiple_of(CHECKPOINT_INTERVAL) {
                        checkpoints.push(Checkpoint::of(&h, pos));
                    }
                }
                (h.finalize().into(), checkpoints)
            })
            .map(Sha256Job::Running)
            .map_err(|e| TransferError::Task(format!("cannot start the SHA-256 thread: {e}")))
    }

    /// Waits for the digest and the checkpoints.
    pub fn join(self) -> Result<([u8; 32], Vec<Checkpoint>), PipelineError> {
        match self {
            Sha256Job::Running(h) => h
                .join()
                .map_err(|_| PipelineError::Sha256("the hashing thread panicked".into())),
            Sha256Job::Done(d, c) => Ok((d, c)),
        }
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
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let whole = Sha256Job::spawn(data, Sha256::new(), 0, Vec::new()).unwrap();
        assert_eq!(whole.join().unwrap(), (digest, Vec::new()));
        assert!(FileData::open(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn checkpoints_resume_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let len = 2 * CHECKPOINT_INTERVAL as usize + 1000;
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let data = Arc::new(FileData::open(&path).unwrap());
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let (d, cps) = Sha256Job::spawn(data.clone(), Sha256::new(), 0, Vec::new())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(d, digest);
        let offsets: Vec<u64> = cps.iter().map(|c| c.offset).collect();
        assert_eq!(offsets, [CHECKPOINT_INTERVAL, 2 * CHECKPOINT_INTERVAL]);
        let first = &cps[0];
        let resumed = Sha256Job::spawn(
            data,
            first.resume().unwrap(),
            first.offset,
            cps[..1].to_vec(),
        )
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(resumed, (digest, cps));
    }
}
