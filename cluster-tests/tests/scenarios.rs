//! Fault scenarios on a real three-region cluster (node processes, embedded S3
//! server, simulated inter-region latency), each with uploads through every region
//! running throughout and a check at the end that every acknowledged upload reads
//! back byte-identical from every node.

use std::time::Duration;

use cas_cluster_tests::history::{self, History};
use cas_cluster_tests::{
    HistoryWorkload, TestCluster, Workload, check, scenario_layout, wait_status,
};
use cas_node::config::Region;
use cas_node::local_cluster::{ClusterNetwork, S3Fault};

/// Lets the workload run for a while.
async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

fn all_nodes(tc: &TestCluster) -> Vec<u64> {
    tc.cluster.nodes().keys().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_9_under_load() {
    let mut tc = TestCluster::start(&scenario_layout()).await;
    tc.keep_logs_on_panic();
    let nodes = all_nodes(&tc);
    let load = Workload::start(&tc, &nodes, 3);
    run_for(Duration::from_secs(3)).await;

    let leader = tc.cluster.leader(Duration::from_secs(10)).await.unwrap();
    tc.cluster.kill9(leader).unwrap();
    let s = wait_status(&tc, "a new leader", Duration::from_secs(20), |s| {
        s.role == "Leader" && s.node_id != leader
    })
    .await;
    run_for(Duration::from_secs(3)).await;
    tc.cluster.restart(leader).await.unwrap();
    run_for(Duration::from_secs(2)).await;
    let report = load.finish().await;
    eprintln!(
        "leader {leader} killed, node {} took over; {} uploads acknowledged, {} failed",
        s.node_id,
        report.acked.len(),
        report.failed
    );
    check(&tc, &report.acked, &nodes).await;
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_stopped_and_resumed_on_its_data() {
    if cas_cluster_tests::scenario_network() != ClusterNetwork::Loopback {
        eprintln!("skipped: namespaces do not outlive a cluster run, so it cannot resume");
        return;
    }
    let mut tc = TestCluster::start(&scenario_layout()).await;
    tc.keep_logs_on_panic();
    let nodes = all_nodes(&tc);
    let load = Workload::start(&tc, &nodes, 2);
    run_for(Duration::from_secs(3)).await;
    let before = load.finish().await;
    let status = tc.cluster.status().await.unwrap();

    tc.stop_and_resume().await;
    let after = tc.cluster.status().await.unwrap();
    let ids = |s: &cas_node::local_cluster::ClusterStatus| {
        let mut v: Vec<(u64, bool)> = s.members.iter().map(|m| (m.id, m.voter)).collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(&after),
        ids(&status),
        "members and voters after resuming"
    );
    check(&tc, &before.acked, &nodes).await;
    // And it takes writes again.
    let load = Workload::start(&tc, &nodes, 2);
    run_for(Duration::from_secs(2)).await;
    let again = load.finish().await;
    eprintln!(
        "resumed: {} files written before the stop read back from {} nodes; {} written after",
        before.acked.len(),
        nodes.len(),
        again.acked.len()
    );
    check(&tc, &again.acked, &nodes[..1]).await;
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_every_node_under_load() {
    let mut tc = TestCluster::start(&scenario_layout()).await;
    tc.keep_logs_on_panic();
    let nodes = all_nodes(&tc);
    let load = Workload::start(&tc, &nodes, 2);
    for id in &nodes {
        run_for(Duration::from_millis(800)).await;
        tc.cluster.stop(*id).unwrap();
        tc.cluster.restart(*id).await.unwrap();
        wait_status(
            &tc,
            "a leader after the restart",
            Duration::from_secs(20),
            |s| s.role == "Leader",
        )
        .await;
    }
    run_for(Duration::from_secs(1)).await;
    let report = load.finish().await;
    eprintln!(
        "rolling restart: {} uploads acknowledged, {} failed",
        report.acked.len(),
        report.failed
    );
    check(&tc, &report.acked, &nodes).await;
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_added_and_removed_in_every_region_under_load() {
    let mut tc = TestCluster::start(&scenario_layout()).await;
    tc.keep_logs_on_panic();
    let first = all_nodes(&tc);
    let (us, eu, ap) = (
        tc.nodes_in(Region::UsEast1),
        tc.nodes_in(Region::EuWest3),
        tc.nodes_in(Region::ApSoutheast1),
    );
    // The uploads go through the nodes that stay: the first of each region.
    let stay: Vec<u64> = vec![us[0], eu[0], ap[0]];
    // One more node in each region, then one fewer in the two larger ones.
    let leaving = [us[1], eu[1]];
    let load = Workload::start(&tc, &stay, 2);
    run_for(Duration::from_secs(1)).await;
    let mut added = Vec::new();
    for region in [Region::UsEast1, Region::EuWest3, Region::ApSoutheast1] {
        added.push(tc.cluster.add_node(region).await.unwrap());
    }
    for id in leaving {
        tc.cluster.remove_node(id).await.unwrap();
    }
    let members = first.len() + 3 - 2;
    let s = wait_status(&tc, "the new membership", Duration::from_secs(30), |s| {
        s.role == "Leader" && s.members.len() == members
    })
    .await;
    // At least 2 + 2 + 2 members: the policy keeps 5 voters, at most 2 per region.
    let voters: Vec<_> = s.members.iter().filter(|m| m.voter).collect();
    assert_eq!(voters.len(), 5, "{s:?}");
    for r in ["us-east-1", "eu-west-3", "ap-southeast-1"] {
        let n = voters.iter().filter(|m| m.region == r).count();
        assert!((1..=2).contains(&n), "{r}: {n} voters in {s:?}");
    }
    run_for(Duration::from_secs(1)).await;
    let report = load.finish().await;
    eprintln!(
        "membership changes: {} uploads acknowledged, {} failed",
        report.acked.len(),
        report.failed
    );
    let readers: Vec<u64> = stay.iter().chain(&added).copied().collect();
    check(&tc, &report.acked, &readers).await;
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_region_partitioned_away_and_healed() {
    let mut tc = TestCluster::start(&scenario_layout()).await;
    tc.keep_logs_on_panic();
    let nodes = all_nodes(&tc);
    let ap_nodes = tc.nodes_in(Region::ApSoutheast1);
    let ap = ap_nodes[0];
    // The leader stays out of the region that will be cut off.
    let leader = tc.cluster.leader(Duration::from_secs(10)).await.unwrap();
    if ap_nodes.contains(&leader) {
        tc.cluster.stop(leader).unwrap();
        tc.cluster.restart(leader).await.unwrap();
    }

    // Files committed through the minority region before the cut.
    let before = Workload::start(&tc, &[ap], 1);
    run_for(Duration::from_secs(2)).await;
    let before = before.finish().await;
    assert!(!before.acked.is_empty());

    let majority: Vec<u64> = nodes
        .iter()
        .copied()
        .filter(|id| !ap_nodes.contains(id))
        .collect();
    let load = Workload::start(&tc, &majority, 2);
    tc.cluster.isolate(&[Region::ApSoutheast1]).unwrap();
    run_for(Duration::from_secs(1)).await;

    // The minority region still serves reads of what it had committed...
    check(&tc, &before.acked, &[ap]).await;
    // ...but takes no write: it cannot reach a quorum.
    let cut_off = Workload::start(&tc, &[ap], 1);
    run_for(Duration::from_secs(12)).await;
    let cut_off = cut_off.finish().await;
    assert!(
        cut_off.acked.is_empty(),
        "{} uploads were acknowledged by a region cut off from the quorum",
        cut_off.acked.len()
    );
    assert!(cut_off.failed > 0);

    tc.cluster.isolate(&[]).unwrap();
    run_for(Duration::from_secs(3)).await;
    let report = load.finish().await;
    eprintln!(
        "partition: {} acknowledged by the majority during the cut, {} failed; {} refused by the minority",
        report.acked.len(),
        report.failed,
        cut_off.failed
    );
    let all: Vec<_> = before.acked.iter().chain(&report.acked).cloned().collect();
    check(&tc, &all, &nodes).await;
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_and_timeouts_for_a_while() {
    let mut tc = TestCluster::start(&scenario_layout()).await;
    tc.keep_logs_on_panic();
    let nodes = all_nodes(&tc);
    let load = Workload::start(&tc, &nodes, 2);
    run_for(Duration::from_secs(2)).await;
    tc.cluster.set_s3_fault(S3Fault::Unavailable).unwrap();
    run_for(Duration::from_secs(3)).await;
    tc.cluster.set_s3_fault(S3Fault::None).unwrap();
    run_for(Duration::from_secs(2)).await;
    tc.cluster.set_s3_fault(S3Fault::Hang).unwrap();
    run_for(Duration::from_secs(5)).await;
    tc.cluster.set_s3_fault(S3Fault::None).unwrap();
    run_for(Duration::from_secs(2)).await;
    let report = load.finish().await;
    eprintln!(
        "S3 faults: {} uploads acknowledged, {} failed",
        report.acked.len(),
        report.failed
    );
    assert!(report.failed > 0, "the S3 faults were not felt");
    check(&tc, &report.acked, &nodes).await;
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_restarted_mid_snapshot_under_load() {
    let mut tc = TestCluster::start(&scenario_layout()).await;
    tc.keep_logs_on_panic();
    let nodes = all_nodes(&tc);
    let leader = tc.cluster.leader(Duration::from_secs(10)).await.unwrap();
    let follower = *nodes.iter().rev().find(|id| **id != leader).unwrap();
    let others: Vec<u64> = nodes.iter().copied().filter(|id| *id != follower).collect();
    let load = Workload::start(&tc, &others, 2);
    run_for(Duration::from_secs(1)).await;

    // The follower misses entries, and the leader drops them from its log: the
    // follower can only catch up from a snapshot.
    tc.cluster.stop(follower).unwrap();
    run_for(Duration::from_secs(3)).await;
    let leader = tc.cluster.leader(Duration::from_secs(10)).await.unwrap();
    let snapshot = tc.cluster.compact(leader).await.unwrap();
    wait_status(
        &tc,
        "the leader's log compacted",
        Duration::from_secs(30),
        |s| s.node_id == leader && s.purged_index.is_some_and(|p| p >= snapshot),
    )
    .await;

    // Snapshot transfers now stay open after their last byte: the follower is
    // killed while it receives one.
    tc.cluster.stall_snapshots(Duration::from_secs(20)).unwrap();
    run_for(Duration::from_millis(300)).await;
    tc.cluster.restart(follower).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tc.cluster.snapshots_being_received(follower) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "node {follower} was sent no snapshot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tc.cluster.kill9(follower).unwrap();
    tc.cluster.stall_snapshots(Duration::ZERO).unwrap();
    run_for(Duration::from_millis(300)).await;

    // Back again: the partial snapshot is discarded and a whole one installed.
    tc.cluster.restart(follower).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let caught_up = loop {
        if let Ok(s) = tc.cluster.node_status(follower).await
            && s.snapshot_index.is_some_and(|i| i >= snapshot)
            && s.last_applied.is_some_and(|i| i >= snapshot)
        {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {follower} did not install the snapshot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    run_for(Duration::from_secs(2)).await;
    let report = load.finish().await;
    eprintln!(
        "node {follower} killed while receiving the snapshot at index {snapshot}, then caught up \
         (snapshot {:?}, applied {:?}); {} uploads acknowledged, {} failed",
        caught_up.snapshot_index,
        caught_up.last_applied,
        report.acked.len(),
        report.failed
    );
    check(&tc, &report.acked, &nodes).await;
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_history_is_linearizable_through_a_leader_kill() {
    let mut tc = TestCluster::start(&scenario_layout()).await;
    tc.keep_logs_on_panic();
    let nodes = all_nodes(&tc);
    let history = std::sync::Arc::new(History::new());
    let run = HistoryWorkload::start(&tc, &nodes, &nodes, history.clone());
    run_for(Duration::from_secs(4)).await;
    let leader = tc.cluster.leader(Duration::from_secs(10)).await.unwrap();
    tc.cluster.kill9(leader).unwrap();
    wait_status(&tc, "a new leader", Duration::from_secs(20), |s| {
        s.role == "Leader" && s.node_id != leader
    })
    .await;
    run_for(Duration::from_secs(3)).await;
    tc.cluster.restart(leader).await.unwrap();
    run_for(Duration::from_secs(3)).await;
    run.finish().await;

    let ops = history.ops();
    let summary = history::check(&ops).unwrap_or_else(|v| panic!("not linearizable: {v}"));
    eprintln!(
        "history of {} operations, leader {leader} killed: {summary:?}",
        ops.len()
    );
    assert!(summary.acked_writes > 0, "{summary:?}");
    assert!(summary.present_reads > 0, "{summary:?}");
    assert!(summary.absent_reads > 0, "{summary:?}");
    assert!(summary.present_queries > 0, "{summary:?}");
    tc.shutdown().await;
}

/// The admin API over gRPC with `token`, to node `id`.
fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

fn stable_code(s: &tonic::Status) -> &str {
    s.metadata()
        .get("x-cas-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Runs `cas-node admin ARGS` against node `id` and returns its output.
fn admin_cli(tc: &TestCluster, id: u64, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(cas_cluster_tests::node_exe())
        .arg("admin")
        .args(args)
        .env(
            "CAS_ADMIN_ENDPOINT",
            tc.cluster.node(id).unwrap().grpc_url(),
        )
        .env("CAS_ADMIN_TOKEN", token)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_refuses_bad_requests_and_points_to_the_leader() {
    use cas_node::auth::Scope;
    use cas_proto::admin as pb;
    let mut tc = TestCluster::start("us-east-1=2,eu-west-3=1").await;
    tc.keep_logs_on_panic();
    let admin = tc.cluster.token(&[Scope::Admin]).unwrap();
    let write = tc.token.clone();
    let leader = tc.cluster.leader(Duration::from_secs(10)).await.unwrap();
    let follower = *all_nodes(&tc).iter().find(|id| **id != leader).unwrap();
    let leader_addr = tc
        .cluster
        .node(leader)
        .unwrap()
        .grpc_url()
        .replace("grpc://", "");

    // Membership changes on a follower: refused, with the leader's address.
    let mut c = tc.cluster.admin_client(follower).await.unwrap();
    let add = |id: u64, addr: &str, region: &str| pb::AddNodeRequest {
        id,
        addr: addr.into(),
        region: region.into(),
    };
    let s = c
        .add_node(with_token(add(9, "127.0.0.1:1", "eu-west-3"), &admin))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
    assert_eq!(stable_code(&s), "index_not_leader", "{s:?}");
    assert_eq!(
        s.metadata()
            .get("x-cas-leader")
            .and_then(|v| v.to_str().ok()),
        Some(leader_addr.as_str())
    );
    let s = c
        .remove_node(with_token(pb::RemoveNodeRequest { id: leader }, &admin))
        .await
        .unwrap_err();
    assert_eq!(stable_code(&s), "index_not_leader", "{s:?}");

    // Tokens: none, or a write token, are refused before anything is looked at.
    let s = c
        .status(tonic::Request::new(pb::StatusRequest {}))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    let s = c
        .status(with_token(pb::StatusRequest {}, &write))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");

    // Bad membership changes on the leader: refused with a stable code, nothing changed.
    let before = tc.cluster.status().await.unwrap();
    let mut c = tc.cluster.admin_client(leader).await.unwrap();
    for (req, what) in [
        (add(0, "127.0.0.1:1", "eu-west-3"), "id 0"),
        (add(9, "not an address", "eu-west-3"), "address"),
        (add(9, "127.0.0.1:1", "mars-1"), "region"),
    ] {
        let s = c.add_node(with_token(req, &admin)).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{what}: {s:?}");
        assert_eq!(
            stable_code(&s),
            "invalid_membership_change",
            "{what}: {s:?}"
        );
    }
    let s = c
        .add_node(with_token(add(leader, "127.0.0.1:1", "eu-west-3"), &admin))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
    assert_eq!(stable_code(&s), "invalid_membership_change", "{s:?}");
    for (id, what) in [(99, "an unknown node"), (leader, "the leader itself")] {
        let s = c
            .remove_node(with_token(pb::RemoveNodeRequest { id }, &admin))
            .await
            .unwrap_err();
        assert_eq!(
            stable_code(&s),
            "invalid_membership_change",
            "{what}: {s:?}"
        );
    }
    let s = c
        .transfer_leader(with_token(pb::TransferLeaderRequest { to: 99 }, &admin))
        .await
        .unwrap_err();
    assert_eq!(stable_code(&s), "invalid_membership_change", "{s:?}");
    let after = tc.cluster.status().await.unwrap();
    assert_eq!(before.members, after.members);

    // The CLI: status from a follower names the leader; compaction reports its index.
    let out = admin_cli(&tc, follower, &admin, &["--json", "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["leader"], leader);
    assert_eq!(json["members"].as_array().unwrap().len(), 3);
    let out = admin_cli(&tc, leader, &admin, &["compact"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("snapshot at log index "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = admin_cli(&tc, leader, &write, &["status"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_returns_to_a_region_near_a_quorum() {
    use cas_node::auth::Scope;
    use cas_proto::admin as pb;
    let mut tc = TestCluster::start(&scenario_layout()).await;
    tc.keep_logs_on_panic();
    let admin = tc.cluster.token(&[Scope::Admin]).unwrap();
    let ap_voter = wait_status(&tc, "a leader", Duration::from_secs(10), |s| {
        s.role == "Leader"
    })
    .await
    .members
    .iter()
    .find(|m| m.voter && m.region == "ap-southeast-1")
    .map(|m| m.id)
    .expect("a voter in ap-southeast-1");
    // The operator hands the leadership to the far region (as a failover may)...
    let leader = tc.cluster.leader(Duration::from_secs(10)).await.unwrap();
    let mut c = tc.cluster.admin_client(leader).await.unwrap();
    c.transfer_leader(with_token(
        pb::TransferLeaderRequest { to: ap_voter },
        &admin,
    ))
    .await
    .unwrap();
    assert_eq!(
        tc.cluster.leader(Duration::from_secs(10)).await.unwrap(),
        ap_voter
    );
    // ...and the leader hands it back to a region whose quorum is nearer.
    let s = wait_status(
        &tc,
        "a leader near a quorum",
        Duration::from_secs(30),
        |s| s.role == "Leader" && s.node_id != ap_voter,
    )
    .await;
    let region = &tc.cluster.node(s.node_id).unwrap().region;
    assert_ne!(*region, Region::ApSoutheast1);
    tc.shutdown().await;
}
