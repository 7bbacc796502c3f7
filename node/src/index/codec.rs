//! How the index encodes what it stores: every value in its RocksDB (log entries,
//! vote, log ids, memberships, index records) is one format byte, [`FORMAT_PROTO_V1`],
//! then a protobuf message (`cas.raft.v1` for Raft data, `cas.index.v1` for records).
//! A later format gets a new byte, so a newer node can read (and migrate) what an
//! older one wrote.
//!
//! The conversions between openraft's types and the `cas.raft.v1` wire messages live
//! here too, so the Raft RPCs reuse them.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use cas_proto::index::Command;
use cas_proto::raft as pb;
use openraft::EntryPayload;
use openraft::vote::RaftLeaderId;
use prost::Message;

use super::types::{
    Entry, IndexCommand, LogId, Membership, NodeInfo, SnapshotMeta, StoredMembership, Vote,
};

/// Format byte of a value encoded as protobuf (the only format so far).
pub const FORMAT_PROTO_V1: u8 = 1;

/// The error of a value that does not decode.
pub fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Encodes a stored value: the format byte, then the message.
pub fn encode<M: Message>(m: &M) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + m.encoded_len());
    out.push(FORMAT_PROTO_V1);
    // Encoding into a Vec cannot run out of room.
    let _ = m.encode(&mut out);
    out
}

/// Decodes what [`encode`] wrote.
pub fn decode<M: Message + Default>(bytes: &[u8]) -> io::Result<M> {
    match bytes.split_first() {
        Some((&FORMAT_PROTO_V1, rest)) => M::decode(rest).map_err(|e| invalid(e.to_string())),
        Some((other, _)) => Err(invalid(format!("unknown value format {other}"))),
        None => Err(invalid("empty value")),
    }
}

/// A log index as a RocksDB key (big-endian, so keys sort by index).
pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The log index of a key written by [`index_key`].
pub fn key_index(key: &[u8]) -> io::Result<u64> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| invalid(format!("log key of {} bytes", key.len())))
}

/// A member as a wire message.
pub fn node_to_pb(node: &NodeInfo) -> pb::Node {
    pb::Node {
        addr: node.addr.clone(),
        region: node.region.clone(),
    }
}

/// A member from its wire message.
pub fn node_from_pb(node: pb::Node) -> NodeInfo {
    NodeInfo {
        addr: node.addr,
        region: node.region,
    }
}

/// A log id as a wire message.
pub fn log_id_to_pb(id: &LogId) -> pb::LogId {
    pb::LogId {
        leader_id: Some(pb::LeaderId {
            term: id.leader_id.term,
            node_id: id.leader_id.node_id,
        }),
        index: id.index,
    }
}

/// A log id from its wire message.
pub fn log_id_from_pb(id: pb::LogId) -> io::Result<LogId> {
    let leader = id
        .leader_id
        .ok_or_else(|| invalid("log id without a leader id"))?;
    Ok(LogId::new(
        openraft::impls::leader_id_adv::LeaderId::new(leader.term, leader.node_id),
        id.index,
    ))
}

/// A vote as a wire message.
pub fn vote_to_pb(vote: &Vote) -> pb::Vote {
    pb::Vote {
        leader_id: Some(pb::LeaderId {
            term: vote.leader_id.term,
            node_id: vote.leader_id.node_id,
        }),
        committed: vote.committed,
    }
}

/// A vote from its wire message.
pub fn vote_from_pb(vote: pb::Vote) -> io::Result<Vote> {
    let leader = vote
        .leader_id
        .ok_or_else(|| invalid("vote without a leader id"))?;
    Ok(if vote.committed {
        Vote::new_committed(leader.term, leader.node_id)
    } else {
        Vote::new(leader.term, leader.node_id)
    })
}

/// A membership as a wire message.
pub fn membership_to_pb(m: &Membership) -> pb::Membership {
    pb::Membership {
        configs: m
            .get_joint_config()
            .iter()
            .map(|set| pb::NodeIdSet {
                node_ids: set.iter().copied().collect(),
            })
            .collect(),
        nodes: m.nodes().map(|(id, n)| (*id, node_to_pb(n))).collect(),
    }
}

/// A membership from its wire message (checked: every voter must be a member).
pub fn membership_from_pb(m: pb::Membership) -> io::Result<Membership> {
    let configs: Vec<BTreeSet<u64>> = m
        .configs
        .into_iter()
        .map(|set| set.node_ids.into_iter().collect())
        .collect();
    let nodes: BTreeMap<u64, NodeInfo> = m
        .nodes
        .into_iter()
        .map(|(id, n)| (id, node_from_pb(n)))
        .collect();
    Membership::new(configs, nodes).map_err(|e| invalid(format!("membership: {e}")))
}

/// A stored membership as a wire message.
pub fn stored_membership_to_pb(m: &StoredMembership) -> pb::StoredMembership {
    pb::StoredMembership {
        log_id: m.log_id().as_ref().map(log_id_to_pb),
        membership: Some(membership_to_pb(m.membership())),
    }
}

/// A stored membership from its wire message.
pub fn stored_membership_from_pb(m: pb::StoredMembership) -> io::Result<StoredMembership> {
    let log_id = m.log_id.map(log_id_from_pb).transpose()?;
    let membership = membership_from_pb(m.membership.unwrap_or_default())?;
    Ok(StoredMembership::new(log_id, membership))
}

/// A log entry as a wire message.
pub fn entry_to_pb(entry: &Entry) -> pb::Entry {
    let payload = match &entry.payload {
        EntryPayload::Blank => pb::entry::Payload::Blank(pb::Blank {}),
        EntryPayload::Normal(cmd) => pb::entry::Payload::Normal(cmd.0.encode_to_vec().into()),
        EntryPayload::Membership(m) => pb::entry::Payload::Membership(membership_to_pb(m)),
    };
    pb::Entry {
        log_id: Some(log_id_to_pb(&entry.log_id)),
        payload: Some(payload),
    }
}

/// A log entry from its wire message.
pub fn entry_from_pb(entry: pb::Entry) -> io::Result<Entry> {
    let log_id = log_id_from_pb(
        entry
            .log_id
            .ok_or_else(|| invalid("entry without a log id"))?,
    )?;
    let payload = match entry.payload {
        Some(pb::entry::Payload::Blank(_)) => EntryPayload::Blank,
        Some(pb::entry::Payload::Normal(bytes)) => {
            let cmd = Command::decode(bytes).map_err(|e| invalid(format!("command: {e}")))?;
            EntryPayload::Normal(IndexCommand(cmd))
        }
        Some(pb::entry::Payload::Membership(m)) => EntryPayload::Membership(membership_from_pb(m)?),
        None => return Err(invalid("entry without a payload")),
    };
    Ok(Entry { log_id, payload })
}

/// The readable id of a snapshot covering up to `last`: `<index>-<term>-<node>`.
pub fn snapshot_id(last: Option<&LogId>) -> String {
    match last {
        Some(l) => format!("{}-{}-{}", l.index, l.leader_id.term, l.leader_id.node_id),
        None => "empty".to_owned(),
    }
}

/// Snapshot metadata as a wire message.
pub fn snapshot_meta_to_pb(meta: &SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_log_id: meta.last_log_id.as_ref().map(log_id_to_pb),
        last_membership: Some(stored_membership_to_pb(&meta.last_membership)),
        snapshot_id: snapshot_id(meta.last_log_id.as_ref()),
    }
}

/// Snapshot metadata from its wire message.
pub fn snapshot_meta_from_pb(meta: pb::SnapshotMeta) -> io::Result<SnapshotMeta> {
    Ok(SnapshotMeta {
        last_log_id: meta.last_log_id.map(log_id_from_pb).transpose()?,
        last_membership: stored_membership_from_pb(meta.last_membership.unwrap_or_default())?,
    })
}

/// Encodes a log entry for the log store.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    encode(&entry_to_pb(entry))
}

/// Decodes a log entry written by [`encode_entry`].
pub fn decode_entry(bytes: &[u8]) -> io::Result<Entry> {
    entry_from_pb(decode(bytes)?)
}

/// Encodes a vote.
pub fn encode_vote(vote: &Vote) -> Vec<u8> {
    encode(&vote_to_pb(vote))
}

/// Decodes a vote written by [`encode_vote`].
pub fn decode_vote(bytes: &[u8]) -> io::Result<Vote> {
    vote_from_pb(decode(bytes)?)
}

/// Encodes a log id.
pub fn encode_log_id(id: &LogId) -> Vec<u8> {
    encode(&log_id_to_pb(id))
}

/// Decodes a log id written by [`encode_log_id`].
pub fn decode_log_id(bytes: &[u8]) -> io::Result<LogId> {
    log_id_from_pb(decode(bytes)?)
}

/// Encodes a stored membership.
pub fn encode_stored_membership(m: &StoredMembership) -> Vec<u8> {
    encode(&stored_membership_to_pb(m))
}

/// Decodes a stored membership written by [`encode_stored_membership`].
pub fn decode_stored_membership(bytes: &[u8]) -> io::Result<StoredMembership> {
    stored_membership_from_pb(decode(bytes)?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cas_proto::index::{RegisterXorb, XorbRecord, command};

    use super::*;

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(
            openraft::impls::leader_id_adv::LeaderId::new(term, node),
            index,
        )
    }

    #[test]
    fn entries_round_trip() {
        let membership = Membership::new(
            vec![[1, 2].into(), [2, 3].into()],
            BTreeMap::from([
                (1, NodeInfo::new("10.0.0.1:7000", "us-east-1")),
                (2, NodeInfo::new("10.0.0.2:7000", "eu-west-3")),
                (3, NodeInfo::new("10.0.0.3:7000", "ap-southeast-1")),
                (4, NodeInfo::new("10.0.0.4:7000", "ap-southeast-1")),
            ]),
        )
        .unwrap();
        let cmd = Command {
            op: Some(command::Op::RegisterXorb(RegisterXorb {
                xorb: Some(XorbRecord {
                    format: 1,
                    hash: vec![7; 32].into(),
                    ..Default::default()
                }),
            })),
        };
        for entry in [
            Entry {
                log_id: log_id(1, 1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2, 3, 9),
                payload: EntryPayload::Normal(IndexCommand(cmd)),
            },
            Entry {
                log_id: log_id(u64::MAX, 2, u64::MAX),
                payload: EntryPayload::Membership(membership),
            },
        ] {
            let bytes = encode_entry(&entry);
            assert_eq!(bytes[0], FORMAT_PROTO_V1);
            assert_eq!(decode_entry(&bytes).unwrap(), entry);
        }
    }

    #[test]
    fn metadata_round_trips() {
        let vote = Vote::new_committed(5, 2);
        assert_eq!(decode_vote(&encode_vote(&vote)).unwrap(), vote);
        let vote = Vote::new(0, 0);
        assert_eq!(decode_vote(&encode_vote(&vote)).unwrap(), vote);
        let id = log_id(3, 4, 5);
        assert_eq!(decode_log_id(&encode_log_id(&id)).unwrap(), id);
        let m = StoredMembership::default();
        assert_eq!(
            decode_stored_membership(&encode_stored_membership(&m)).unwrap(),
            m
        );
        let meta = SnapshotMeta {
            last_log_id: Some(id),
            last_membership: StoredMembership::new(
                Some(log_id(1, 1, 1)),
                Membership::new(vec![[1].into()], BTreeMap::from([(1, NodeInfo::default())]))
                    .unwrap(),
            ),
        };
        let wire = snapshot_meta_to_pb(&meta);
        assert_eq!(wire.snapshot_id, "5-3-4");
        assert_eq!(snapshot_meta_from_pb(wire).unwrap(), meta);
    }

    #[test]
    fn unknown_formats_and_garbage_are_refused() {
        let mut bytes = encode_vote(&Vote::new(1, 1));
        bytes[0] = 2;
        assert!(decode_vote(&bytes).is_err());
        assert!(decode_vote(&[]).is_err());
        assert!(decode_entry(&[FORMAT_PROTO_V1, 0xFF, 0xFF]).is_err());
        // An entry without a payload is not silently a blank one.
        let empty = encode(&pb::Entry {
            log_id: Some(log_id_to_pb(&log_id(1, 1, 1))),
            payload: None,
        });
        assert!(decode_entry(&empty).is_err());
        assert!(key_index(&[1, 2, 3]).is_err());
        assert_eq!(key_index(&index_key(42)).unwrap(), 42);
    }
}
