//! Injected faults of the index network, for drills and tests: regions cut off from
//! the others (a simulated partition) and snapshot transfers held open before their
//! end (so a node can be stopped while it receives one).
//!
//! Nodes read them from a [`FaultFile`] (`cluster.fault_file`); every node reads the
//! same file, so a cut applies to calls in both directions.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The faults to inject, as written in the fault file:
/// `{"isolated": ["ap-southeast-1"], "snapshot_stall_ms": 30000}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FaultFile {
    /// Regions cut off from every other region (calls within a region still pass).
    #[serde(default)]
    pub isolated: Vec<String>,
    /// How long every snapshot transfer waits after its last byte before it ends.
    #[serde(default)]
    pub snapshot_stall_ms: u64,
}

impl FaultFile {
    /// Reads a fault file; a missing file means no fault.
    pub fn read(path: &Path) -> std::io::Result<FaultFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FaultFile::default()),
            Err(e) => return Err(e),
        };
        serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Writes the file atomically (a reader sees the old faults or the new ones).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }
}

/// The faults a node's peer calls obey now.
#[derive(Debug, Default)]
pub struct Faults {
    isolated: RwLock<BTreeSet<String>>,
    snapshot_stall_ms: AtomicU64,
}

impl Faults {
    /// Whether a call between a node in region `a` and one in region `b` is cut.
    pub fn blocks(&self, a: &str, b: &str) -> bool {
        let isolated = self.isolated.read().unwrap_or_else(|e| e.into_inner());
        a != b && (isolated.contains(a) || isolated.contains(b))
    }

    /// How long a snapshot transfer waits before it ends.
    pub fn snapshot_stall(&self) -> Duration {
        Duration::from_millis(self.snapshot_stall_ms.load(Ordering::Relaxed))
    }

    /// Applies the faults of `file` (and lifts every other).
    pub fn apply(&self, file: &FaultFile) {
        let new: BTreeSet<String> = file.isolated.iter().cloned().collect();
        {
            let mut isolated = self.isolated.write().unwrap_or_else(|e| e.into_inner());
            if *isolated != new {
                tracing::warn!(isolated = ?new, "simulated partition changed");
                *isolated = new;
            }
        }
        let old = self
            .snapshot_stall_ms
            .swap(file.snapshot_stall_ms, Ordering::Relaxed);
        if old != file.snapshot_stall_ms {
            tracing::warn!(
                ms = file.snapshot_stall_ms,
                "snapshot transfer stall changed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isolating(regions: &[&str]) -> FaultFile {
        FaultFile {
            isolated: regions.iter().map(|r| r.to_string()).collect(),
            ..FaultFile::default()
        }
    }

    #[test]
    fn partitions_cut_calls_across_isolated_regions_only() {
        let f = Faults::default();
        assert!(!f.blocks("us-east-1", "ap-southeast-1"));
        f.apply(&isolating(&["ap-southeast-1"]));
        assert!(f.blocks("us-east-1", "ap-southeast-1"));
        assert!(f.blocks("ap-southeast-1", "eu-west-3"));
        assert!(!f.blocks("us-east-1", "eu-west-3"));
        assert!(!f.blocks("ap-southeast-1", "ap-southeast-1"));
        f.apply(&FaultFile::default());
        assert!(!f.blocks("us-east-1", "ap-southeast-1"));
    }

    #[test]
    fn snapshot_stalls_are_set_and_lifted() {
        let f = Faults::default();
        assert_eq!(f.snapshot_stall(), Duration::ZERO);
        f.apply(&FaultFile {
            snapshot_stall_ms: 1500,
            ..FaultFile::default()
        });
        assert_eq!(f.snapshot_stall(), Duration::from_millis(1500));
        f.apply(&FaultFile::default());
        assert_eq!(f.snapshot_stall(), Duration::ZERO);
    }

    #[test]
    fn fault_files_round_trip_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faults.json");
        assert_eq!(FaultFile::read(&path).unwrap(), FaultFile::default());
        std::fs::write(&path, r#"{"isolated": ["eu-west-3"]}"#).unwrap();
        assert_eq!(FaultFile::read(&path).unwrap(), isolating(&["eu-west-3"]));
        let f = FaultFile {
            isolated: vec!["us-east-1".into()],
            snapshot_stall_ms: 7,
        };
        f.write(&path).unwrap();
        assert_eq!(FaultFile::read(&path).unwrap(), f);
        std::fs::write(&path, "{").unwrap();
        assert!(FaultFile::read(&path).is_err());
    }
}
