//! Replays the checked-in fuzz seed corpora through the fuzz targets' checks,
//! plus single-byte mutations of every seed, on every normal test run.

/// This package's directory: cargo's run-time value (the checkout being tested),
/// falling back to the compile-time one.
fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = package_dir().join("fuzz/corpus").join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("directory entry").path();
            let bytes = std::fs::read(&path).expect("read corpus file");
            (path.display().to_string(), bytes)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{target}: the seed corpus is missing");
    files
}

/// Runs `check` on each seed and on deterministic mutations of it.
fn replay(target: &str, check: fn(&[u8])) {
    for (name, seed) in corpus(target) {
        eprintln!("replaying {name}");
        check(&seed);
        let step = (seed.len() / 64).max(1);
        for i in (0..seed.len()).step_by(step) {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut m = seed.clone();
                m[i] ^= flip;
                check(&m);
            }
            check(&seed[..i]);
        }
    }
}

#[test]
fn shard_parse_corpus() {
    replay("shard_parse", cas_core::fuzzing::check_shard_bytes);
}

#[test]
fn xorb_parse_corpus() {
    replay("xorb_parse", cas_core::fuzzing::check_xorb_bytes);
}
