//! Who is in the index group and who votes: the voter placement policy
//! ([`desired_voters`]) and the operator's membership changes on [`Index`] (add a
//! node, remove a node, rebalance voters, hand the leadership over), one at a time.
//!
//! # Placement policy
//!
//! Voters are spread so that losing any one region keeps a quorum: at most
//! [`VOTERS_PER_REGION`] voters in a region, fewer than half of all voters in any
//! one region, and an odd number in all. With the default 4/4/2 nodes that is
//! 2 + 2 + 1 voters; the other members are learners,
//! which replicate the index (for local reads) without slowing commits. With one
//! region only, up to three voters (one node may fail); with two regions a region
//! loss cannot be survived, and the policy still keeps the count odd.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};

use super::types::NodeInfo;
use super::{Index, IndexError, fatal};
use crate::config::Region;

/// Most voters the policy places in one region.
pub const VOTERS_PER_REGION: usize = 2;

/// Most voters with a single region.
pub const VOTERS_SINGLE_REGION: usize = 3;

/// How long adding a node may take (it catches up, possibly through a snapshot).
pub const ADD_NODE_TIMEOUT: Duration = Duration::from_secs(600);

/// How far behind the leader's log a learner may be and still be promoted.
pub const PROMOTION_LAG: u64 = 1_000;

/// The voters the policy wants among `members`, preferring the `leader`, then the
/// `current` voters, then the lowest ids within each region, so that a change moves as
/// few votes as possible and never demotes the node making it.
///
/// Every split of voters over the regions (at most [`VOTERS_PER_REGION`] each) is
/// considered; the valid ones have an odd count and, when three or more regions have
/// members, fewer than half of the voters in any one region. The best has the most
/// voters, then voters in the most regions, then voters in the largest regions.
pub fn desired_voters(
    members: &BTreeMap<u64, NodeInfo>,
    current: &BTreeSet<u64>,
    leader: Option<u64>,
) -> BTreeSet<u64> {
    // Each region's members, current voters first, then by id.
    let mut regions: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (id, node) in members {
        regions.entry(node.region.as_str()).or_default().push(*id);
    }
    for ids in regions.values_mut() {
        ids.sort_by_key(|id| (Some(*id) != leader, !current.contains(id), *id));
    }
    let regions: Vec<Vec<u64>> = regions.into_values().collect();
    if regions.len() == 1 {
        let ids = &regions[0];
        // The largest odd count up to three.
        let n = match ids.len().min(VOTERS_SINGLE_REGION) {
            0 => 0,
            n if n % 2 == 0 => n - 1,
            n => n,
        };
        return ids.iter().take(n).copied().collect();
    }
    let caps: Vec<usize> = regions
        .iter()
        .map(|ids| ids.len().min(VOTERS_PER_REGION))
        .collect();
    let tolerate_region_loss = regions.len() >= 3;
    let mut best: Option<((usize, usize, usize), Vec<usize>)> = None;
    let mut split = vec![0usize; regions.len()];
    loop {
        let total: usize = split.iter().sum();
        let valid =
            total % 2 == 1 && (!tolerate_region_loss || split.iter().all(|v| 2 * v < total));
        if valid {
            let score = (
                total,
                split.iter().filter(|v| **v > 0).count(),
                split
                    .iter()
                    .zip(&regions)
                    .map(|(v, ids)| v * ids.len())
                    .sum(),
            );
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, split.clone()));
            }
        }
        // The next split, as a counter with digit r in 0..=caps[r].
        let mut r = 0;
        loop {
            if r == split.len() {
                let chosen = best.map(|(_, s)| s).unwrap_or_default();
                return chosen
                    .iter()
                    .zip(&regions)
                    .flat_map(|(v, ids)| ids.iter().take(*v).copied())
                    .collect();
            }
            if split[r] < caps[r] {
                split[r] += 1;
                break;
            }
            split[r] = 0;
            r += 1;
        }
    }
}

/// Lag (log entries) under which a voter may take over the leadership.
pub const LEADER_HANDOVER_LAG: u64 = 16;

/// The round trip from a leader in `region` to a quorum of `voters` (the leader
/// counts itself): what each commit waits for.
pub fn quorum_round_trip(region: Region, voters: &[Region]) -> Duration {
    if voters.is_empty() {
        return Duration::ZERO;
    }
    let mut rtts: Vec<Duration> = voters.iter().map(|r| region.round_trip(*r)).collect();
    rtts.sort();
    // The leader is one of the voters, so its own (shortest) entry stands for itself.
    rtts[voters.len() / 2]
}

/// The voter that should lead instead of `leader`: one in a region whose round trip
/// to a quorum is shorter than the leader's (commits are faster there), the lowest
/// id among the best; `None` when the leader's region is already among the best or
/// regions are unknown. After a failover the new leader may sit in the farthest
/// region; this hands the leadership back.
pub fn preferred_leader(voters: &BTreeMap<u64, String>, leader: u64) -> Option<u64> {
    let regions: BTreeMap<u64, Region> = voters
        .iter()
        .map(|(id, r)| r.parse::<Region>().ok().map(|r| (*id, r)))
        .collect::<Option<_>>()?;
    let all: Vec<Region> = regions.values().copied().collect();
    let cost = |id: &u64| quorum_round_trip(regions[id], &all);
    let current = cost(regions.get_key_value(&leader)?.0);
    let best = regions.keys().min_by_key(|id| (cost(id), **id))?;
    (cost(best) < current).then_some(*best)
}

/// One member as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// The node id.
    pub id: u64,
    /// Its gRPC address.
    pub addr: String,
    /// Its region.
    pub region: String,
    /// Whether it votes (otherwise it is a learner).
    pub voter: bool,
    /// Whether it leads.
    pub leader: bool,
    /// Entries it lacks compared with the leader's log (known on the leader only).
    pub lag: Option<u64>,
}

impl Index {
    /// Every member with its role and, on the leader, its replication lag.
    pub fn members(&self) -> Vec<MemberStatus> {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        membership
            .nodes()
            .map(|(id, node)| {
                let lag = m.replication.as_ref().map(|r| match r.get(id) {
                    Some(Some(matched)) => last.saturating_sub(matched.index),
                    _ if *id == self.node_id => 0,
                    _ => last,
                });
                MemberStatus {
                    id: *id,
                    addr: node.addr.clone(),
                    region: node.region.clone(),
                    voter: voters.contains(id),
                    leader: m.current_leader == Some(*id),
                    lag,
                }
            })
            .collect()
    }

    /// Refuses a membership change on a node that does not lead.
    fn require_leader(&self) -> Result<(), IndexError> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader == Some(self.node_id) {
            return Ok(());
        }
        let leader_addr = m
            .current_leader
            .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
            .map(|n| n.addr);
        Err(IndexError::NotLeader {
            leader: m.current_leader,
            leader_addr,
        })
    }

    /// Adds node `id` at `node`: it joins as a learner, catches up (the call waits
    /// for it), and is promoted if the policy wants another voter. Adding a member
    /// again at the same address changes nothing. Leader only; one change at a time.
    pub async fn add_node(&self, id: u64, node: NodeInfo) -> Result<(), IndexError> {
        let _one_at_a_time = self.membership_lock.lock().await;
        self.require_leader()?;
        if let Some(existing) = self.member(id) {
            if existing == node {
                return self.rebalance_locked().await;
            }
            return Err(IndexError::InvalidMembership(format!(
                "node {id} is already a member at {existing}; remove it first"
            )));
        }
        tracing::info!(node = id, %node, "adding a member as a learner");
        let added = tokio::time::timeout(ADD_NODE_TIMEOUT, self.raft.add_learner(id, node, true))
            .await
            .map_err(|_| {
                IndexError::Unavailable(format!(
                    "node {id} did not catch up within {ADD_NODE_TIMEOUT:?}"
                ))
            })?;
        added.map_err(write_error)?;
        self.rebalance_locked().await
    }

    /// Removes member `id`: it stops voting (another member is promoted if the policy
    /// wants one), then leaves the group. The leader itself cannot be removed: hand
    /// the leadership over first. Leader only; one change at a time.
    pub async fn remove_node(&self, id: u64) -> Result<(), IndexError> {
        let _one_at_a_time = self.membership_lock.lock().await;
        self.require_leader()?;
        if id == self.node_id {
            return Err(IndexError::InvalidMembership(
                "this node leads; transfer the leadership before removing it".into(),
            ));
        }
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(IndexError::InvalidMembership(format!(
                "node {id} is not a member"
            )));
        }
        let mut rest: BTreeMap<u64, NodeInfo> =
            membership.nodes().map(|(i, n)| (*i, n.clone())).collect();
        rest.remove(&id);
        let mut voters: BTreeSet<u64> = membership.voter_ids().collect();
        let was_voter = voters.remove(&id);
        if was_voter {
            let wanted = self.promotable(desired_voters(&rest, &voters, Some(self.node_id)));
            tracing::info!(node = id, ?wanted, "removing a voter");
            self.raft
                .change_membership(ChangeMembers::ReplaceAllVoters(wanted), true)
                .await
                .map_err(write_error)?;
        }
        let node = membership.get_node(&id).cloned();
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        // Tell it, so it stops (a node that misses the notice is a learner nobody
        // replicates to any more: harmless, and its operator stops it).
        if let Some(node) = node
            && let Err(e) = self.peers.leave(id, &node, super::REQUEST_TIMEOUT).await
        {
            tracing::warn!(node = id, error = %e, "the removed node did not take its notice");
        }
        self.peers.forget(id);
        tracing::info!(node = id, "member removed");
        Ok(())
    }

    /// Changes the voters to what the policy wants, among the members that have
    /// caught up. Leader only; one change at a time.
    pub async fn rebalance(&self) -> Result<(), IndexError> {
        let _one_at_a_time = self.membership_lock.lock().await;
        self.require_leader()?;
        self.rebalance_locked().await
    }

    async fn rebalance_locked(&self) -> Result<(), IndexError> {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let members: BTreeMap<u64, NodeInfo> =
            membership.nodes().map(|(i, n)| (*i, n.clone())).collect();
        let current: BTreeSet<u64> = membership.voter_ids().collect();
        let wanted = self.promotable(desired_voters(&members, &current, Some(self.node_id)));
        if wanted == current || wanted.is_empty() {
            return Ok(());
        }
        tracing::info!(?current, ?wanted, "changing the voters");
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(wanted), true)
            .await
            .map_err(write_error)?;
        Ok(())
    }

    /// `wanted`, less the learners that lag too far behind to be promoted now.
    fn promotable(&self, wanted: BTreeSet<u64>) -> BTreeSet<u64> {
        let members = self.members();
        wanted
            .into_iter()
            .filter(|id| {
                members
                    .iter()
                    .find(|s| s.id == *id)
                    .is_some_and(|s| s.voter || s.lag.is_some_and(|l| l <= PROMOTION_LAG))
            })
            .collect()
    }

    /// On the leader: hands the leadership to the voter [`preferred_leader`] names,
    /// once it has caught up; returns the new leader, if any. Runs between membership
    /// changes, never during one.
    pub async fn place_leader(&self) -> Result<Option<u64>, IndexError> {
        let Ok(_one_at_a_time) = self.membership_lock.try_lock() else {
            return Ok(None);
        };
        if self.require_leader().is_err() {
            return Ok(None);
        }
        let members = self.members();
        let voters: BTreeMap<u64, String> = members
            .iter()
            .filter(|m| m.voter)
            .map(|m| (m.id, m.region.clone()))
            .collect();
        let Some(to) = preferred_leader(&voters, self.node_id) else {
            return Ok(None);
        };
        let caught_up = members
            .iter()
            .any(|m| m.id == to && m.lag.is_some_and(|l| l <= LEADER_HANDOVER_LAG));
        if !caught_up {
            return Ok(None);
        }
        tracing::info!(
            from = self.node_id,
            to,
            "handing the leadership to a region nearer a quorum"
        );
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(fatal)?;
        Ok(Some(to))
    }

    /// Hands the leadership to member `to` and waits (bounded) until it leads.
    pub async fn transfer_leader(&self, to: u64) -> Result<(), IndexError> {
        let _one_at_a_time = self.membership_lock.lock().await;
        self.require_leader()?;
        let voter = self.members().iter().any(|s| s.id == to && s.voter);
        if !voter {
            return Err(IndexError::InvalidMembership(format!(
                "node {to} is not a voter; only a voter can lead"
            )));
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(fatal)?;
        self.raft
            .wait(Some(super::REQUEST_TIMEOUT))
            .metrics(|m| m.current_leader == Some(to), "new leader")
            .await
            .map_err(|e| IndexError::Unavailable(format!("node {to} did not take over: {e}")))?;
        Ok(())
    }
}

/// A failed membership write.
fn write_error(e: RaftError<super::TypeConfig, ClientWriteError<super::TypeConfig>>) -> IndexError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => IndexError::NotLeader {
            leader: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.addr),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            IndexError::InvalidMembership(e.to_string())
        }
        RaftError::APIError(e) => IndexError::Unavailable(e.to_string()),
        RaftError::Fatal(e) => fatal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_goes_to_a_region_near_a_quorum() {
        let voters: BTreeMap<u64, String> = [
            (1, "us-east-1"),
            (2, "us-east-1"),
            (5, "eu-west-3"),
            (6, "eu-west-3"),
            (9, "ap-southeast-1"),
        ]
        .into_iter()
        .map(|(id, r)| (id, r.to_owned()))
        .collect();
        let all: Vec<Region> = voters.values().map(|r| r.parse().unwrap()).collect();
        // us-east-1 and eu-west-3 reach a quorum in 80 ms, ap-southeast-1 in 150 ms.
        assert_eq!(
            quorum_round_trip(Region::UsEast1, &all),
            Duration::from_millis(80)
        );
        assert_eq!(
            quorum_round_trip(Region::EuWest3, &all),
            Duration::from_millis(80)
        );
        assert_eq!(
            quorum_round_trip(Region::ApSoutheast1, &all),
            Duration::from_millis(150)
        );
        assert_eq!(preferred_leader(&voters, 9), Some(1));
        // Ties stay put: no back and forth between equally good regions.
        assert_eq!(preferred_leader(&voters, 1), None);
        assert_eq!(preferred_leader(&voters, 6), None);
        // A lone voter, an unknown region: nothing to do.
        let one: BTreeMap<u64, String> = [(3, "eu-west-3".to_owned())].into();
        assert_eq!(preferred_leader(&one, 3), None);
        let mut odd = voters.clone();
        odd.insert(10, "mars-1".into());
        assert_eq!(preferred_leader(&odd, 9), None);
    }

    fn members(layout: &[(&str, u64)]) -> BTreeMap<u64, NodeInfo> {
        let mut out = BTreeMap::new();
        let mut id = 1;
        for (region, n) in layout {
            for _ in 0..*n {
                out.insert(
                    id,
                    NodeInfo::new(format!("127.0.0.1:{}", 5000 + id), *region),
                );
                id += 1;
            }
        }
        out
    }

    fn per_region(m: &BTreeMap<u64, NodeInfo>, voters: &BTreeSet<u64>) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for id in voters {
            *out.entry(m[id].region.clone()).or_default() += 1;
        }
        out
    }

    /// Whether losing any one region leaves a majority of `voters`.
    fn survives_any_region(m: &BTreeMap<u64, NodeInfo>, voters: &BTreeSet<u64>) -> bool {
        let counts = per_region(m, voters);
        counts.values().all(|v| voters.len() - v > voters.len() / 2)
    }

    #[test]
    fn default_layout_gets_two_two_one() {
        let m = members(&[("us-east-1", 4), ("eu-west-3", 4), ("ap-southeast-1", 2)]);
        let v = desired_voters(&m, &BTreeSet::new(), None);
        assert_eq!(
            per_region(&m, &v),
            BTreeMap::from([
                ("ap-southeast-1".to_owned(), 1),
                ("eu-west-3".to_owned(), 2),
                ("us-east-1".to_owned(), 2)
            ])
        );
        assert!(survives_any_region(&m, &v));
    }

    #[test]
    fn current_voters_are_kept_where_the_policy_allows() {
        let m = members(&[("us-east-1", 4), ("eu-west-3", 4), ("ap-southeast-1", 2)]);
        // Nodes 3 and 4 (us-east-1) vote now: they stay voters.
        let current = BTreeSet::from([3, 4, 5, 6, 9]);
        let v = desired_voters(&m, &current, Some(3));
        assert_eq!(v, current);
        // The leader keeps its vote even where the policy wants fewer voters.
        let m = members(&[("us-east-1", 2)]);
        assert_eq!(
            desired_voters(&m, &BTreeSet::from([1, 2]), Some(2)),
            BTreeSet::from([2])
        );
    }

    #[test]
    fn every_layout_of_three_regions_survives_a_region_loss_with_an_odd_count() {
        for a in 1..=6u64 {
            for b in 1..=6u64 {
                for c in 1..=4u64 {
                    let m = members(&[("us-east-1", a), ("eu-west-3", b), ("ap-southeast-1", c)]);
                    let v = desired_voters(&m, &BTreeSet::new(), None);
                    assert_eq!(v.len() % 2, 1, "{a}/{b}/{c}: {v:?}");
                    assert!(survives_any_region(&m, &v), "{a}/{b}/{c}: {v:?}");
                    assert!(per_region(&m, &v).values().all(|n| *n <= VOTERS_PER_REGION));
                }
            }
        }
    }

    #[test]
    fn fewer_regions_keep_an_odd_count() {
        for n in 1..=6u64 {
            let m = members(&[("us-east-1", n)]);
            let v = desired_voters(&m, &BTreeSet::new(), None);
            assert_eq!(v.len(), [1, 1, 3, 3, 3, 3][n as usize - 1], "{n}");
        }
        let m = members(&[("us-east-1", 4), ("eu-west-3", 4)]);
        assert_eq!(desired_voters(&m, &BTreeSet::new(), None).len(), 3);
        assert!(desired_voters(&BTreeMap::new(), &BTreeSet::new(), None).is_empty());
    }
}
