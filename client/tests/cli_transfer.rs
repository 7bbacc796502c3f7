//! `cas upload` and `cas download`: arguments, environment, help, and failures
//! (a closed loopback port stands in for an unreachable server). Transfers
//! against a real server are tested on the library, in the compat crate.

use std::net::TcpListener;
use std::process::{Command, Output};

const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Runs `cas` without any `CAS_*` variable from the calling environment, plus `env`.
fn cas(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cas"));
    cmd.args(args)
        .env_remove("CAS_ENDPOINT")
        .env_remove("CAS_TOKEN")
        .env_remove("CAS_SHA256");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run cas")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An endpoint on a loopback port nobody listens on.
fn closed_endpoint() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    format!("http://127.0.0.1:{port}")
}

#[test]
fn help_documents_ranges_and_environment_without_showing_the_token() {
    let out = cas(
        &["download", "--help"],
        &[("CAS_TOKEN", "very-secret-token")],
    );
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--range <START-END>",
        "inclusive",
        "START-",
        "CAS_ENDPOINT",
        "CAS_TOKEN",
        "-o, --output <OUT>",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
    assert!(!help.contains("very-secret-token"));

    let out = cas(&["upload", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("<PATHS>..."), "{help}");
    assert!(help.contains("<file-hash>  <path>"), "{help}");
    // The SHA-256 is opt-in, by flag or environment.
    assert!(help.contains("--sha256"), "{help}");
    assert!(help.contains("CAS_SHA256"), "{help}");
}

#[test]
fn arguments_are_checked_before_any_request() {
    // No endpoint at all.
    let out = cas(&["download", HASH, "-o", "x"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--endpoint"), "{}", stderr(&out));

    let ep = closed_endpoint();
    for (args, needle) in [
        (
            vec!["download", "--endpoint", &ep, "nothex", "-o", "x"],
            "<HASH>",
        ),
        (
            vec![
                "download",
                "--endpoint",
                &ep,
                HASH,
                "-o",
                "x",
                "--range",
                "9-3",
            ],
            "END is before START",
        ),
        (
            vec![
                "download",
                "--endpoint",
                &ep,
                HASH,
                "-o",
                "x",
                "--range",
                "abc",
            ],
            "--range",
        ),
        (vec!["download", "--endpoint", &ep, HASH], "--output"),
        (vec!["upload", "--endpoint", &ep], "<PATHS>"),
        (
            vec!["upload", "--endpoint", &ep, "--attempts", "0", "f"],
            "--attempts",
        ),
    ] {
        let out = cas(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn invalid_endpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("out");
    let out = cas(
        &[
            "download",
            "--endpoint",
            "ftp://example",
            HASH,
            "-o",
            out_path.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("http:// or https://"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreachable_server_fails_without_writing_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("out.bin");
    let ep = closed_endpoint();
    // The endpoint and token come from the environment.
    let out = cas(
        &[
            "download",
            "--attempts",
            "2",
            HASH,
            "-o",
            out_path.to_str().unwrap(),
        ],
        &[("CAS_ENDPOINT", &ep), ("CAS_TOKEN", "t")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("cas: download of "), "{err}");
    assert!(
        err.contains(&ep) && err.contains("/v2/reconstructions/"),
        "{err}"
    );
    assert!(!out_path.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temporary file left behind"
    );
}

#[test]
fn upload_of_a_missing_path_names_it_and_prints_no_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("does-not-exist");
    let ep = closed_endpoint();
    let out = cas(
        &["upload", "--endpoint", &ep, missing.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("does-not-exist"), "{}", stderr(&out));
}

#[test]
fn upload_to_an_unreachable_server_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f");
    std::fs::write(&file, b"some bytes to upload").unwrap();
    let ep = closed_endpoint();
    let out = cas(
        &[
            "upload",
            "--endpoint",
            &ep,
            "--attempts",
            "1",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "no hash printed for an upload that failed"
    );
    let err = stderr(&out);
    assert!(err.contains(&format!("upload to {ep} failed")), "{err}");
}

#[test]
fn grpc_endpoints_fail_cleanly_when_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f");
    std::fs::write(&file, b"some bytes to upload").unwrap();
    let ep = closed_endpoint().replace("http://", "grpc://");
    let out = cas(
        &[
            "upload",
            "--endpoint",
            &ep,
            "--attempts",
            "1",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.contains(&format!("upload to {ep} failed")), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out_path = dir.path().join("out.bin");
    let out = cas(
        &[
            "download",
            "--endpoint",
            &ep,
            "--attempts",
            "1",
            HASH,
            "-o",
            out_path.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert!(!out_path.exists());

    let out = cas(
        &[
            "upload",
            "--endpoint",
            "grpc://h:1/a/path",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("grpc://host:port"),
        "{}",
        stderr(&out)
    );
}
