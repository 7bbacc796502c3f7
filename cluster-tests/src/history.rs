//! A recorded history of index operations, and its check.
//!
//! Three kinds of operations are recorded, each with the times it was invoked and
//! returned (on one clock) and what it returned:
//!
//! - a **write** registers a file (an upload; acknowledged, or failed: a failed write
//!   may still have taken effect);
//! - a **read** asks a node for the file's reconstruction: present or absent (404);
//! - a **dedup query** asks a node about the file's first chunk (global dedup).
//!
//! Per file the index is a register that goes from absent to present once (writes
//! are idempotent). Reads must be **linearizable**: there is one instant `t` at which
//! the file appears, after the first write was invoked and no later than the first
//! acknowledgement, such that every read that returned absent was invoked before `t`
//! and every read that returned present returned after `t` ([`check`] finds `t` or
//! names the operations that rule it out). This is what a node guarantees by asking
//! the leader for its read index before it answers 404.
//!
//! Dedup queries are answered from the node's local replica without asking the
//! leader, so they **may be stale**: an absent answer after the file was
//! acknowledged is allowed (it only costs the client a re-upload of bytes the store
//! has). A present answer is not allowed to come from nowhere: some write of the
//! file must have been invoked before it returned.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cas_core::MerkleHash;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Registers the file (an upload).
    Write,
    /// Reads the file's reconstruction (linearizable).
    Read,
    /// Asks about the file's first chunk (answered locally; may be stale).
    DedupQuery,
}

/// What an operation returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A write was acknowledged.
    Acked,
    /// A read or query found the file.
    Present,
    /// A read or query did not find it.
    Absent,
    /// The call failed (a failed write may or may not have taken effect).
    Failed,
}

/// One recorded operation.
#[derive(Debug, Clone)]
pub struct Op {
    /// The file (its hash).
    pub key: MerkleHash,
    /// What it did.
    pub kind: Kind,
    /// The node it went to.
    pub node: u64,
    /// When it was invoked, since the history began.
    pub invoked: Duration,
    /// When it returned, since the history began.
    pub returned: Duration,
    /// What it returned.
    pub outcome: Outcome,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} of {} on node {} [{:.3}s, {:.3}s] → {:?}",
            self.kind,
            self.key,
            self.node,
            self.invoked.as_secs_f64(),
            self.returned.as_secs_f64(),
            self.outcome
        )
    }
}

/// A history being recorded by concurrent clients.
pub struct History {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    /// An empty history; its clock starts now.
    pub fn new() -> Self {
        History {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// The time now on the history's clock (take it just before invoking).
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records an operation invoked at `invoked` that returns now with `outcome`.
    pub fn record(
        &self,
        key: MerkleHash,
        kind: Kind,
        node: u64,
        invoked: Duration,
        outcome: Outcome,
    ) {
        let op = Op {
            key,
            kind,
            node,
            invoked,
            returned: self.now(),
            outcome,
        };
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// The operations recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Counts of a checked history.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Files written or read.
    pub keys: usize,
    /// Writes acknowledged.
    pub acked_writes: usize,
    /// Writes that failed.
    pub failed_writes: usize,
    /// Reads that found the file.
    pub present_reads: usize,
    /// Reads that did not (before the file appeared).
    pub absent_reads: usize,
    /// Dedup queries that found the file.
    pub present_queries: usize,
    /// Dedup queries that did not although the file was acknowledged before they
    /// were invoked (allowed staleness).
    pub stale_queries: usize,
}

/// A history that is not linearizable (or a query that found a file never written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The file.
    pub key: MerkleHash,
    /// What is wrong, naming the operations.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file {}: {}", self.key, self.reason)
    }
}

/// Checks `ops` as described in the module documentation.
pub fn check(ops: &[Op]) -> Result<Summary, Violation> {
    let mut by_key: BTreeMap<[u8; 32], Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(*op.key.as_bytes()).or_default().push(op);
    }
    let mut summary = Summary {
        keys: by_key.len(),
        ..Summary::default()
    };
    for ops in by_key.values() {
        check_key(ops, &mut summary)?;
    }
    Ok(summary)
}

/// The check of one file's operations.
fn check_key(ops: &[&Op], summary: &mut Summary) -> Result<(), Violation> {
    let key = ops[0].key;
    let violation = |reason: String| Violation { key, reason };
    let of = |kind: Kind, outcome: Outcome| {
        ops.iter()
            .copied()
            .filter(move |o| o.kind == kind && o.outcome == outcome)
    };
    let first_write = ops
        .iter()
        .copied()
        .filter(|o| o.kind == Kind::Write)
        .min_by_key(|o| o.invoked);
    let first_ack = of(Kind::Write, Outcome::Acked).min_by_key(|o| o.returned);
    let last_absent = of(Kind::Read, Outcome::Absent).max_by_key(|o| o.invoked);
    let first_present = of(Kind::Read, Outcome::Present).min_by_key(|o| o.returned);
    summary.acked_writes += of(Kind::Write, Outcome::Acked).count();
    summary.failed_writes += of(Kind::Write, Outcome::Failed).count();
    summary.present_reads += of(Kind::Read, Outcome::Present).count();
    summary.absent_reads += of(Kind::Read, Outcome::Absent).count();
    summary.present_queries += of(Kind::DedupQuery, Outcome::Present).count();

    // Something present must have been written first (reads and queries alike).
    let first_found = ops
        .iter()
        .copied()
        .filter(|o| o.outcome == Outcome::Present)
        .min_by_key(|o| o.returned);
    if let Some(found) = first_found {
        match first_write {
            None => return Err(violation(format!("{found}, but nothing wrote it"))),
            Some(w) if w.invoked >= found.returned => {
                return Err(violation(format!(
                    "{found}, before the first write was invoked ({w})"
                )));
            }
            Some(_) => {}
        }
    }
    // The instant t of appearance: after the last absent read was invoked (and the
    // first write was), no later than the first present read returned and the first
    // acknowledgement.
    if let Some(absent) = last_absent {
        if let Some(ack) = first_ack
            && ack.returned <= absent.invoked
        {
            return Err(violation(format!(
                "{absent}, after a write was acknowledged ({ack})"
            )));
        }
        if let Some(present) = first_present
            && present.returned <= absent.invoked
        {
            return Err(violation(format!(
                "{absent}, after another read had found it ({present})"
            )));
        }
    }
    if let Some(ack) = first_ack {
        summary.stale_queries += of(Kind::DedupQuery, Outcome::Absent)
            .filter(|q| q.invoked >= ack.returned)
            .count();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> MerkleHash {
        MerkleHash::from_bytes([n; 32])
    }

    fn op(kind: Kind, outcome: Outcome, invoked_ms: u64, returned_ms: u64) -> Op {
        Op {
            key: key(1),
            kind,
            node: 1,
            invoked: Duration::from_millis(invoked_ms),
            returned: Duration::from_millis(returned_ms),
            outcome,
        }
    }

    use Kind::*;
    use Outcome::*;

    #[test]
    fn overlapping_reads_may_see_either_side_of_a_write() {
        let ops = [
            op(Read, Absent, 0, 5),
            op(Write, Acked, 10, 100),
            op(Read, Absent, 20, 30),
            op(Read, Present, 40, 50),
            // Invoked before the other read returned present: may still be absent.
            op(Read, Absent, 45, 200),
            op(Read, Present, 101, 110),
            op(DedupQuery, Absent, 150, 160),
        ];
        let s = check(&ops).unwrap();
        assert_eq!(s.present_reads, 2);
        assert_eq!(s.absent_reads, 3);
        assert_eq!(s.stale_queries, 1);
    }

    #[test]
    fn a_failed_write_may_have_taken_effect() {
        let ops = [op(Write, Failed, 0, 10), op(Read, Present, 20, 30)];
        assert!(check(&ops).is_ok());
        let ops = [op(Write, Failed, 0, 10), op(Read, Absent, 20, 30)];
        assert!(check(&ops).is_ok());
    }

    #[test]
    fn an_absent_read_after_the_acknowledgement_is_refused() {
        let ops = [op(Write, Acked, 0, 10), op(Read, Absent, 11, 20)];
        let v = check(&ops).unwrap_err();
        assert!(v.reason.contains("after a write was acknowledged"), "{v}");
    }

    #[test]
    fn an_absent_read_after_a_present_one_is_refused() {
        let ops = [
            op(Write, Failed, 0, 100),
            op(Read, Present, 10, 20),
            op(Read, Absent, 21, 30),
        ];
        let v = check(&ops).unwrap_err();
        assert!(v.reason.contains("after another read had found it"), "{v}");
    }

    #[test]
    fn files_found_before_or_without_a_write_are_refused() {
        let v = check(&[op(Read, Present, 0, 10)]).unwrap_err();
        assert!(v.reason.contains("nothing wrote it"), "{v}");
        let v = check(&[op(DedupQuery, Present, 0, 10), op(Write, Acked, 10, 20)]).unwrap_err();
        assert!(v.reason.contains("before the first write"), "{v}");
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut other = op(Read, Absent, 50, 60);
        other.key = key(2);
        let ops = [op(Write, Acked, 0, 10), op(Read, Present, 20, 30), other];
        assert_eq!(check(&ops).unwrap().keys, 2);
    }
}
