//! Snapshots of the state machine: built from a RocksDB snapshot and streamed to a
//! file, installed by streaming a file back; never held in memory whole.
//!
//! File format: the magic `CASSNAP` and a format byte (1), then length-delimited
//! `cas.raft.v1.SnapshotItem`s (a varint length before each message): first a
//! `meta` (what the snapshot covers), then one `record` per key of the `xorbs`,
//! `files` and `dedup` column families (values copied as stored), then an `end` with
//! the record count. A reader refuses a file that is cut short or miscounted.
//!
//! The snapshot directory keeps one file, `snapshot-<index>.snap` (`<index>` the last
//! applied log index, or `empty`), written through a synced temporary file and a
//! rename. The latest is chosen by that index parsed as a number, never by name.
//!
//! Installing is crash-safe: the received snapshot is first checked and saved as the
//! current snapshot file; then, in one synced batch, the applied state is cleared and
//! the record families are emptied; the records are loaded in batches; a last synced
//! batch sets the applied log id and membership. A crash midway leaves the applied
//! state older than the current snapshot, so openraft installs that file again when
//! the node restarts. Builds and installs are serialized by a mutex.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cas_proto::raft::{self as pb, SnapshotFamily, snapshot_item};
use prost::Message;
use rocksdb::{DB, IteratorMode, WriteBatch};
use tokio::sync::Mutex;

use super::codec::{invalid, log_id_from_pb, snapshot_meta_from_pb, snapshot_meta_to_pb};
use super::log_store::{cf, storage_err, synced};
use super::state_machine::{
    CF_DEDUP, CF_FILES, CF_SM_META, CF_XORBS, KEY_APPLIED, KEY_MEMBERSHIP, put_applied,
    read_applied,
};
use super::types::{Snapshot, SnapshotFile, SnapshotMeta};

/// First bytes of every snapshot file: the magic and the format byte.
pub const MAGIC: &[u8; 8] = b"CASSNAP\x01";
/// Largest item a snapshot may hold (a xorb record is far below).
pub const MAX_ITEM_BYTES: u64 = 64 * 1024 * 1024;
/// Records loaded per write batch while installing.
const INSTALL_BATCH_RECORDS: usize = 10_000;
/// Bytes loaded per write batch while installing, at most (roughly).
const INSTALL_BATCH_BYTES: usize = 16 * 1024 * 1024;
const BUFFER: usize = 1 << 20;

/// The column family of a snapshot family.
fn family_cf(family: SnapshotFamily) -> Option<&'static str> {
    match family {
        SnapshotFamily::Xorbs => Some(CF_XORBS),
        SnapshotFamily::Files => Some(CF_FILES),
        SnapshotFamily::Dedup => Some(CF_DEDUP),
        SnapshotFamily::Unspecified => None,
    }
}

/// The snapshot families in file order.
const FAMILIES: [SnapshotFamily; 3] = [
    SnapshotFamily::Xorbs,
    SnapshotFamily::Files,
    SnapshotFamily::Dedup,
];

/// Writes a snapshot file.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    buf: Vec<u8>,
    records: u64,
}

impl SnapshotWriter {
    /// Creates `path` (truncating) and writes the magic and `meta`.
    pub fn create(path: &Path, meta: pb::SnapshotMeta) -> io::Result<Self> {
        let mut out = BufWriter::with_capacity(BUFFER, File::create(path)?);
        out.write_all(MAGIC)?;
        let mut w = SnapshotWriter {
            out,
            buf: Vec::new(),
            records: 0,
        };
        w.item(snapshot_item::Item::Meta(meta))?;
        Ok(w)
    }

    fn item(&mut self, item: snapshot_item::Item) -> io::Result<()> {
        self.buf.clear();
        let item = pb::SnapshotItem { item: Some(item) };
        item.encode_length_delimited(&mut self.buf)
            .map_err(storage_err)?;
        self.out.write_all(&self.buf)
    }

    /// Appends one record.
    pub fn record(&mut self, family: SnapshotFamily, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.item(snapshot_item::Item::Record(pb::SnapshotRecord {
            family: family.into(),
            key: key.to_vec().into(),
            value: value.to_vec().into(),
        }))?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end and syncs the file; returns the record count.
    pub fn finish(mut self) -> io::Result<u64> {
        let records = self.records;
        self.item(snapshot_item::Item::End(pb::SnapshotEnd { records }))?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(records)
    }
}

/// Reads a snapshot file item by item.
pub struct SnapshotReader<R> {
    input: BufReader<R>,
    buf: Vec<u8>,
    meta: pb::SnapshotMeta,
    records: u64,
    done: bool,
}

/// Reads a varint; `None` at a clean end of input.
fn read_varint(input: &mut impl Read) -> io::Result<Option<u64>> {
    let mut value = 0u64;
    for i in 0..10 {
        let mut byte = [0u8; 1];
        if input.read(&mut byte)? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(invalid("snapshot cut inside an item length"))
            };
        }
        value |= u64::from(byte[0] & 0x7F) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(invalid("snapshot item length is not a varint"))
}

impl<R: Read> SnapshotReader<R> {
    /// Checks the magic and reads the meta.
    pub fn new(input: R) -> io::Result<Self> {
        let mut input = BufReader::with_capacity(BUFFER, input);
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|_| invalid("not a snapshot file (too short)"))?;
        if &magic != MAGIC {
            return Err(invalid("not a snapshot file (bad magic or format)"));
        }
        let mut r = SnapshotReader {
            input,
            buf: Vec::new(),
            meta: pb::SnapshotMeta::default(),
            records: 0,
            done: false,
        };
        match r.item()? {
            snapshot_item::Item::Meta(meta) => r.meta = meta,
            _ => return Err(invalid("snapshot does not start with its meta")),
        }
        Ok(r)
    }

    /// What the snapshot covers, as its file says.
    pub fn meta(&self) -> &pb::SnapshotMeta {
        &self.meta
    }

    fn item(&mut self) -> io::Result<snapshot_item::Item> {
        let len = read_varint(&mut self.input)?
            .ok_or_else(|| invalid("snapshot ends without its end item"))?;
        if len > MAX_ITEM_BYTES {
            return Err(invalid(format!("snapshot item of {len} bytes")));
        }
        self.buf.resize(len as usize, 0);
        self.input
            .read_exact(&mut self.buf)
            .map_err(|_| invalid("snapshot cut inside an item"))?;
        pb::SnapshotItem::decode(self.buf.as_slice())
            .map_err(|e| invalid(format!("snapshot item: {e}")))?
            .item
            .ok_or_else(|| invalid("empty snapshot item"))
    }

    /// The next record with its column family, or `None` after a valid end.
    pub fn next_record(&mut self) -> io::Result<Option<(&'static str, pb::SnapshotRecord)>> {
        if self.done {
            return Ok(None);
        }
        match self.item()? {
            snapshot_item::Item::Record(r) => {
                let family = SnapshotFamily::try_from(r.family)
                    .ok()
                    .and_then(family_cf)
                    .ok_or_else(|| invalid(format!("snapshot record of family {}", r.family)))?;
                self.records += 1;
                Ok(Some((family, r)))
            }
            snapshot_item::Item::End(end) => {
                if end.records != self.records {
                    return Err(invalid(format!(
                        "snapshot ends after {} records but says {}",
                        self.records, end.records
                    )));
                }
                if read_varint(&mut self.input)?.is_some() {
                    return Err(invalid("snapshot has data after its end"));
                }
                self.done = true;
                Ok(None)
            }
            snapshot_item::Item::Meta(_) => Err(invalid("snapshot has a second meta")),
        }
    }
}

/// The file name of the snapshot whose last log index is `index`.
pub fn file_name(index: Option<u64>) -> String {
    match index {
        Some(i) => format!("snapshot-{i}.snap"),
        None => "snapshot-empty.snap".to_owned(),
    }
}

/// The position a snapshot file name stands for (`Some(None)` for the empty one).
pub fn parse_file_name(name: &str) -> Option<Option<u64>> {
    let pos = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    if pos == "empty" {
        return Some(None);
    }
    // Digits only: `u64::from_str` would also take a leading `+`.
    if pos.is_empty() || !pos.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pos.parse().ok().map(Some)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The snapshot directory of one state machine.
pub struct Snapshots {
    dir: PathBuf,
    /// Serializes builds, installs and reads of the current snapshot.
    lock: Mutex<()>,
}

impl Snapshots {
    /// Uses (or creates) `dir`, removing temporary files a crash left behind.
    pub fn new(dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        for e in std::fs::read_dir(&dir)? {
            let path = e?.path();
            if path.extension().is_some_and(|x| x == "tmp") {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(Snapshots {
            dir,
            lock: Mutex::new(()),
        })
    }

    /// The snapshot files in the directory, latest last.
    fn list(&self) -> io::Result<Vec<(Option<u64>, PathBuf)>> {
        let mut found = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            if let Some(pos) = e.file_name().to_str().and_then(parse_file_name) {
                found.push((pos, e.path()));
            }
        }
        found.sort_by_key(|(pos, _)| *pos);
        Ok(found)
    }

    /// Saves what `write` writes as the snapshot file of `index` (through a synced
    /// temporary file and a rename), then removes every other snapshot file.
    fn save(
        &self,
        index: Option<u64>,
        write: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<PathBuf> {
        let path = self.dir.join(file_name(index));
        let tmp = path.with_extension("snap.tmp");
        if let Err(e) = write(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        for (pos, other) in self.list()? {
            if pos != index {
                std::fs::remove_file(other)?;
            }
        }
        Ok(path)
    }

    /// Builds a snapshot of `db`'s current state and makes it the current one.
    pub async fn build(self: &Arc<Self>, db: &Arc<DB>) -> io::Result<Snapshot> {
        let _guard = self.lock.lock().await;
        let this = self.clone();
        let db = db.clone();
        let snapshot = tokio::task::spawn_blocking(move || this.build_blocking(&db))
            .await
            .map_err(storage_err)??;
        tracing::info!(meta = %snapshot.meta, "index snapshot built");
        Ok(snapshot)
    }

    fn build_blocking(&self, db: &DB) -> io::Result<Snapshot> {
        let view = db.snapshot();
        let meta_cf = cf(db, CF_SM_META)?;
        let (last_log_id, last_membership) =
            read_applied(|k| view.get_cf(meta_cf, k).map_err(storage_err))?;
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
        };
        let index = meta.last_log_id.as_ref().map(|l| l.index);
        let path = self.save(index, |tmp| {
            let mut w = SnapshotWriter::create(tmp, snapshot_meta_to_pb(&meta))?;
            for family in FAMILIES {
                let Some(name) = family_cf(family) else {
                    continue;
                };
                for item in view.iterator_cf(cf(db, name)?, IteratorMode::Start) {
                    let (key, value) = item.map_err(storage_err)?;
                    w.record(family, &key, &value)?;
                }
            }
            w.finish().map(|_| ())
        })?;
        Ok(Snapshot {
            meta,
            snapshot: SnapshotFile::open(&path)?,
        })
    }

    /// Replaces `db`'s state with the snapshot `data` covering `meta`, and makes it
    /// the current snapshot.
    pub async fn install(
        self: &Arc<Self>,
        db: &Arc<DB>,
        meta: &SnapshotMeta,
        data: SnapshotFile,
    ) -> io::Result<()> {
        let _guard = self.lock.lock().await;
        let this = self.clone();
        let db = db.clone();
        let meta_owned = meta.clone();
        let records =
            tokio::task::spawn_blocking(move || this.install_blocking(&db, &meta_owned, data))
                .await
                .map_err(storage_err)??;
        tracing::info!(%meta, records, "index snapshot installed");
        Ok(())
    }

    fn install_blocking(
        &self,
        db: &DB,
        meta: &SnapshotMeta,
        data: SnapshotFile,
    ) -> io::Result<u64> {
        // 1. Check the received file whole while saving it as the current snapshot.
        let mut reader = SnapshotReader::new(data.into_file())?;
        let said = reader.meta().last_log_id.map(log_id_from_pb).transpose()?;
        if said != meta.last_log_id {
            return Err(invalid(format!(
                "snapshot file covers up to {said:?}, but its meta says {:?}",
                meta.last_log_id
            )));
        }
        let index = meta.last_log_id.as_ref().map(|l| l.index);
        let path = self.save(index, |tmp| {
            let mut w = SnapshotWriter::create(tmp, snapshot_meta_to_pb(meta))?;
            while let Some((name, r)) = reader.next_record()? {
                let family = SnapshotFamily::try_from(r.family)
                    .map_err(|_| invalid(format!("snapshot record family {name}")))?;
                w.record(family, &r.key, &r.value)?;
            }
            w.finish().map(|_| ())
        })?;

        // 2. Forget the applied state and empty the record families, in one batch.
        let mut batch = WriteBatch::default();
        let meta_cf = cf(db, CF_SM_META)?;
        batch.delete_cf(meta_cf, KEY_APPLIED);
        batch.delete_cf(meta_cf, KEY_MEMBERSHIP);
        for family in FAMILIES {
            let Some(name) = family_cf(family) else {
                continue;
            };
            let handle = cf(db, name)?;
            if let Some(last) = db.iterator_cf(handle, IteratorMode::End).next() {
                let (last, _) = last.map_err(storage_err)?;
                // Every key sorts before the last one followed by a zero byte.
                let mut end = last.to_vec();
                end.push(0);
                let begin: &[u8] = &[];
                batch.delete_range_cf(handle, begin, end.as_slice());
            }
        }
        db.write_opt(batch, &synced()).map_err(storage_err)?;

        // 3. Load the records in batches (the last synced batch makes them durable).
        let mut reader = SnapshotReader::new(File::open(&path)?)?;
        let mut batch = WriteBatch::default();
        let mut records = 0u64;
        let mut in_batch = 0usize;
        while let Some((name, r)) = reader.next_record()? {
            batch.put_cf(cf(db, name)?, &r.key, &r.value);
            records += 1;
            in_batch += 1;
            if in_batch >= INSTALL_BATCH_RECORDS || batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
                db.write(std::mem::take(&mut batch)).map_err(storage_err)?;
                in_batch = 0;
            }
        }

        // 4. Set the applied state with the last records, synced.
        put_applied(
            db,
            &mut batch,
            meta.last_log_id.as_ref(),
            Some(&meta.last_membership),
        )?;
        db.write_opt(batch, &synced()).map_err(storage_err)?;
        Ok(records)
    }

    /// The current (latest) snapshot, if any.
    pub async fn current(&self) -> io::Result<Option<Snapshot>> {
        let _guard = self.lock.lock().await;
        let Some((_, path)) = self.list()?.pop() else {
            return Ok(None);
        };
        let mut file = File::open(&path)?;
        let meta = snapshot_meta_from_pb(SnapshotReader::new(&file)?.meta().clone())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: SnapshotFile::from_file(file, path),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_order_by_number() {
        assert_eq!(parse_file_name(&file_name(Some(9))), Some(Some(9)));
        assert_eq!(parse_file_name(&file_name(None)), Some(None));
        assert_eq!(parse_file_name("snapshot-+9.snap"), None);
        assert_eq!(parse_file_name("snapshot-9.snap.tmp"), None);
        assert_eq!(parse_file_name("other"), None);
        let mut names = vec![file_name(Some(10)), file_name(Some(9)), file_name(None)];
        names.sort_by_key(|n| parse_file_name(n));
        assert_eq!(
            names,
            ["snapshot-empty.snap", "snapshot-9.snap", "snapshot-10.snap"]
        );
    }

    fn write_sample(path: &Path, records: u64) {
        let mut w = SnapshotWriter::create(path, pb::SnapshotMeta::default()).unwrap();
        for i in 0..records {
            w.record(SnapshotFamily::Dedup, &[i as u8; 32], b"\x01value")
                .unwrap();
        }
        assert_eq!(w.finish().unwrap(), records);
    }

    #[test]
    fn reader_reads_what_writer_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write_sample(&path, 3);
        let mut r = SnapshotReader::new(File::open(&path).unwrap()).unwrap();
        let mut n = 0;
        while let Some((family, rec)) = r.next_record().unwrap() {
            assert_eq!(family, CF_DEDUP);
            assert_eq!(rec.key.as_ref(), &[n as u8; 32]);
            n += 1;
        }
        assert_eq!(n, 3);
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn reader_refuses_cut_or_extended_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write_sample(&path, 3);
        let whole = std::fs::read(&path).unwrap();
        let read_all = |bytes: &[u8]| -> io::Result<u64> {
            let mut r = SnapshotReader::new(bytes)?;
            let mut n = 0;
            while r.next_record()?.is_some() {
                n += 1;
            }
            Ok(n)
        };
        assert_eq!(read_all(&whole).unwrap(), 3);
        for cut in [0, 5, 9, whole.len() / 2, whole.len() - 1] {
            assert!(read_all(&whole[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = whole.clone();
        longer.push(0);
        assert!(read_all(&longer).is_err());
        let mut wrong_format = whole;
        wrong_format[7] = 2;
        assert!(read_all(&wrong_format).is_err());
    }
}
