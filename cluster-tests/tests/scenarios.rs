//! Fault scenarios on a real three-region cluster (node processes, embedded S3
//! server, simulated inter-region latency), each with uploads through every region
//! running throughout and a check at the end that every acknowledged upload reads
//! back byte-identical from every node.

use std::time::Duration;

use cas_cluster_tests::{TestCluster, Workload, check, wait_status};
use cas_node::config::Region;
use cas_node::local_cluster::S3Fault;

/// Lets the workload run for a while.
async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

fn all_nodes(tc: &TestCluster) -> Vec<u64> {
    tc.cluster.nodes().keys().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_9_under_load() {
    let mut tc = TestCluster::start("us-east-1=2,eu-west-3=2,ap-southeast-1=1").await;
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
async fn rolling_restart_of_every_node_under_load() {
    let mut tc = TestCluster::start("us-east-1=2,eu-west-3=2,ap-southeast-1=1").await;
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
    let mut tc = TestCluster::start("us-east-1=2,eu-west-3=2,ap-southeast-1=1").await;
    tc.keep_logs_on_panic();
    let first = all_nodes(&tc);
    // The uploads go through the nodes that stay.
    let stay: Vec<u64> = vec![first[0], first[2], first[4]];
    let load = Workload::start(&tc, &stay, 2);
    run_for(Duration::from_secs(1)).await;
    let mut added = Vec::new();
    for region in [Region::UsEast1, Region::EuWest3, Region::ApSoutheast1] {
        added.push(tc.cluster.add_node(region).await.unwrap());
    }
    for id in [first[1], first[3]] {
        tc.cluster.remove_node(id).await.unwrap();
    }
    let s = wait_status(&tc, "the new membership", Duration::from_secs(30), |s| {
        s.role == "Leader" && s.members.len() == 6
    })
    .await;
    // 2 + 2 + 2 members: the policy keeps 5 voters, at most 2 per region.
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
    let mut tc = TestCluster::start("us-east-1=2,eu-west-3=2,ap-southeast-1=1").await;
    tc.keep_logs_on_panic();
    let nodes = all_nodes(&tc);
    let ap = *nodes.last().unwrap();
    assert_eq!(tc.cluster.node(ap).unwrap().region, Region::ApSoutheast1);
    // The leader stays out of the region that will be cut off.
    if tc.cluster.leader(Duration::from_secs(10)).await.unwrap() == ap {
        tc.cluster.stop(ap).unwrap();
        tc.cluster.restart(ap).await.unwrap();
    }

    // Files committed through the minority region before the cut.
    let before = Workload::start(&tc, &[ap], 1);
    run_for(Duration::from_secs(2)).await;
    let before = before.finish().await;
    assert!(!before.acked.is_empty());

    let majority: Vec<u64> = nodes.iter().copied().filter(|id| *id != ap).collect();
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
    let mut tc = TestCluster::start("us-east-1=2,eu-west-3=2,ap-southeast-1=1").await;
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
