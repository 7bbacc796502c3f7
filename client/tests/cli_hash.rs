//! `cas hash` and `cas chunk` against the real Xet client (`hf_xet` from PyPI).

use std::path::{Path, PathBuf};
use std::process::Command;

use cas_compat::datasets;

fn cas(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cas"))
        .args(args)
        .output()
        .expect("run cas")
}

/// `hf_xet.hash_files` on the given paths: one hex hash per path.
fn hf_xet_hashes(paths: &[PathBuf]) -> Vec<String> {
    let script =
        "import sys, hf_xet\nfor info in hf_xet.hash_files(sys.argv[1:]):\n    print(info.hash)\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(paths)
        .output()
        .expect("python3 must be installed (run scripts/setup.sh)");
    assert!(
        out.status.success(),
        "hf_xet is required for this test (run scripts/setup.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write test file");
    p
}

#[test]
fn file_hashes_match_hf_xet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = vec![
        write(dir.path(), "empty", b""),
        write(dir.path(), "one-byte", b"x"),
        write(dir.path(), "random-3m", &datasets::random(1, 3 << 20)),
        write(dir.path(), "zeros-1m", &datasets::zeros(1 << 20)),
        write(dir.path(), "text-5m", &datasets::text(2, 5 << 20)),
        write(dir.path(), "floats-7m", &datasets::float_tensor(3, 7 << 20)),
        write(dir.path(), "mixed-70m", &datasets::mixed(4, 70 << 20)),
    ];
    let want = hf_xet_hashes(&files);
    let args: Vec<&str> = files
        .iter()
        .map(|p| p.to_str().expect("utf-8 path"))
        .collect();
    let out = cas(&[&["hash"], &args[..]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), files.len());
    for ((line, path), want) in lines.iter().zip(&args).zip(&want) {
        assert_eq!(*line, format!("{want}  {path}"));
    }
    // One thread gives the same answer.
    let out = cas(&["hash", "--threads", "1", args[6]]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{}  {}", want[6], args[6])
    );
}

#[test]
fn unreadable_file_is_reported_and_others_still_hashed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = write(dir.path(), "ok", b"hello");
    let missing = dir.path().join("missing");
    let out = cas(&[
        "hash",
        missing.to_str().expect("utf-8"),
        ok.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(&format!("  {}\n", ok.display())));
}

#[test]
fn chunk_prints_json_lines_covering_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = datasets::mixed(5, 9 << 20);
    let path = write(dir.path(), "mixed", &data);
    let out = cas(&["chunk", path.to_str().expect("utf-8")]);
    assert!(out.status.success());
    let want = cas_core::chunking::chunk_and_hash(&data);
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), want.len());
    for (line, c) in lines.iter().zip(&want) {
        assert_eq!(line["offset"], c.offset as u64);
        assert_eq!(line["length"], c.len as u64);
        assert_eq!(line["hash"], c.hash.to_string());
    }
    let empty = write(dir.path(), "empty", b"");
    let out = cas(&["chunk", empty.to_str().expect("utf-8")]);
    assert!(out.status.success() && out.stdout.is_empty());
}
