//! `cas-node admin`: the operator's commands against a running cluster, over the
//! `cas.admin.v1.Admin` gRPC API of any node. Membership changes go to the leader:
//! the command asks the given node who leads and sends the change there (once more
//! if the leadership moved meanwhile).

use std::time::Duration;

use anyhow::{Context as _, bail};
use cas_proto::admin as pb;
use cas_proto::admin::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

/// Where the cluster is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminTarget {
    /// gRPC address of any node: grpc://host:port (or host:port).
    #[arg(long, env = "CAS_ADMIN_ENDPOINT", value_name = "URL")]
    pub endpoint: String,
    /// An admin-scope token (`cas-node token issue --scope admin ...`); prefer the
    /// environment variable, which other users cannot see in the process list.
    #[arg(
        long,
        env = "CAS_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: String,
    /// Print the cluster status as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// An operator command.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Members, roles, regions, leader and replication lag.
    Status,
    /// Cluster members.
    #[command(subcommand)]
    Node(NodeCommand),
    /// The leadership.
    #[command(subcommand)]
    Leader(LeaderCommand),
    /// Snapshot the index of the node at --endpoint now and drop the log entries the
    /// snapshot covers (followers that lack them catch up from the snapshot).
    Compact,
}

/// Membership changes.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum NodeCommand {
    /// Add a running node (started with cluster.bootstrap = false): it joins as a
    /// learner, catches up, and becomes a voter if the placement policy wants one.
    Add {
        /// Its node id (node.id in its configuration).
        #[arg(long)]
        id: u64,
        /// Its gRPC address as the other nodes reach it (its grpc.advertise), HOST:PORT.
        #[arg(long)]
        addr: String,
        /// Its region.
        #[arg(long)]
        region: String,
    },
    /// Remove a node: it stops voting, leaves the group and is told to stop.
    Remove {
        /// Its node id.
        #[arg(long)]
        id: u64,
    },
}

/// Leadership changes.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LeaderCommand {
    /// Hand the leadership to a voter.
    Transfer {
        /// The voter to lead.
        #[arg(long)]
        to: u64,
    },
}

/// How long one admin call may take (adding a node waits for it to catch up).
const CALL_TIMEOUT: Duration = Duration::from_secs(600);

fn channel_url(endpoint: &str) -> String {
    let rest = endpoint
        .strip_prefix("grpc://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint);
    format!("http://{}", rest.trim_end_matches('/'))
}

async fn connect(endpoint: &str) -> anyhow::Result<AdminClient<Channel>> {
    let channel = Endpoint::from_shared(channel_url(endpoint))
        .with_context(|| format!("bad endpoint {endpoint:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    Ok(AdminClient::new(channel))
}

fn request<T>(token: &str, msg: T) -> anyhow::Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim())
            .parse()
            .context("the token has invalid characters")?,
    );
    Ok(req)
}

/// A refused call, with the server's stable code.
fn refused(endpoint: &str, s: &tonic::Status) -> anyhow::Error {
    let code = s
        .metadata()
        .get("x-cas-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    anyhow::anyhow!("{endpoint}: {:?} {code}: {}", s.code(), s.message())
}

/// Runs an admin command and prints its outcome.
pub async fn run(target: AdminTarget, command: AdminCommand) -> anyhow::Result<()> {
    let status = match command {
        AdminCommand::Status => status(&target).await?,
        AdminCommand::Compact => return compact(&target).await,
        AdminCommand::Node(NodeCommand::Add { id, addr, region }) => {
            on_leader(&target, |mut c, token| {
                let msg = pb::AddNodeRequest {
                    id,
                    addr: addr.clone(),
                    region: region.clone(),
                };
                async move { c.add_node(request(&token, msg)?).await.map_err(Into::into) }
            })
            .await?
        }
        AdminCommand::Node(NodeCommand::Remove { id }) => {
            on_leader(&target, |mut c, token| async move {
                c.remove_node(request(&token, pb::RemoveNodeRequest { id })?)
                    .await
                    .map_err(Into::into)
            })
            .await?
        }
        AdminCommand::Leader(LeaderCommand::Transfer { to }) => {
            on_leader(&target, |mut c, token| async move {
                c.transfer_leader(request(&token, pb::TransferLeaderRequest { to })?)
                    .await
                    .map_err(Into::into)
            })
            .await?
        }
    };
    print_status(&status, target.json)
}

/// Compacts the index of the node at the endpoint and prints what it did.
async fn compact(target: &AdminTarget) -> anyhow::Result<()> {
    let mut c = connect(&target.endpoint).await?;
    let r = c
        .compact(request(&target.token, pb::CompactRequest {})?)
        .await
        .map_err(|s| refused(&target.endpoint, &s))?
        .into_inner();
    if target.json {
        let out = serde_json::json!({
            "snapshot_index": r.snapshot_index,
            "purged_index": r.purged_index,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "snapshot at log index {}; log removed up to {}",
            r.snapshot_index,
            r.purged_index.map_or("-".into(), |i| i.to_string())
        );
    }
    Ok(())
}

/// The status from the given node, with lag figures from the leader when it is
/// reachable.
async fn status(target: &AdminTarget) -> anyhow::Result<pb::ClusterStatus> {
    let mut c = connect(&target.endpoint).await?;
    let here = c
        .status(request(&target.token, pb::StatusRequest {})?)
        .await
        .map_err(|s| refused(&target.endpoint, &s))?
        .into_inner();
    if here.role == "Leader" || here.leader_addr.is_empty() {
        return Ok(here);
    }
    let from_leader = async {
        let mut l = connect(&here.leader_addr).await?;
        let s = l
            .status(request(&target.token, pb::StatusRequest {})?)
            .await
            .map_err(|s| refused(&here.leader_addr, &s))?;
        anyhow::Ok(s.into_inner())
    };
    Ok(from_leader.await.unwrap_or(here))
}

/// An error that says the call reached a node that does not lead.
enum Outcome {
    Done(pb::ClusterStatus),
    NotLeader,
}

/// Runs a change on the leader (found through the given node), once more if the
/// leadership moved meanwhile.
async fn on_leader<F, Fut>(target: &AdminTarget, call: F) -> anyhow::Result<pb::ClusterStatus>
where
    F: Fn(AdminClient<Channel>, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<tonic::Response<pb::ClusterStatus>>>,
{
    for _ in 0..3 {
        let s = status(target).await?;
        if s.leader_addr.is_empty() {
            bail!("the cluster has no leader right now; try again shortly");
        }
        let leader = s.leader_addr.clone();
        let client = connect(&leader).await?;
        let outcome = match call(client, target.token.clone()).await {
            Ok(resp) => Outcome::Done(resp.into_inner()),
            Err(e) => match e.downcast_ref::<tonic::Status>() {
                Some(st)
                    if st
                        .metadata()
                        .get("x-cas-error-code")
                        .is_some_and(|v| v == "index_not_leader") =>
                {
                    Outcome::NotLeader
                }
                Some(st) => return Err(refused(&leader, st)),
                None => return Err(e),
            },
        };
        match outcome {
            Outcome::Done(status) => return Ok(status),
            Outcome::NotLeader => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    bail!("the leadership kept moving; try again")
}

fn print_status(s: &pb::ClusterStatus, json: bool) -> anyhow::Result<()> {
    if json {
        let members: Vec<serde_json::Value> = s
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id,
                    "addr": m.addr,
                    "region": m.region,
                    "role": if m.voter { "voter" } else { "learner" },
                    "leader": m.leader,
                    "lag": m.lag,
                })
            })
            .collect();
        let out = serde_json::json!({
            "answered_by": s.node_id,
            "role": s.role,
            "leader": s.leader_id,
            "leader_addr": s.leader_addr,
            "term": s.term,
            "last_log_index": s.last_log_index,
            "last_applied": s.last_applied,
            "snapshot_index": s.snapshot_index,
            "purged_index": s.purged_index,
            "members": members,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "leader: {}   term: {}   answered by node {} ({}), last log {} applied {}",
        s.leader_id
            .map(|l| format!("node {l} at {}", s.leader_addr))
            .unwrap_or_else(|| "none".into()),
        s.term,
        s.node_id,
        s.role,
        s.last_log_index.map_or("-".into(), |i| i.to_string()),
        s.last_applied.map_or("-".into(), |i| i.to_string()),
    );
    println!(
        "{:>4}  {:<22} {:<15} {:<8} {:>6}",
        "id", "address", "region", "role", "lag"
    );
    for m in &s.members {
        let role = match (m.leader, m.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        println!(
            "{:>4}  {:<22} {:<15} {:<8} {:>6}",
            m.id,
            m.addr,
            m.region,
            role,
            m.lag.map_or("-".into(), |l| l.to_string())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_grpc_and_bare_forms() {
        assert_eq!(channel_url("grpc://127.0.0.1:5/"), "http://127.0.0.1:5");
        assert_eq!(channel_url("127.0.0.1:5"), "http://127.0.0.1:5");
        assert_eq!(channel_url("http://h:5"), "http://h:5");
    }
}
