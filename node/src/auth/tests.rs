use super::*;
use base64_free::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const HOUR: Duration = Duration::from_secs(3_600);

fn tokens() -> Tokens {
    Tokens::new(&Secret::new(SECRET)).expect("strong secret")
}

/// Base64url without padding, enough to forge payloads in tests.
mod base64_free {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    pub fn decode(text: &str) -> Vec<u8> {
        let values: Vec<u32> = text
            .bytes()
            .map(|c| ALPHABET.iter().position(|&a| a == c).expect("base64url") as u32)
            .collect();
        let mut out = Vec::new();
        for chunk in values.chunks(4) {
            let mut n = 0u32;
            for (i, v) in chunk.iter().enumerate() {
                n |= v << (18 - 6 * i);
            }
            for i in 0..chunk.len() - 1 {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        out
    }
}

/// Replaces the payload of `token` with `edit(payload)`, keeping header and signature.
fn tamper(token: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let mut payload: serde_json::Value = serde_json::from_slice(&decode(parts[1])).unwrap();
    edit(&mut payload);
    let payload = encode(&serde_json::to_vec(&payload).unwrap());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

fn assert_refused(result: Result<Claims, AuthError>, expected: AuthError, code: &str, status: u16) {
    let err = result.expect_err("must be refused");
    assert_eq!(err, expected);
    assert_eq!(err.code(), code);
    assert_eq!(err.http_status(), status);
}

#[test]
fn tokens_round_trip() {
    let t = tokens();
    let issued = t.issue("alice", [Scope::Write], 24 * HOUR).expect("issued");
    let claims = t.verify(&issued.token).expect("verifies");
    assert_eq!(claims, issued.claims);
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.aud, AUDIENCE);
    assert_eq!(claims.exp - claims.iat, 24 * 3_600);
    assert!(claims.iat.abs_diff(unix_now()) <= 5);
    assert_eq!(claims.jti.len(), 32);
    assert_eq!(claims.scope.to_string(), "write");

    let other = t.issue("alice", [Scope::Write], HOUR).expect("issued");
    assert_ne!(other.claims.jti, claims.jti, "token ids are unique");

    // The same secret in another instance (another node) verifies too.
    assert_eq!(tokens().verify(&issued.token), Ok(claims));
}

#[test]
fn wrong_secret_is_a_bad_signature() {
    let issued = tokens().issue("alice", [Scope::Read], HOUR).unwrap();
    let other = Tokens::new(&Secret::new("fedcba9876543210fedcba9876543210")).unwrap();
    assert_refused(
        other.verify(&issued.token),
        AuthError::BadSignature,
        "token_bad_signature",
        401,
    );
}

#[test]
fn tampered_payload_is_a_bad_signature() {
    let t = tokens();
    let issued = t.issue("alice", [Scope::Read], HOUR).unwrap();
    let forged = tamper(&issued.token, |p| p["scope"] = "read write".into());
    assert_refused(
        t.verify(&forged),
        AuthError::BadSignature,
        "token_bad_signature",
        401,
    );
    let forged = tamper(&issued.token, |p| {
        p["exp"] = (unix_now() + 1_000_000).into()
    });
    assert_refused(
        t.verify(&forged),
        AuthError::BadSignature,
        "token_bad_signature",
        401,
    );
    let forged = tamper(&issued.token, |p| p["sub"] = "mallory".into());
    assert_refused(
        t.verify(&forged),
        AuthError::BadSignature,
        "token_bad_signature",
        401,
    );
}

#[test]
fn alg_none_is_refused() {
    let t = tokens();
    let issued = t.issue("alice", [Scope::Read], HOUR).unwrap();
    let parts: Vec<&str> = issued.token.split('.').collect();
    let header = encode(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{header}.{}.", parts[1]);
    assert!(t.verify(&unsigned).is_err());
    let hs512 = encode(br#"{"alg":"HS512","typ":"JWT"}"#);
    let other_alg = format!("{hs512}.{}.{}", parts[1], parts[2]);
    assert_refused(
        t.verify(&other_alg),
        AuthError::BadSignature,
        "token_bad_signature",
        401,
    );
}

#[test]
fn expiry_is_enforced_with_leeway() {
    let t = tokens();
    let now = unix_now();
    // Issued two hours ago for one hour: expired an hour ago.
    let old = t
        .issue_at("alice", [Scope::Read], HOUR, now - 2 * 3_600)
        .unwrap();
    assert_refused(
        t.verify(&old.token),
        AuthError::Expired,
        "token_expired",
        401,
    );

    // Exactly at the boundary, with an explicit clock.
    let issued = t.issue_at("alice", [Scope::Read], HOUR, 1_000_000).unwrap();
    let exp = issued.claims.exp;
    let leeway = CLOCK_SKEW_LEEWAY.as_secs();
    assert!(t.verify_at(&issued.token, exp).is_ok(), "within the leeway");
    assert!(
        t.verify_at(&issued.token, exp + leeway - 1).is_ok(),
        "last second of the leeway"
    );
    assert_refused(
        t.verify_at(&issued.token, exp + leeway),
        AuthError::Expired,
        "token_expired",
        401,
    );

    // Issued in the future (clock skew beyond the leeway).
    assert!(t.verify_at(&issued.token, 1_000_000 - leeway).is_ok());
    assert_refused(
        t.verify_at(&issued.token, 1_000_000 - leeway - 1),
        AuthError::NotYetValid,
        "token_not_yet_valid",
        401,
    );
}

#[test]
fn malformed_and_missing_tokens() {
    let t = tokens();
    for bad in [
        "abc",
        "a.b.c",
        "not a token",
        "....",
        &"x".repeat(MAX_TOKEN_BYTES + 1),
    ] {
        let err = t.verify(bad).expect_err(bad);
        assert!(matches!(err, AuthError::Malformed(_)), "{bad}: {err:?}");
        assert_eq!(err.code(), "token_malformed");
        assert_eq!(err.http_status(), 401);
    }
    assert_refused(t.verify(""), AuthError::Missing, "token_missing", 401);

    // Claims that are not ours, even correctly signed, are malformed.
    let header = Header::new(Algorithm::HS256);
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let now = unix_now();
    let cases = [
        serde_json::json!({"sub": "a", "exp": now + 60}),
        serde_json::json!({"aud": AUDIENCE, "sub": "a", "scope": "read", "iat": now, "jti": "x"}),
        serde_json::json!({"aud": "other", "sub": "a", "scope": "read", "iat": now, "exp": now + 60, "jti": "x"}),
        serde_json::json!({"aud": AUDIENCE, "sub": "a", "scope": "superuser", "iat": now, "exp": now + 60, "jti": "x"}),
        serde_json::json!({"aud": AUDIENCE, "sub": "a", "scope": "read", "iat": now, "exp": now + 60, "jti": "x", "bucket": "b"}),
        serde_json::json!({"aud": AUDIENCE, "sub": "", "scope": "read", "iat": now, "exp": now + 60, "jti": "x"}),
        serde_json::json!({"aud": AUDIENCE, "sub": "a", "scope": "read", "iat": now, "exp": now, "jti": "x"}),
    ];
    for claims in cases {
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let err = t.verify(&token).expect_err(&claims.to_string());
        assert!(matches!(err, AuthError::Malformed(_)), "{claims}: {err:?}");
    }
}

#[test]
fn bearer_header_parsing() {
    assert_eq!(bearer_token(None), Err(AuthError::Missing));
    assert_eq!(bearer_token(Some("")), Err(AuthError::Missing));
    assert_eq!(bearer_token(Some("Bearer ")), Err(AuthError::Missing));
    assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
    assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
    assert!(matches!(
        bearer_token(Some("Basic dXNlcjpwYXNz")),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        bearer_token(Some("Bearer a b")),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn read_token_cannot_write() {
    let t = tokens();
    let read = t.issue("reader", [Scope::Read], HOUR).unwrap();
    let header = format!("Bearer {}", read.token);
    assert!(t.authorize(Some(&header), Scope::Read).is_ok());
    let err = t.authorize(Some(&header), Scope::Write).unwrap_err();
    assert_eq!(
        err,
        AuthError::InsufficientScope {
            needed: Scope::Write
        }
    );
    assert_eq!(err.code(), "insufficient_scope");
    assert_eq!(err.http_status(), 403);
    assert_eq!(err.grpc_code(), 7);
    assert!(err.www_authenticate().contains("insufficient_scope"));
    assert_eq!(require(&read.claims, Scope::Write), Err(err));

    assert_eq!(t.authorize(None, Scope::Read), Err(AuthError::Missing));
    assert_eq!(AuthError::Missing.grpc_code(), 16);
}

#[test]
fn write_implies_read() {
    let t = tokens();
    let write = t.issue("writer", [Scope::Write], HOUR).unwrap();
    let claims = t
        .authorize(Some(&format!("Bearer {}", write.token)), Scope::Read)
        .unwrap();
    assert_eq!(require(&claims, Scope::Read), Ok(()));
    assert_eq!(require(&claims, Scope::Write), Ok(()));
    assert!(Scope::Write.implies(Scope::Read));
    assert!(!Scope::Read.implies(Scope::Write));
    let both: Scopes = [Scope::Write, Scope::Read, Scope::Write]
        .into_iter()
        .collect();
    assert_eq!(both.to_string(), "read write");
    assert_eq!("write read".parse::<Scopes>(), Ok(both));
}

#[test]
fn cluster_and_admin_scopes_grant_only_themselves() {
    for s in Scope::ALL {
        assert_eq!(Scope::Cluster.implies(s), s == Scope::Cluster, "{s}");
        assert_eq!(Scope::Admin.implies(s), s == Scope::Admin, "{s}");
        assert!(!Scope::Write.implies(Scope::Cluster) && !Scope::Write.implies(Scope::Admin));
    }
    let t = tokens();
    let node = t.issue("node-3", [Scope::Cluster], HOUR).unwrap();
    let header = format!("Bearer {}", node.token);
    assert!(t.authorize(Some(&header), Scope::Cluster).is_ok());
    assert_eq!(
        t.authorize(Some(&header), Scope::Read).unwrap_err().code(),
        "insufficient_scope"
    );
    assert_eq!(
        "admin cluster".parse::<Scopes>().unwrap().to_string(),
        "cluster admin"
    );
}

#[test]
fn issue_checks_its_arguments() {
    let t = tokens().with_max_ttl(24 * HOUR);
    assert_eq!(
        t.issue("", [Scope::Read], HOUR).unwrap_err(),
        IssueError::BadSubject
    );
    assert_eq!(
        t.issue("a\nb", [Scope::Read], HOUR).unwrap_err(),
        IssueError::BadSubject
    );
    assert_eq!(t.issue("a", [], HOUR).unwrap_err(), IssueError::NoScopes);
    assert_eq!(
        t.issue("a", [Scope::Read], Duration::ZERO).unwrap_err(),
        IssueError::TtlTooShort
    );
    assert!(matches!(
        t.issue("a", [Scope::Read], 25 * HOUR).unwrap_err(),
        IssueError::TtlTooLong { .. }
    ));
    assert!(t.issue("a", [Scope::Read], 24 * HOUR).is_ok());
}

#[test]
fn weak_secrets_are_refused() {
    assert!(matches!(
        Tokens::new(&Secret::new("short")),
        Err(WeakSecret::TooShort { len: 5, .. })
    ));
    assert!(matches!(
        Tokens::new(&Secret::new("ab".repeat(32))),
        Err(WeakSecret::Repetitive { .. })
    ));
}

#[test]
fn debug_never_shows_secrets_or_tokens() {
    let t = tokens();
    let issued = t.issue("alice", [Scope::Read], HOUR).unwrap();
    let text = format!("{t:?} {issued:?}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(!text.contains(&issued.token), "{text}");
}

#[test]
fn from_config_uses_secret_and_max_ttl() {
    let config = crate::config::AuthConfig {
        token_secret: Some(Secret::new(SECRET)),
        token_secret_file: None,
        max_token_ttl: HOUR,
    };
    let t = Tokens::from_config(&config).unwrap();
    assert!(t.issue("a", [Scope::Read], 2 * HOUR).is_err());
    let issued = t.issue("a", [Scope::Read], HOUR).unwrap();
    assert!(tokens().verify(&issued.token).is_ok());

    let missing = crate::config::AuthConfig::default();
    let err = Tokens::from_config(&missing).unwrap_err();
    assert!(
        err.to_string().contains("auth.token_secret: required"),
        "{err}"
    );
}
