//! Field-by-field checks of a parsed configuration.

use super::{AuthConfig, FieldError, Mode, NodeConfig, Secret};
use crate::auth;
use std::net::SocketAddr;
use std::time::Duration;

/// Every problem in `config` for `mode`, in field order.
pub(super) fn validate(config: &NodeConfig, mode: Mode) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut check = |field: &str, result: Result<(), String>| {
        if let Err(message) = result {
            errors.push(FieldError::new(field, message));
        }
    };

    // [node]
    let node = &config.node;
    check(
        "node.id",
        if node.id == 0 {
            Err("must be at least 1".into())
        } else {
            Ok(())
        },
    );
    check(
        "node.data_dir",
        if node.data_dir.as_os_str().is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(())
        },
    );

    // [http], [grpc], [telemetry] listen addresses
    let http = &config.http;
    match &http.public_url {
        Some(url) => check("http.public_url", base_url(url)),
        None => check(
            "http.public_url",
            if http.listen.ip().is_unspecified() {
                Err(format!(
                    "must be set when http.listen is a wildcard address ({})",
                    http.listen
                ))
            } else {
                Ok(())
            },
        ),
    }
    check(
        "grpc.listen",
        distinct(config.grpc.listen, &[("http.listen", http.listen)]),
    );
    match &config.grpc.advertise {
        Some(addr) => check("grpc.advertise", peer_address(addr)),
        None => check(
            "grpc.advertise",
            if config.grpc.listen.ip().is_unspecified() {
                Err(format!(
                    "must be set when grpc.listen is a wildcard address ({}): the other nodes need an address to reach this one",
                    config.grpc.listen
                ))
            } else {
                Ok(())
            },
        ),
    }
    if let Some(metrics) = config.telemetry.metrics_listen {
        check(
            "telemetry.metrics_listen",
            distinct(
                metrics,
                &[
                    ("http.listen", http.listen),
                    ("grpc.listen", config.grpc.listen),
                ],
            ),
        );
    }

    // [s3]
    let s3 = &config.s3;
    if let Some(endpoint) = &s3.endpoint {
        check("s3.endpoint", base_url(endpoint));
    }
    check("s3.region", aws_region(&s3.region));
    check("s3.bucket", bucket_name(&s3.bucket));
    match (&s3.access_key_id, &s3.secret_access_key) {
        (Some(id), Some(secret)) => {
            check("s3.access_key_id", non_empty(id));
            check("s3.secret_access_key", non_empty(secret.expose()));
        }
        (Some(_), None) => check(
            "s3.secret_access_key",
            Err("must be set together with s3.access_key_id".into()),
        ),
        (None, Some(_)) => check(
            "s3.access_key_id",
            Err("must be set together with s3.secret_access_key".into()),
        ),
        (None, None) => {}
    }
    check(
        "s3.key_prefix",
        crate::store::validate_prefix(&s3.key_prefix),
    );
    check(
        "s3.request_timeout",
        within(
            s3.request_timeout,
            Duration::from_secs(1),
            crate::store::MAX_REQUEST_TIMEOUT,
        ),
    );
    check(
        "s3.max_retries",
        if s3.max_retries > 10 {
            Err(format!("must be at most 10 (got {})", s3.max_retries))
        } else {
            Ok(())
        },
    );
    check(
        "s3.presign_ttl",
        within(
            s3.presign_ttl,
            Duration::from_secs(1),
            crate::store::MAX_PRESIGN_TTL,
        ),
    );

    // [auth]
    match resolve_secret(&config.auth) {
        Ok(Some(_)) => {}
        Ok(None) if mode == Mode::Demo => {}
        Ok(None) => errors_push(&mut check, missing_secret()),
        Err(e) => errors_push(&mut check, e),
    }
    check(
        "auth.max_token_ttl",
        within(
            config.auth.max_token_ttl,
            Duration::from_secs(60),
            Duration::from_secs(365 * 86_400),
        ),
    );

    // [limits]
    let limits = &config.limits;
    check(
        "limits.max_xorb_upload_bytes",
        byte_limit(limits.max_xorb_upload_bytes),
    );
    check(
        "limits.max_shard_upload_bytes",
        byte_limit(limits.max_shard_upload_bytes),
    );

    // [telemetry]
    let filter = &config.telemetry.log_filter;
    check(
        "telemetry.log_filter",
        if filter.trim().is_empty() {
            Err("must not be empty".into())
        } else {
            tracing_subscriber::EnvFilter::try_new(filter)
                .map(drop)
                .map_err(|e| format!("{filter:?} is not a valid log filter: {e}"))
        },
    );

    errors
}

fn errors_push(check: &mut impl FnMut(&str, Result<(), String>), error: FieldError) {
    check(&error.field, Err(error.message));
}

/// The error for a missing signing secret.
pub(super) fn missing_secret() -> FieldError {
    FieldError::new(
        "auth.token_secret",
        "required: set auth.token_secret_file, auth.token_secret or \
         CAS_NODE__AUTH__TOKEN_SECRET",
    )
}

/// The configured secret (inline or from its file), checked for strength.
pub(super) fn resolve_secret(auth_config: &AuthConfig) -> Result<Option<Secret>, FieldError> {
    let (field, secret) = match (&auth_config.token_secret, &auth_config.token_secret_file) {
        (Some(_), Some(_)) => {
            return Err(FieldError::new(
                "auth.token_secret_file",
                "conflicts with auth.token_secret; set only one",
            ));
        }
        (None, None) => return Ok(None),
        (Some(secret), None) => ("auth.token_secret", secret.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                FieldError::new(
                    "auth.token_secret_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            ("auth.token_secret_file", Secret::new(text.trim()))
        }
    };
    auth::check_secret_strength(secret.expose().as_bytes())
        .map_err(|e| FieldError::new(field, e.to_string()))?;
    Ok(Some(secret))
}

fn non_empty(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(())
    }
}

fn within(value: Duration, min: Duration, max: Duration) -> Result<(), String> {
    use super::format_duration as f;
    if value < min || value > max {
        Err(format!(
            "must be between {} and {} (got {})",
            f(min),
            f(max),
            f(value)
        ))
    } else {
        Ok(())
    }
}

fn byte_limit(value: u64) -> Result<(), String> {
    const MAX: u64 = 1 << 32; // xorb and shard offsets are u32
    if value == 0 || value > MAX {
        Err(format!("must be between 1 and {MAX} bytes (got {value})"))
    } else {
        Ok(())
    }
}

/// Two listeners clash when they share a port and an address (a wildcard matches all).
fn distinct(addr: SocketAddr, others: &[(&str, SocketAddr)]) -> Result<(), String> {
    for (name, other) in others {
        let same_ip =
            addr.ip() == other.ip() || addr.ip().is_unspecified() || other.ip().is_unspecified();
        if addr.port() != 0 && addr.port() == other.port() && same_ip {
            return Err(format!("{addr} clashes with {name} ({other})"));
        }
    }
    Ok(())
}

/// `http(s)://host[:port][/path]`, no query, fragment, credentials or whitespace.
fn base_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} contains whitespace"));
    }
    if url.contains(['?', '#']) {
        return Err(format!("{url:?} must not have a query or fragment"));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!("{url:?} must not contain credentials"));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, after)) => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{url:?} has a malformed host")),
            },
            None => return Err(format!("{url:?} has a malformed host")),
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("{url:?} has an invalid port {port:?}"));
    }
    Ok(())
}

fn aws_region(region: &str) -> Result<(), String> {
    if region.is_empty() {
        return Err("must not be empty".into());
    }
    if !region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "{region:?} is not a region name (lowercase letters, digits, `-`)"
        ));
    }
    Ok(())
}

/// S3 bucket naming rules: 3-63 of `a-z0-9.-`, starting and ending with a letter or digit.
fn bucket_name(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("must not be empty".into());
    }
    let bytes = bucket.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = (3..=63).contains(&bytes.len())
        && bytes.iter().all(|b| alnum(b) || *b == b'.' || *b == b'-')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{bucket:?} is not a valid bucket name (3-63 characters of a-z, 0-9, `.` and `-`, \
             starting and ending with a letter or digit)"
        ))
    }
}

/// Checks an address the nodes reach each other at: `IP:PORT`, `[IPv6]:PORT` or
/// `HOST:PORT` with a DNS name (the rule for `grpc.advertise` and for the addresses an
/// operator adds members with).
pub fn peer_address(addr: &str) -> Result<(), String> {
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("{addr:?} is not HOST:PORT"));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("{addr:?}: {port:?} is not a port (1-65535)")),
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!(
            "{addr:?}: {host:?} is not an IP address or a DNS name"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        for ok in [
            "http://127.0.0.1:8080",
            "https://cas.example.com",
            "https://cas.example.com/",
            "https://cas.example.com:443/api",
            "http://[::1]:8080",
        ] {
            assert_eq!(base_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "cas.example.com",
            "ftp://x",
            "http://",
            "http://:80",
            "http://h:port",
            "http://u:p@h",
            "http://h/?q",
            "http://h /",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bucket_names() {
        for ok in ["cas", "my-bucket.1", "a".repeat(63).as_str()] {
            assert_eq!(bucket_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "ab",
            "Cas",
            "-cas",
            "cas-",
            "c_as",
            "a..b",
            "a".repeat(64).as_str(),
        ] {
            assert!(bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_prefixes() {
        for ok in ["", "cas/", "prod/cas/"] {
            assert_eq!(crate::store::validate_prefix(ok), Ok(()), "{ok}");
        }
        for bad in ["/cas/", "cas", "a//b/", "a b/", "a/../", "./"] {
            assert!(crate::store::validate_prefix(bad).is_err(), "{bad}");
        }
    }
}
