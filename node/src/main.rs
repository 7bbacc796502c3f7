//! `cas-node`: the CAS node binary.
//!
//! Subcommands:
//! - `cas-node serve [--config FILE]` runs a node until SIGINT/SIGTERM;
//! - `cas-node demo [--state FILE] [--data-dir DIR]` runs a complete local node with its
//!   own embedded S3 server, writes `{"endpoints": {region: [url]}, "token": …}` to FILE
//!   once it serves, and stops everything on Ctrl-C;
//! - `cas-node token issue [--config FILE] --scope read|write|admin --subject NAME [--ttl 24h] [--json]`
//!   prints a signed bearer token (with `--json`: the token, its claims and its expiry);
//! - `cas-node admin --endpoint URL --token T status | node add | node remove | leader
//!   transfer` shows and changes the index group (membership, leadership);
//! - `cas-node config check [--config FILE]` prints the effective configuration (file plus
//!   `CAS_NODE__…` environment overrides) with secrets redacted, or exits non-zero with
//!   every refused setting named.

mod admin;
mod run;

/// jemalloc rather than the system allocator: a node receives and sends
/// megabytes per request, and glibc's malloc hands such buffers back to the
/// kernel when they are freed, so every new one costs page faults (a fifth of
/// the node's CPU time on xorb uploads); jemalloc keeps freed pages for reuse
/// and returns them gradually, and it fragments less in a long-running server.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context as _;
use cas_node::auth::{Scope, Tokens};
use cas_node::config::{Mode, NodeConfig, parse_duration};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The CAS node: Xet HTTP and gRPC APIs over a multi-region content-addressed store.
#[derive(Debug, Parser)]
#[command(name = "cas-node", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node with the given configuration until interrupted.
    Serve(ServeArgs),
    /// Run a complete local cluster until interrupted: by default 10 nodes in three
    /// regions (4/4/2) with an embedded S3 server; with --layout REGION=1, one node (an
    /// embedded S3 server unless the configuration names one: s3.endpoint, e.g.
    /// CAS_NODE__S3__ENDPOINT).
    Demo(DemoArgs),
    /// Bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The node configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Operator commands against a running cluster (status, membership, leadership).
    Admin {
        #[command(flatten)]
        target: admin::AdminTarget,
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a signed bearer token with the configured secret.
    Issue(IssueArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print it, secrets redacted.
    Check(ConfigArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Stop when standard input closes (for a supervising process: the node goes away
    /// with it).
    #[arg(long, hide = true)]
    exit_with_stdin: bool,
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// TOML configuration file (defaults and CAS_NODE__SECTION__FIELD variables apply).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Once serving, write the endpoints and a write-scoped token to FILE as JSON:
    /// {"endpoints": {"<region>": ["http://host:port"]}, "grpc_endpoints": {"<region>":
    /// ["grpc://host:port"]}, "token": "<token>"}.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Keep all data (objects, index, token secret) in DIR so a later run sees it;
    /// default: a temporary directory removed on exit.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the HTTP API (default: a free loopback port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    http_listen: std::net::SocketAddr,
    /// Address of the gRPC API (default: a free loopback port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    grpc_listen: std::net::SocketAddr,
    /// Nodes per region. One node runs in this process (with --http-listen and
    /// --grpc-listen); more run as child processes on free loopback ports, joined
    /// into one index group with the inter-region latency simulated.
    #[arg(
        long,
        value_name = "REGION=N,...",
        default_value = "us-east-1=4,eu-west-3=4,ap-southeast-1=2"
    )]
    layout: cas_node::local_cluster::Layout,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Args)]
struct IssueArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Scope to grant: read, write (implies read), admin (operator commands) or
    /// cluster (node-to-node calls); may be repeated.
    #[arg(long = "scope", required = true, value_name = "SCOPE", value_parser = parse_scope)]
    scopes: Vec<Scope>,
    /// Who the token is for (user, service or CI job).
    #[arg(long, value_name = "NAME")]
    subject: String,
    /// Lifetime, e.g. 30s, 15m, 24h, 7d (at most auth.max_token_ttl).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_ttl)]
    ttl: Duration,
    /// Print JSON: the token, its claims and its expiry (Hub token-endpoint field names).
    #[arg(long)]
    json: bool,
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    text.parse().map_err(|e| format!("{e}"))
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cas-node: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            runtime()?.block_on(run::serve(load(&args.config)?, args.exit_with_stdin))
        }
        Command::Demo(args) => runtime()?.block_on(run::demo(run::DemoOptions {
            config: NodeConfig::load(args.config.config.as_deref(), Mode::Demo)?,
            state: args.state,
            data_dir: args.data_dir,
            http_listen: args.http_listen,
            grpc_listen: args.grpc_listen,
            layout: args.layout,
        })),
        Command::Token(TokenCommand::Issue(args)) => issue(args),
        Command::Config(ConfigCommand::Check(args)) => check(args),
        Command::Admin { target, command } => runtime()?.block_on(admin::run(target, command)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load(args: &ConfigArgs) -> anyhow::Result<NodeConfig> {
    Ok(NodeConfig::load(args.config.as_deref(), Mode::Serve)?)
}

fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let config = load(&args.config)?;
    let tokens = Tokens::from_config(&config.auth)?;
    let issued = tokens
        .issue(&args.subject, args.scopes, args.ttl)
        .context("cannot issue token")?;
    if args.json {
        let claims = &issued.claims;
        let out = serde_json::json!({
            "accessToken": issued.token,
            "exp": claims.exp,
            "casUrl": config.http.public_url(),
            "subject": claims.sub,
            "scopes": claims.scope.iter().map(Scope::as_str).collect::<Vec<_>>(),
            "tokenId": claims.jti,
            "issuedAt": claims.iat,
            "expiresAt": rfc3339(claims.exp),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", issued.token);
    }
    Ok(())
}

fn check(args: ConfigArgs) -> anyhow::Result<()> {
    let config = load(&args)?;
    print!(
        "# effective cas-node configuration (secrets redacted)\n{}",
        config.to_redacted_toml()?
    );
    Ok(())
}

/// Unix seconds as an RFC 3339 UTC timestamp, e.g. `2026-08-22T10:00:00Z`.
fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
