//! Index tests: openraft's storage conformance suite; the apply rules; writes and
//! reads through [`Index`] across a reopen; snapshots built, purged behind, reopened
//! and installed elsewhere; acknowledged appends surviving an abort.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cas_proto::index::{
    Command, CommandResult, DedupEntry, FileRecord, FilesRegistered, RegisterFiles, RegisterXorb,
    XorbRecord, XorbRegistered, command, command_result,
};
use futures::stream;
use openraft::entry::RaftEntry;
use openraft::storage::{
    IOFlushed, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, StorageError};

use super::log_store::LogStore;
use super::state_machine::{DATA_FAMILIES, StateMachine};
use super::types::{Entry, LogId, Membership};
use super::*;

const WAIT: Duration = Duration::from_secs(30);

/// A fresh database, log store and state machine in a temporary directory.
fn fresh_store() -> (tempfile::TempDir, LogStore, StateMachine) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open_db(&dir.path().join("db")).expect("open db");
    let sm = StateMachine::new(db.clone(), dir.path().join("snapshots")).expect("state machine");
    let log = LogStore::new(db).expect("log store");
    (dir, log, sm)
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        Ok(fresh_store())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_conformance_suite() {
    Suite::test_all(Builder)
        .await
        .expect("openraft storage suite passes");
}

fn h(n: u32) -> Bytes {
    Bytes::copy_from_slice(&key(n))
}

fn key(n: u32) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[31] = 0xAB;
    b
}

fn xorb_record(n: u32, uploader: &str) -> XorbRecord {
    XorbRecord {
        format: 1,
        hash: h(n),
        serialized_len: 100,
        chunk_hashes: h(n + 1_000_000),
        chunk_lens: vec![50],
        chunk_ends: vec![58],
        created_at_ms: 1_700_000_000_000,
        uploader: uploader.into(),
    }
}

fn xorb_cmd(n: u32) -> Command {
    Command {
        op: Some(command::Op::RegisterXorb(RegisterXorb {
            xorb: Some(xorb_record(n, "tester")),
        })),
    }
}

fn files_cmd(files: std::ops::Range<u32>, dedup: std::ops::Range<u32>) -> Command {
    Command {
        op: Some(command::Op::RegisterFiles(RegisterFiles {
            shard_hash: h(7),
            files: files
                .map(|n| FileRecord {
                    format: 1,
                    hash: h(n),
                    size: u64::from(n),
                    shard_hash: h(7),
                    ..Default::default()
                })
                .collect(),
            dedup: dedup
                .map(|n| DedupEntry {
                    format: 1,
                    chunk_hash: h(n),
                    xorb_hash: h(1),
                    chunk_index: n,
                })
                .collect(),
        })),
    }
}

fn xorb_result(inserted: bool) -> CommandResult {
    CommandResult {
        result: Some(command_result::Result::Xorb(XorbRegistered { inserted })),
    }
}

fn files_result(new_files: u32, new_dedup_entries: u32) -> CommandResult {
    CommandResult {
        result: Some(command_result::Result::Files(FilesRegistered {
            new_files,
            new_dedup_entries,
        })),
    }
}

fn node() -> NodeInfo {
    NodeInfo::new("127.0.0.1:7001", "us-east-1")
}

fn log_id(index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(1, 1, index)
}

fn normal(index: u64, cmd: Command) -> Entry {
    Entry::new_normal(log_id(index), IndexCommand(cmd))
}

/// Applies `entries` without responders.
async fn apply(sm: &mut StateMachine, entries: Vec<Entry>) {
    let items: Vec<std::io::Result<_>> = entries.into_iter().map(|e| Ok((e, None))).collect();
    sm.apply(stream::iter(items)).await.expect("apply");
}

/// Every key and value of the record families.
fn dump(db: &rocksdb::DB) -> BTreeMap<(&'static str, Vec<u8>), Vec<u8>> {
    let mut out = BTreeMap::new();
    for family in DATA_FAMILIES {
        let handle = db.cf_handle(family).expect("family");
        for item in db.iterator_cf(handle, rocksdb::IteratorMode::Start) {
            let (k, v) = item.expect("iterate");
            out.insert((family, k.to_vec()), v.to_vec());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_inserts_absent_records_only_and_ignores_malformed_commands() {
    let (_dir, _log, mut sm) = fresh_store();
    apply(&mut sm, vec![normal(1, xorb_cmd(1))]).await;
    // A second record under an existing key does not replace the first; duplicates
    // inside one command and across entries of one run are not new either.
    let mut other = xorb_record(1, "someone-else");
    other.serialized_len = 999;
    let dup_xorb = Command {
        op: Some(command::Op::RegisterXorb(RegisterXorb {
            xorb: Some(other),
        })),
    };
    let mut dup_files = files_cmd(10..12, 20..22);
    if let Some(command::Op::RegisterFiles(r)) = &mut dup_files.op {
        let again = r.files[0].clone();
        r.files.push(again);
    }
    let bad_hash = Command {
        op: Some(command::Op::RegisterXorb(RegisterXorb {
            xorb: Some(XorbRecord {
                hash: Bytes::from_static(b"short"),
                ..Default::default()
            }),
        })),
    };
    let entries = vec![
        normal(2, dup_xorb),
        normal(3, dup_files),
        normal(4, files_cmd(11..13, 21..23)),
        normal(5, bad_hash),
        normal(6, Command { op: None }),
        Entry::new_blank(log_id(7)),
        Entry::new_membership(
            log_id(8),
            Membership::new(vec![[1].into()], BTreeMap::from([(1, node())])).unwrap(),
        ),
    ];
    let results = state_machine::apply_entries(sm.db(), &entries).unwrap();
    let none = CommandResult::default();
    assert_eq!(
        results,
        vec![
            xorb_result(false),
            files_result(2, 2),
            files_result(1, 1),
            none,
            none,
            none,
            none,
        ]
    );
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(8)));
    assert_eq!(membership.log_id(), &Some(log_id(8)));
    assert_eq!(membership.voter_ids().collect::<Vec<_>>(), vec![1]);
    let stored = dump(sm.db());
    let count = |family| stored.keys().filter(|(f, _)| *f == family).count();
    assert_eq!(count(state_machine::CF_XORBS), 1);
    assert_eq!(count(state_machine::CF_FILES), 3);
    assert_eq!(count(state_machine::CF_DEDUP), 3);
    let first: XorbRecord =
        codec::decode(&stored[&(state_machine::CF_XORBS, key(1).to_vec())]).unwrap();
    assert_eq!(first.uploader, "tester");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_writes_reads_and_survives_reopen() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("index");
    let index = Index::open(&dir, 1, node()).await.unwrap();
    assert_eq!(index.write(xorb_cmd(1)).await.unwrap(), xorb_result(true));
    assert_eq!(index.write(xorb_cmd(1)).await.unwrap(), xorb_result(false));
    assert_eq!(
        index.write(files_cmd(10..13, 20..22)).await.unwrap(),
        files_result(3, 2)
    );
    assert_eq!(
        index.write(files_cmd(12..14, 21..23)).await.unwrap(),
        files_result(1, 1)
    );
    let refused = index.write(Command { op: None }).await.unwrap_err();
    assert_eq!(refused.code(), "index_invalid_command");
    assert_eq!(
        index.has_xorbs(&[key(1), key(2)]).unwrap(),
        vec![true, false]
    );
    assert!(index.has_xorb(&key(1)).unwrap());
    index.ensure_linearizable().await.unwrap();
    let s = index.status();
    assert_eq!(
        (s.node_id, s.leader, s.voters.clone()),
        (1, Some(1), vec![1])
    );
    assert_eq!(s.role, "Leader");
    assert!(s.learners.is_empty());
    let applied_before = s.last_applied.unwrap();
    index.shutdown().await;

    let index = Index::open(&dir, 1, node()).await.unwrap();
    assert_eq!(
        index.xorb(&key(1)).unwrap().unwrap(),
        xorb_record(1, "tester")
    );
    assert_eq!(index.file(&key(13)).unwrap().unwrap().size, 13);
    assert_eq!(index.dedup(&key(22)).unwrap().unwrap().chunk_index, 22);
    assert!(index.file(&key(14)).unwrap().is_none());
    assert!(index.dedup(&key(23)).unwrap().is_none());
    assert!(index.status().last_applied.unwrap() >= applied_before);
    assert_eq!(index.write(xorb_cmd(2)).await.unwrap(), xorb_result(true));
    assert_eq!(index.write(xorb_cmd(1)).await.unwrap(), xorb_result(false));
    index.shutdown().await;

    // Another node id does not take over this directory.
    let err = Index::open(&dir, 2, node()).await.err().expect("refused");
    assert_eq!(err.code(), "index_storage");

    // Once the directory is removed, the same path starts empty.
    std::fs::remove_dir_all(&dir).unwrap();
    let index = Index::open(&dir, 1, node()).await.unwrap();
    assert!(!index.has_xorb(&key(1)).unwrap());
    assert!(index.file(&key(10)).unwrap().is_none());
    assert_eq!(index.write(xorb_cmd(1)).await.unwrap(), xorb_result(true));
    index.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_purge_then_reopen_keeps_state() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("index");
    let index = Index::open(&dir, 1, node()).await.unwrap();
    for i in 0..20 {
        let files = i * 100..i * 100 + 100;
        let dedup = 100_000 + i * 1000..100_000 + i * 1000 + 1000;
        index.write(files_cmd(files, dedup)).await.unwrap();
    }
    index.write(xorb_cmd(1)).await.unwrap();
    let applied = snapshot_and_purge(&index).await;
    assert_eq!(index.status().snapshot, Some(applied));
    index.shutdown().await;

    // One snapshot file, named by its index.
    let names: Vec<_> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![snapshot::file_name(Some(applied))]);

    let index = Index::open(&dir, 1, node()).await.unwrap();
    let s = index.status();
    assert_eq!(s.snapshot, Some(applied));
    assert!(s.last_applied.unwrap() >= applied);
    assert_eq!(index.file(&key(1999)).unwrap().unwrap().size, 1999);
    assert_eq!(
        index.dedup(&key(100_000)).unwrap().unwrap().chunk_index,
        100_000
    );
    assert_eq!(
        index.dedup(&key(119_999)).unwrap().unwrap().chunk_index,
        119_999
    );
    assert!(index.has_xorb(&key(1)).unwrap());
    assert_eq!(index.write(xorb_cmd(1)).await.unwrap(), xorb_result(false));
    assert_eq!(index.write(xorb_cmd(5)).await.unwrap(), xorb_result(true));
    index.shutdown().await;
}

/// Writes, snapshots and purges the whole log, so the state lives in the state
/// machine and the snapshot only; returns the snapshot's last log index.
async fn snapshot_and_purge(index: &Index) -> u64 {
    let applied = index
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.last_applied.as_ref().map(|l| l.index) == m.last_log_index,
            "log applied",
        )
        .await
        .unwrap()
        .last_applied
        .unwrap();
    index.raft().trigger().snapshot().await.unwrap();
    index
        .raft()
        .wait(Some(WAIT))
        .snapshot(applied, "snapshot built")
        .await
        .unwrap();
    index
        .raft()
        .trigger()
        .purge_log(applied.index)
        .await
        .unwrap();
    index
        .raft()
        .wait(Some(WAIT))
        .purged(Some(applied), "log purged")
        .await
        .unwrap();
    applied.index
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_an_interrupted_install_loads_the_snapshot_again() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("index");
    let index = Index::open(&dir, 1, node()).await.unwrap();
    index.write(files_cmd(0..50, 0..500)).await.unwrap();
    index.write(xorb_cmd(1)).await.unwrap();
    let at = snapshot_and_purge(&index).await;
    index.shutdown().await;

    // What a crash halfway through installing leaves: no applied state, records
    // partly removed.
    {
        let db = open_db(&dir.join("db")).unwrap();
        let meta = db.cf_handle(state_machine::CF_SM_META).unwrap();
        db.delete_cf(meta, state_machine::KEY_APPLIED).unwrap();
        db.delete_cf(meta, state_machine::KEY_MEMBERSHIP).unwrap();
        let dedup = db.cf_handle(state_machine::CF_DEDUP).unwrap();
        db.delete_range_cf(dedup, key(0), key(250)).unwrap();
        db.flush_wal(true).unwrap();
    }

    let index = Index::open(&dir, 1, node()).await.unwrap();
    assert!(index.status().last_applied.unwrap() >= at);
    for n in 0..500 {
        assert_eq!(
            index
                .dedup(&key(n))
                .unwrap()
                .expect("dedup entry")
                .chunk_index,
            n
        );
    }
    assert_eq!(index.file(&key(49)).unwrap().unwrap().size, 49);
    assert_eq!(index.write(xorb_cmd(1)).await.unwrap(), xorb_result(false));
    index.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_many_records_installs_identically_elsewhere() {
    let (_dir, _log, mut sm) = fresh_store();
    let membership = Membership::new(vec![[1].into()], BTreeMap::from([(1, node())])).unwrap();
    let mut entries = vec![Entry::new_membership(log_id(1), membership)];
    for i in 0..20u32 {
        let dedup = i * 1000..i * 1000 + 1000;
        entries.push(normal(
            u64::from(i) + 2,
            files_cmd(i * 10..i * 10 + 10, dedup),
        ));
    }
    entries.push(normal(22, xorb_cmd(1)));
    entries.push(normal(23, xorb_cmd(2)));
    apply(&mut sm, entries).await;

    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(built.meta.last_log_id, Some(log_id(23)));
    assert_eq!(built.meta.last_membership.log_id(), &Some(log_id(1)));

    // A second state machine with state of its own: installing replaces it all.
    let (_dir2, _log2, mut sm2) = fresh_store();
    apply(
        &mut sm2,
        vec![
            normal(1, xorb_cmd(9)),
            normal(2, files_cmd(500_000..500_010, 0..0)),
        ],
    )
    .await;
    sm2.install_snapshot(&built.meta, built.snapshot)
        .await
        .unwrap();

    let original = dump(sm.db());
    assert_eq!(original.len(), 2 + 200 + 20_000);
    assert_eq!(dump(sm2.db()), original);
    assert_eq!(
        sm2.applied_state().await.unwrap(),
        sm.applied_state().await.unwrap()
    );
    let current = sm2
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("installed snapshot is current");
    assert_eq!(current.meta, built.meta);

    // Installing the current snapshot again from its own file (what a restart does
    // after an interrupted install) works and changes nothing.
    let again = sm2.get_current_snapshot().await.unwrap().unwrap();
    sm2.install_snapshot(&again.meta, again.snapshot)
        .await
        .unwrap();
    assert_eq!(dump(sm2.db()), original);

    // The installed snapshot's file streams into a third state machine just as well.
    let (_dir3, _log3, mut sm3) = fresh_store();
    sm3.install_snapshot(&current.meta, current.snapshot)
        .await
        .unwrap();
    assert_eq!(dump(sm3.db()), original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_snapshot_is_chosen_by_index_not_name() {
    let (_dir, _log, mut leader) = fresh_store();
    apply(&mut leader, vec![normal(9, xorb_cmd(1))]).await;
    let at9 = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    apply(&mut leader, vec![normal(10, xorb_cmd(2))]).await;
    let at10 = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    // Building at 10 removed the file of 9 (its open handle still reads it).
    assert!(!at9.snapshot.path().exists());

    let (dir, _log2, mut sm) = fresh_store();
    sm.install_snapshot(&at10.meta, at10.snapshot)
        .await
        .unwrap();
    // "snapshot-9.snap" sorts after "snapshot-10.snap" as text: an older file lying
    // next to the latest must not be taken for it.
    let mut old = Vec::new();
    std::io::Read::read_to_end(&mut at9.snapshot.into_file(), &mut old).unwrap();
    std::fs::write(
        dir.path()
            .join("snapshots")
            .join(snapshot::file_name(Some(9))),
        old,
    )
    .unwrap();
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(log_id(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_snapshot_is_refused_before_the_state_changes() {
    let (_dir, _log, mut leader) = fresh_store();
    apply(&mut leader, vec![normal(1, files_cmd(0..10, 0..100))]).await;
    let built = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let whole = std::fs::read(built.snapshot.path()).unwrap();

    let (dir, _log2, mut sm) = fresh_store();
    apply(&mut sm, vec![normal(1, xorb_cmd(3))]).await;
    let before = dump(sm.db());
    let cut = dir.path().join("cut.snap");
    std::fs::write(&cut, &whole[..whole.len() - 3]).unwrap();
    let err = sm
        .install_snapshot(&built.meta, SnapshotFile::open(&cut).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(dump(sm.db()), before);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1)));

    // A file whose meta disagrees with the one given is refused too.
    let mut other = built.meta.clone();
    other.last_log_id = Some(log_id(2));
    let whole_file = dir.path().join("whole.snap");
    std::fs::write(&whole_file, &whole).unwrap();
    assert!(
        sm.install_snapshot(&other, SnapshotFile::open(&whole_file).unwrap())
            .await
            .is_err()
    );
    assert_eq!(dump(sm.db()), before);
}

/// Set in the child process of [`acknowledged_appends_survive_an_abort`].
const CRASH_DIR_ENV: &str = "CAS_INDEX_TEST_CRASH_DIR";
const CRASH_ENTRIES: u64 = 50;

/// In the child: appends entries, waits for each append's flush callback, says so on
/// stdout, then aborts without any cleanup. Does nothing in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_appends_then_aborts() {
    let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
        return;
    };
    let db = open_db(&Path::new(&dir).join("db")).unwrap();
    let mut log = LogStore::new(db).unwrap();
    for i in 1..=CRASH_ENTRIES {
        let (tx, rx) = TypeConfig::oneshot();
        log.append([normal(i, xorb_cmd(i as u32))], IOFlushed::signal(tx))
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
    }
    println!("flushed {CRASH_ENTRIES}");
    std::process::abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "index::tests::crash_child_appends_then_aborts",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("crash child did not finish");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(
        out.contains(&format!("flushed {CRASH_ENTRIES}")),
        "child output: {out}"
    );
    assert!(!status.success(), "the child aborts");

    let db = open_db(&dir.path().join("db")).unwrap();
    let mut log = LogStore::new(db).unwrap();
    let entries = log.try_get_log_entries(1..=CRASH_ENTRIES).await.unwrap();
    assert_eq!(entries.len() as u64, CRASH_ENTRIES);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(CRASH_ENTRIES)));
    match &entries[CRASH_ENTRIES as usize - 1].payload {
        EntryPayload::Normal(cmd) => assert_eq!(cmd.0, xorb_cmd(CRASH_ENTRIES as u32)),
        other => panic!("unexpected payload {other:?}"),
    }
}
