//! The `cas-node` binary: `token issue` and `config check`.

use cas_node::auth::{AuthError, Scope, Tokens, require};
use cas_node::config::{AuthConfig, Secret};
use std::io::Write as _;
use std::process::{Command, Output};

const SECRET: &str = "cli-test-secret-0123456789abcdefghij";
const S3_SECRET: &str = "s3-secret-do-not-print";

fn cas_node(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cas-node"));
    cmd.args(args);
    // Keep the test independent of the developer's environment.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CAS_NODE") {
            cmd.env_remove(key);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("runs cas-node")
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn verifier() -> Tokens {
    Tokens::from_config(&AuthConfig {
        token_secret: Some(Secret::new(SECRET)),
        ..AuthConfig::default()
    })
    .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn issued_token_verifies_with_the_library() {
    let file = config_file(&format!("[auth]\ntoken_secret = \"{SECRET}\"\n"));
    let path = file.path().to_str().unwrap();
    let out = cas_node(
        &[
            "token",
            "issue",
            "--config",
            path,
            "--scope",
            "read",
            "--subject",
            "ci-job",
            "--ttl",
            "15m",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out).trim().to_owned();
    let claims = verifier().verify(&token).expect("verifies");
    assert_eq!(claims.sub, "ci-job");
    assert_eq!(claims.exp - claims.iat, 15 * 60);
    assert_eq!(require(&claims, Scope::Read), Ok(()));
    assert_eq!(
        require(&claims, Scope::Write),
        Err(AuthError::InsufficientScope {
            needed: Scope::Write
        })
    );
}

#[test]
fn json_output_has_token_and_expiry() {
    // Secret from the environment only, no file.
    let out = cas_node(
        &[
            "token",
            "issue",
            "--scope",
            "write",
            "--subject",
            "alice",
            "--ttl",
            "24h",
            "--json",
        ],
        &[
            ("CAS_NODE__AUTH__TOKEN_SECRET", SECRET),
            ("CAS_NODE__HTTP__PUBLIC_URL", "https://cas.example.com"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let token = json["accessToken"].as_str().expect("accessToken");
    let claims = verifier().verify(token).expect("verifies");
    assert_eq!(json["exp"].as_u64(), Some(claims.exp));
    assert_eq!(json["issuedAt"].as_u64(), Some(claims.iat));
    assert_eq!(claims.exp - claims.iat, 24 * 3_600);
    assert_eq!(json["subject"], "alice");
    assert_eq!(json["scopes"], serde_json::json!(["write"]));
    assert_eq!(json["tokenId"].as_str(), Some(claims.jti.as_str()));
    assert_eq!(json["casUrl"], "https://cas.example.com");
    let expires_at = json["expiresAt"].as_str().expect("expiresAt");
    assert!(
        expires_at.ends_with('Z') && expires_at.len() == 20,
        "{expires_at}"
    );
    assert!(claims.allows(Scope::Read), "write implies read");
}

/// Environment variables given to one `cas-node` run.
type Env<'a> = &'a [(&'a str, &'a str)];

#[test]
fn token_issue_refuses_bad_input() {
    let env: Env = &[("CAS_NODE__AUTH__TOKEN_SECRET", SECRET)];
    let issue = ["token", "issue", "--subject", "a", "--scope"];
    // (extra arguments, environment, exit code, expected message)
    let cases: [(&[&str], Env, i32, &str); 4] = [
        (&["root"], env, 2, "\"root\" is not a scope"),
        (&["read", "--ttl", "24"], env, 2, "is not a duration"),
        (&["read", "--ttl", "400d"], env, 1, "exceeds the maximum"),
        (&["read"], &[], 1, "auth.token_secret: required"),
    ];
    for (extra, env, code, needle) in cases {
        let args: Vec<&str> = issue.iter().chain(extra).copied().collect();
        let out = cas_node(&args, env);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?} printed a token");
    }
}

#[test]
fn config_check_prints_effective_config_redacted() {
    let file = config_file(&format!(
        "[node]\nid = 9\nregion = \"ap-southeast-1\"\n\n[s3]\nbucket = \"from-file\"\n\
         access_key_id = \"AKIA\"\nsecret_access_key = \"{S3_SECRET}\"\n\n\
         [auth]\ntoken_secret = \"{SECRET}\"\n"
    ));
    let path = file.path().to_str().unwrap();
    let out = cas_node(
        &["config", "check", "--config", path],
        &[("CAS_NODE__S3__BUCKET", "from-env")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains(SECRET) && !text.contains(S3_SECRET),
        "{text}"
    );
    assert!(text.contains("[redacted]"), "{text}");
    let effective: toml::Table = toml::from_str(&text).expect("prints TOML");
    assert_eq!(effective["node"]["id"].as_integer(), Some(9));
    assert_eq!(effective["node"]["region"].as_str(), Some("ap-southeast-1"));
    assert_eq!(effective["s3"]["bucket"].as_str(), Some("from-env"));
    assert_eq!(
        effective["http"]["public_url"].as_str(),
        Some("http://127.0.0.1:8080")
    );
    assert_eq!(effective["s3"]["request_timeout"].as_str(), Some("1m"));
}

#[test]
fn config_check_names_bad_fields() {
    let file = config_file(&format!(
        "[http]\nlisten = \"abc\"\n\n[auth]\ntoken_secret = \"{SECRET}\"\n"
    ));
    let path = file.path().to_str().unwrap();
    let out = cas_node(&["config", "check", "--config", path], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("http.listen: \"abc\" is not a socket address"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());

    let out = cas_node(
        &["config", "check", "--config", path],
        &[
            ("CAS_NODE__HTTP__LISTEN", "127.0.0.1:8080"),
            ("CAS_NODE__S3__BUCKET", ""),
        ],
    );
    assert!(out.status.success(), "env fixes the file: {}", stderr(&out));

    let file = config_file(&format!(
        "[s3]\nbucket = \"\"\n[auth]\ntoken_secret = \"{SECRET}\"\n"
    ));
    let out = cas_node(
        &["config", "check", "--config", file.path().to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("s3.bucket: must not be empty"),
        "{}",
        stderr(&out)
    );

    let file = config_file(&format!(
        "[s3]\nbuckett = \"x\"\n[auth]\ntoken_secret = \"{SECRET}\"\n"
    ));
    let out = cas_node(
        &["config", "check", "--config", file.path().to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("s3.buckett: unknown field"),
        "{}",
        stderr(&out)
    );
}
