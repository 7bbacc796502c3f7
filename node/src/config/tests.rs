use super::*;
use std::io::Write as _;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A complete file: every section and field.
const FULL: &str = r#"
[node]
id = 7
region = "eu-west-3"
data_dir = "/var/lib/cas-node"

[http]
listen = "0.0.0.0:8080"
public_url = "https://eu.cas.example.com/"

[grpc]
listen = "0.0.0.0:50051"
advertise = "cas-eu-1.internal:50051"

[s3]
endpoint = "http://127.0.0.1:9000"
region = "eu-west-3"
bucket = "cas-prod"
access_key_id = "AKIAEXAMPLE"
secret_access_key = "s3-secret-value"
key_prefix = "cas/"
force_path_style = true
request_timeout = "45s"
max_retries = 5
presign_ttl = "2h"

[auth]
token_secret = "0123456789abcdef0123456789abcdef"
max_token_ttl = "7d"

[limits]
max_xorb_upload_bytes = 70000000
max_shard_upload_bytes = 1048576

[telemetry]
log_filter = "info,cas_node=debug"
log_format = "json"
metrics_listen = "0.0.0.0:9100"
"#;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn with_secret(toml: &str) -> String {
    format!("{toml}\n[auth]\ntoken_secret = \"{SECRET}\"\n")
}

/// Parses and expects failure; returns the whole message.
fn refused(toml: &str, vars: &[(&str, &str)]) -> String {
    match NodeConfig::parse(toml, env(vars), Mode::Serve) {
        Ok(config) => panic!("accepted: {toml}\n{config:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_are_valid_with_a_secret_and_in_demo_mode() {
    let config = NodeConfig::default()
        .validated(Mode::Demo)
        .expect("defaults valid in demo");
    assert_eq!(config.node.id, 1);
    assert_eq!(config.node.region, Region::UsEast1);
    assert_eq!(config.http.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        config.http.public_url.as_deref(),
        Some("http://127.0.0.1:8080")
    );
    assert_eq!(config.grpc.listen, "127.0.0.1:50051".parse().unwrap());
    assert_eq!(config.s3.endpoint, None);
    assert_eq!(config.s3.bucket, "cas");
    assert_eq!(config.s3.max_retries, 3);
    assert_eq!(
        config.limits.max_xorb_upload_bytes,
        cas_core::constants::MAX_SERIALIZED_XORB_BYTES as u64
    );
    assert_eq!(
        config.limits.max_shard_upload_bytes,
        cas_core::constants::MAX_SHARD_BYTES as u64
    );
    assert_eq!(config.telemetry.log_format, LogFormat::Text);

    // An empty file is the defaults; outside demo mode only the secret is missing.
    let err = NodeConfig::parse("", no_env(), Mode::Serve).unwrap_err();
    let fields: Vec<&str> = err
        .field_errors()
        .iter()
        .map(|e| e.field.as_str())
        .collect();
    assert_eq!(fields, ["auth.token_secret"], "{err}");
    let config = NodeConfig::parse(&with_secret(""), no_env(), Mode::Serve).expect("valid");
    assert_eq!(config.auth.signing_secret().unwrap().expose(), SECRET);
}

#[test]
fn parses_every_field() {
    let c = NodeConfig::parse(FULL, no_env(), Mode::Serve).expect("valid");
    assert_eq!(c.node.id, 7);
    assert_eq!(c.node.region, Region::EuWest3);
    assert_eq!(c.node.data_dir, PathBuf::from("/var/lib/cas-node"));
    assert_eq!(c.http.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(
        c.http.public_url(),
        "https://eu.cas.example.com",
        "trailing slash removed"
    );
    assert_eq!(c.grpc.listen, "0.0.0.0:50051".parse().unwrap());
    assert_eq!(c.grpc.advertise.as_deref(), Some("cas-eu-1.internal:50051"));
    assert_eq!(
        c.grpc.advertised("10.0.0.7:50051".parse().unwrap()),
        "cas-eu-1.internal:50051"
    );
    assert_eq!(c.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(c.s3.region, "eu-west-3");
    assert_eq!(c.s3.bucket, "cas-prod");
    assert_eq!(c.s3.access_key_id.as_deref(), Some("AKIAEXAMPLE"));
    assert_eq!(
        c.s3.secret_access_key.as_ref().map(Secret::expose),
        Some("s3-secret-value")
    );
    assert_eq!(c.s3.key_prefix, "cas/");
    assert!(c.s3.force_path_style);
    assert_eq!(c.s3.request_timeout, Duration::from_secs(45));
    assert_eq!(c.s3.max_retries, 5);
    assert_eq!(c.s3.presign_ttl, Duration::from_secs(7_200));
    assert_eq!(c.auth.max_token_ttl, Duration::from_secs(7 * 86_400));
    assert_eq!(c.limits.max_xorb_upload_bytes, 70_000_000);
    assert_eq!(c.limits.max_shard_upload_bytes, 1_048_576);
    assert_eq!(c.telemetry.log_filter, "info,cas_node=debug");
    assert_eq!(c.telemetry.log_format, LogFormat::Json);
    assert_eq!(
        c.telemetry.metrics_listen,
        Some("0.0.0.0:9100".parse().unwrap())
    );
}

#[test]
fn redacted_toml_round_trips_except_secrets() {
    let c = NodeConfig::parse(FULL, no_env(), Mode::Serve).expect("valid");
    let text = c.to_redacted_toml().expect("serializes");
    assert!(
        !text.contains(SECRET) && !text.contains("s3-secret-value"),
        "{text}"
    );
    assert!(text.contains(REDACTED));
    // Everything but the secrets reads back to the same configuration.
    let mut back: NodeConfig = toml::from_str(&text).expect("reads back");
    back.auth.token_secret = c.auth.token_secret.clone();
    back.s3.secret_access_key = c.s3.secret_access_key.clone();
    assert_eq!(back, c);
}

#[test]
fn env_overrides_file_which_overrides_defaults() {
    let file = with_secret(
        "[s3]\nbucket = \"from-file\"\nregion = \"eu-west-3\"\nmax_retries = 5\nendpoint = \"http://file:9000\"\n",
    );
    let c = NodeConfig::parse(
        &file,
        env(&[
            ("CAS_NODE__S3__BUCKET", "from-env"),
            ("CAS_NODE__S3__MAX_RETRIES", "7"),
            ("CAS_NODE__S3__FORCE_PATH_STYLE", "true"),
            ("CAS_NODE__S3__ENDPOINT", ""),
            ("CAS_NODE__S3__ACCESS_KEY_ID", "12345"),
            ("CAS_NODE__S3__SECRET_ACCESS_KEY", "67890"),
            ("CAS_NODE__NODE__REGION", "ap-southeast-1"),
            ("CAS_NODE__HTTP__LISTEN", "127.0.0.1:9999"),
            ("CAS_NODE__AUTH__MAX_TOKEN_TTL", "1d"),
            ("CAS_NODE_S3__BUCKET", "ignored: single underscore"),
            ("OTHER", "ignored"),
        ]),
        Mode::Serve,
    )
    .expect("valid");
    assert_eq!(c.s3.bucket, "from-env", "env beats file");
    assert_eq!(c.s3.region, "eu-west-3", "file beats default");
    assert_eq!(c.s3.max_retries, 7, "integers are parsed");
    assert!(c.s3.force_path_style, "booleans are parsed");
    assert_eq!(c.s3.endpoint, None, "empty value restores the default");
    assert_eq!(
        c.s3.access_key_id.as_deref(),
        Some("12345"),
        "strings stay strings"
    );
    assert_eq!(c.node.region, Region::ApSoutheast1);
    assert_eq!(c.http.listen, "127.0.0.1:9999".parse().unwrap());
    assert_eq!(
        c.http.public_url(),
        "http://127.0.0.1:9999",
        "derived after overrides"
    );
    assert_eq!(c.auth.max_token_ttl, Duration::from_secs(86_400));
    assert_eq!(
        c.grpc.listen,
        GrpcConfig::default().listen,
        "untouched default"
    );

    // The secret can come from the environment alone.
    let c = NodeConfig::parse(
        "",
        env(&[("CAS_NODE__AUTH__TOKEN_SECRET", SECRET)]),
        Mode::Serve,
    )
    .expect("valid");
    assert_eq!(c.auth.signing_secret().unwrap().expose(), SECRET);
}

#[test]
fn load_reads_a_file_and_the_given_env() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(with_secret("[node]\nid = 3\n").as_bytes())
        .unwrap();
    let c = NodeConfig::load_with_env(
        Some(file.path()),
        env(&[("CAS_NODE__NODE__ID", "4")]),
        Mode::Serve,
    )
    .expect("valid");
    assert_eq!(c.node.id, 4);

    let missing = Path::new("/nonexistent/cas-node.toml");
    let err = NodeConfig::load_with_env(Some(missing), no_env(), Mode::Serve).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/cas-node.toml"),
        "{err}"
    );
}

#[test]
fn syntax_errors_give_the_position() {
    let err = refused("[s3\nbucket = 1", &[]);
    assert!(
        err.contains("not valid TOML") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn each_invalid_field_is_named() {
    let cases: &[(&str, &str, &str)] = &[
        ("[node]\nid = 0", "node.id", "at least 1"),
        ("[node]\nid = -1", "node.id", "invalid"),
        ("[node]\nid = \"one\"", "node.id", "invalid type"),
        (
            "[node]\nregion = \"mars-1\"",
            "node.region",
            "\"mars-1\" is not a region",
        ),
        (
            "[node]\ndata_dir = \"\"",
            "node.data_dir",
            "must not be empty",
        ),
        (
            "[http]\nlisten = \"abc\"",
            "http.listen",
            "\"abc\" is not a socket address",
        ),
        (
            "[http]\nlisten = \"localhost:80\"",
            "http.listen",
            "is not a socket address",
        ),
        (
            "[http]\npublic_url = \"cas.example.com\"",
            "http.public_url",
            "not an http",
        ),
        (
            "[http]\nlisten = \"0.0.0.0:8080\"",
            "http.public_url",
            "wildcard",
        ),
        (
            "[grpc]\nlisten = \"127.0.0.1:8080\"",
            "grpc.listen",
            "clashes with http.listen",
        ),
        (
            "[grpc]\nlisten = \"0.0.0.0:8080\"",
            "grpc.listen",
            "clashes with http.listen",
        ),
        (
            "[grpc]\nlisten = \"0.0.0.0:50051\"",
            "grpc.advertise",
            "must be set when grpc.listen is a wildcard",
        ),
        (
            "[grpc]\nadvertise = \"cas-1.internal\"",
            "grpc.advertise",
            "is not HOST:PORT",
        ),
        (
            "[grpc]\nadvertise = \"cas-1.internal:0\"",
            "grpc.advertise",
            "is not a port",
        ),
        (
            "[grpc]\nadvertise = \"bad_host!:50051\"",
            "grpc.advertise",
            "is not an IP address or a DNS name",
        ),
        (
            "[s3]\nendpoint = \"localhost:9000\"",
            "s3.endpoint",
            "not an http",
        ),
        ("[s3]\nregion = \"\"", "s3.region", "must not be empty"),
        (
            "[s3]\nregion = \"EU West\"",
            "s3.region",
            "not a region name",
        ),
        ("[s3]\nbucket = \"\"", "s3.bucket", "must not be empty"),
        (
            "[s3]\nbucket = \"My_Bucket\"",
            "s3.bucket",
            "not a valid bucket name",
        ),
        (
            "[s3]\naccess_key_id = \"AKIA\"",
            "s3.secret_access_key",
            "together with s3.access_key_id",
        ),
        (
            "[s3]\nsecret_access_key = \"x\"",
            "s3.access_key_id",
            "together with s3.secret_access_key",
        ),
        (
            "[s3]\nkey_prefix = \"/cas\"",
            "s3.key_prefix",
            "must not start with `/`",
        ),
        (
            "[s3]\nrequest_timeout = \"0s\"",
            "s3.request_timeout",
            "between 1s and 1h",
        ),
        (
            "[s3]\nrequest_timeout = 30",
            "s3.request_timeout",
            "has no unit",
        ),
        (
            "[s3]\nrequest_timeout = \"soon\"",
            "s3.request_timeout",
            "is not a duration",
        ),
        ("[s3]\nmax_retries = 11", "s3.max_retries", "at most 10"),
        (
            "[s3]\npresign_ttl = \"8d\"",
            "s3.presign_ttl",
            "between 1s and 7d",
        ),
        (
            "[s3]\nforce_path_style = \"yes\"",
            "s3.force_path_style",
            "invalid type",
        ),
        (
            "[auth]\ntoken_secret = \"short\"",
            "auth.token_secret",
            "at least 32 bytes",
        ),
        (
            "[auth]\ntoken_secret = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
            "auth.token_secret",
            "repetitive",
        ),
        (
            "[auth]\ntoken_secret_file = \"/nonexistent/secret\"",
            "auth.token_secret_file",
            "cannot read",
        ),
        (
            "[auth]\nmax_token_ttl = \"30s\"",
            "auth.max_token_ttl",
            "between 1m and 365d",
        ),
        (
            "[limits]\nmax_xorb_upload_bytes = 0",
            "limits.max_xorb_upload_bytes",
            "between 1 and",
        ),
        (
            "[limits]\nmax_shard_upload_bytes = 5000000000",
            "limits.max_shard_upload_bytes",
            "between 1 and",
        ),
        (
            "[telemetry]\nlog_filter = \"\"",
            "telemetry.log_filter",
            "must not be empty",
        ),
        (
            "[telemetry]\nlog_filter = \"cas=loud\"",
            "telemetry.log_filter",
            "not a valid log filter",
        ),
        (
            "[telemetry]\nlog_format = \"xml\"",
            "telemetry.log_format",
            "unknown variant `xml`",
        ),
        (
            "[telemetry]\nmetrics_listen = \"9100\"",
            "telemetry.metrics_listen",
            "is not a socket address",
        ),
        (
            "[telemetry]\nmetrics_listen = \"127.0.0.1:50051\"",
            "telemetry.metrics_listen",
            "clashes with grpc.listen",
        ),
    ];
    for (toml, field, fragment) in cases {
        let toml = if toml.starts_with("[auth]") {
            toml.to_string()
        } else {
            with_secret(toml)
        };
        let message = refused(&toml, &[]);
        let expected = format!("{field}: ");
        assert!(
            message.contains(&expected),
            "{toml}\n=> {message}\n(expected field {field})"
        );
        let line = message
            .lines()
            .find(|l| l.contains(&expected))
            .unwrap_or_default();
        assert!(
            line.contains(fragment),
            "{toml}\n=> {message}\n(expected {fragment:?})"
        );
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let err = NodeConfig::parse(
        "[node]\nid = 0\n[s3]\nbucket = \"\"\nmax_retries = 99\n",
        no_env(),
        Mode::Serve,
    )
    .unwrap_err();
    let fields: Vec<&str> = err
        .field_errors()
        .iter()
        .map(|e| e.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "node.id",
            "s3.bucket",
            "s3.max_retries",
            "auth.token_secret"
        ]
    );
}

#[test]
fn unknown_fields_and_sections_are_refused_by_name() {
    let message = refused(&with_secret("[s3]\nendpiont = \"http://x\""), &[]);
    assert!(message.contains("s3.endpiont: unknown field"), "{message}");
    assert!(
        message.contains("`endpoint`"),
        "lists the known fields: {message}"
    );

    let message = refused(&with_secret("[s4]\nbucket = \"x\""), &[]);
    assert!(message.contains("s4: unknown section"), "{message}");

    let message = refused(&with_secret("verbose = true"), &[]);
    assert!(message.contains("verbose: unknown section"), "{message}");

    let message = refused(&with_secret(""), &[("CAS_NODE__S3__BUCKIT", "x")]);
    assert!(
        message.contains("s3.buckit: unknown field") && message.contains("CAS_NODE__S3__BUCKIT"),
        "{message}"
    );

    let message = refused(&with_secret(""), &[("CAS_NODE__S4__BUCKET", "x")]);
    assert!(
        message.contains("CAS_NODE__S4__BUCKET") && message.contains("unknown section `s4`"),
        "{message}"
    );

    let message = refused(&with_secret(""), &[("CAS_NODE__S3", "x")]);
    assert!(
        message.contains("must name a section and a field"),
        "{message}"
    );
}

#[test]
fn env_errors_name_the_variable() {
    let message = refused(&with_secret(""), &[("CAS_NODE__S3__MAX_RETRIES", "many")]);
    assert!(
        message.contains("CAS_NODE__S3__MAX_RETRIES") && message.contains("not an integer"),
        "{message}"
    );
    let message = refused(&with_secret(""), &[("CAS_NODE__S3__BUCKET", "Bad_Bucket")]);
    assert!(
        message.contains("s3.bucket: ")
            && message.contains("(from environment variable CAS_NODE__S3__BUCKET)"),
        "{message}"
    );
    let message = refused(&with_secret(""), &[("CAS_NODE__HTTP__LISTEN", "abc")]);
    assert!(
        message.contains("http.listen: \"abc\" is not a socket address")
            && message.contains("CAS_NODE__HTTP__LISTEN"),
        "{message}"
    );
}

#[test]
fn secrets_are_redacted_in_debug() {
    let c = NodeConfig::parse(FULL, no_env(), Mode::Serve).expect("valid");
    for text in [
        format!("{c:?}"),
        format!("{c:#?}"),
        format!("{:?}", c.auth),
        format!("{:?}", c.s3),
    ] {
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("s3-secret-value"), "{text}");
        assert!(text.contains(REDACTED), "{text}");
    }
    let secret = Secret::new("hunter2hunter2");
    assert_eq!(format!("{secret:?}"), REDACTED);
    assert_eq!(format!("{secret}"), REDACTED);
}

#[test]
fn secret_file_is_read_and_trimmed() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "{SECRET}").unwrap();
    let toml = format!(
        "[auth]\ntoken_secret_file = {:?}\n",
        file.path().display().to_string()
    );
    let c = NodeConfig::parse(&toml, no_env(), Mode::Serve).expect("valid");
    assert_eq!(c.auth.signing_secret().unwrap().expose(), SECRET);

    let both = format!("{toml}token_secret = \"{SECRET}\"\n");
    let message = refused(&both, &[]);
    assert!(
        message.contains("auth.token_secret_file: conflicts with auth.token_secret"),
        "{message}"
    );

    let mut short = tempfile::NamedTempFile::new().unwrap();
    writeln!(short, "tooshort").unwrap();
    let toml = format!(
        "[auth]\ntoken_secret_file = {:?}\n",
        short.path().display().to_string()
    );
    let message = refused(&toml, &[]);
    assert!(
        message.contains("auth.token_secret_file: must be at least 32 bytes"),
        "{message}"
    );
}

#[test]
fn region_names() {
    for region in Region::ALL {
        assert_eq!(region.as_str().parse::<Region>(), Ok(region));
    }
    assert!("us-west-2".parse::<Region>().is_err());
}

#[test]
fn type_errors_in_several_sections_are_all_reported() {
    let err = NodeConfig::parse(
        "[http]\nlisten = \"abc\"\n[s3]\nmax_retries = \"x\"\n[telemetry]\nlog_format = \"xml\"\n",
        no_env(),
        Mode::Serve,
    )
    .unwrap_err();
    let fields: Vec<&str> = err
        .field_errors()
        .iter()
        .map(|e| e.field.as_str())
        .collect();
    assert_eq!(
        fields,
        ["http.listen", "s3.max_retries", "telemetry.log_format"],
        "{err}"
    );

    let err = NodeConfig::parse("s3 = 5\n", no_env(), Mode::Serve).unwrap_err();
    assert!(err.to_string().contains("s3: invalid type"), "{err}");
}
