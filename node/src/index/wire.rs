//! The Raft RPC messages between openraft's types and their `cas.raft.v1` wire form
//! (`peer.proto`), built from the record conversions in [`super::codec`]. Every
//! `*_from_pb` checks what it reads: a malformed message is an error, never a panic.

use std::io;

use cas_proto::raft as pb;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};

use super::codec::{
    entry_from_pb, entry_to_pb, invalid, log_id_from_pb, log_id_to_pb, vote_from_pb, vote_to_pb,
};
use super::types::{LogId, TypeConfig, Vote};

fn required<T>(v: Option<T>, what: &str) -> io::Result<T> {
    v.ok_or_else(|| invalid(format!("{what} is missing")))
}

fn opt_log_id(id: Option<pb::LogId>) -> io::Result<Option<LogId>> {
    id.map(log_id_from_pb).transpose()
}

/// The answer to one request of a pipelined append stream as a wire message.
pub fn stream_result_to_pb(r: &StreamAppendResult<TypeConfig>) -> pb::StreamAppendResponse {
    use pb::stream_append_response::Outcome;
    let outcome = match r {
        Ok(matched) => Outcome::Matched(pb::Matched {
            log_id: matched.as_ref().map(log_id_to_pb),
        }),
        Err(StreamAppendError::Conflict(id)) => Outcome::Conflict(log_id_to_pb(id)),
        Err(StreamAppendError::HigherVote(v)) => Outcome::HigherVote(vote_to_pb(v)),
    };
    pb::StreamAppendResponse {
        outcome: Some(outcome),
    }
}

/// The answer to one request of a pipelined append stream from its wire message.
pub fn stream_result_from_pb(
    r: pb::StreamAppendResponse,
) -> io::Result<StreamAppendResult<TypeConfig>> {
    use pb::stream_append_response::Outcome;
    Ok(match required(r.outcome, "stream append outcome")? {
        Outcome::Matched(m) => Ok(opt_log_id(m.log_id)?),
        Outcome::Conflict(id) => Err(StreamAppendError::Conflict(log_id_from_pb(id)?)),
        Outcome::HigherVote(v) => Err(StreamAppendError::HigherVote(vote_from_pb(v)?)),
    })
}

/// AppendEntries as a wire message.
pub fn append_request_to_pb(r: &AppendEntriesRequest<TypeConfig>) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        vote: Some(vote_to_pb(&r.vote)),
        prev_log_id: r.prev_log_id.as_ref().map(log_id_to_pb),
        entries: r.entries.iter().map(entry_to_pb).collect(),
        leader_commit: r.leader_commit.as_ref().map(log_id_to_pb),
    }
}

/// AppendEntries from its wire message.
pub fn append_request_from_pb(
    r: pb::AppendEntriesRequest,
) -> io::Result<AppendEntriesRequest<TypeConfig>> {
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(required(r.vote, "vote")?)?,
        prev_log_id: opt_log_id(r.prev_log_id)?,
        entries: r
            .entries
            .into_iter()
            .map(entry_from_pb)
            .collect::<io::Result<_>>()?,
        leader_commit: opt_log_id(r.leader_commit)?,
    })
}

/// The answer to AppendEntries as a wire message.
pub fn append_response_to_pb(r: &AppendEntriesResponse<TypeConfig>) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::{Outcome, PartialSuccess};
    let outcome = match r {
        AppendEntriesResponse::Success => Outcome::Success(pb::Blank {}),
        AppendEntriesResponse::PartialSuccess(last) => Outcome::PartialSuccess(PartialSuccess {
            last_log_id: last.as_ref().map(log_id_to_pb),
        }),
        AppendEntriesResponse::Conflict => Outcome::Conflict(pb::Blank {}),
        AppendEntriesResponse::HigherVote(v) => Outcome::HigherVote(vote_to_pb(v)),
    };
    pb::AppendEntriesResponse {
        outcome: Some(outcome),
    }
}

/// The answer to AppendEntries from its wire message.
pub fn append_response_from_pb(
    r: pb::AppendEntriesResponse,
) -> io::Result<AppendEntriesResponse<TypeConfig>> {
    use pb::append_entries_response::Outcome;
    Ok(match required(r.outcome, "append outcome")? {
        Outcome::Success(_) => AppendEntriesResponse::Success,
        Outcome::PartialSuccess(p) => {
            AppendEntriesResponse::PartialSuccess(opt_log_id(p.last_log_id)?)
        }
        Outcome::Conflict(_) => AppendEntriesResponse::Conflict,
        Outcome::HigherVote(v) => AppendEntriesResponse::HigherVote(vote_from_pb(v)?),
    })
}

/// RequestVote as a wire message.
pub fn vote_request_to_pb(r: &VoteRequest<TypeConfig>) -> pb::VoteRequest {
    pb::VoteRequest {
        vote: Some(vote_to_pb(&r.vote)),
        last_log_id: r.last_log_id.as_ref().map(log_id_to_pb),
    }
}

/// RequestVote from its wire message.
pub fn vote_request_from_pb(r: pb::VoteRequest) -> io::Result<VoteRequest<TypeConfig>> {
    Ok(VoteRequest::new(
        vote_from_pb(required(r.vote, "vote")?)?,
        opt_log_id(r.last_log_id)?,
    ))
}

/// The answer to RequestVote as a wire message.
pub fn vote_response_to_pb(r: &VoteResponse<TypeConfig>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_pb(&r.vote)),
        vote_granted: r.vote_granted,
        last_log_id: r.last_log_id.as_ref().map(log_id_to_pb),
    }
}

/// The answer to RequestVote from its wire message.
pub fn vote_response_from_pb(r: pb::VoteResponse) -> io::Result<VoteResponse<TypeConfig>> {
    Ok(VoteResponse::new(
        vote_from_pb(required(r.vote, "vote")?)?,
        opt_log_id(r.last_log_id)?,
        r.vote_granted,
    ))
}

/// TransferLeader as a wire message.
pub fn transfer_request_to_pb(r: &TransferLeaderRequest<TypeConfig>) -> pb::TransferLeaderRequest {
    pb::TransferLeaderRequest {
        from_leader: Some(vote_to_pb(r.from_leader())),
        to_node_id: *r.to_node_id(),
        last_log_id: r.last_log_id().map(log_id_to_pb),
    }
}

/// TransferLeader from its wire message.
pub fn transfer_request_from_pb(
    r: pb::TransferLeaderRequest,
) -> io::Result<TransferLeaderRequest<TypeConfig>> {
    Ok(TransferLeaderRequest::new(
        vote_from_pb(required(r.from_leader, "from_leader")?)?,
        r.to_node_id,
        opt_log_id(r.last_log_id)?,
    ))
}

/// A vote field that must be present.
pub fn required_vote(v: Option<pb::Vote>) -> io::Result<Vote> {
    vote_from_pb(required(v, "vote")?)
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;
    use openraft::vote::RaftLeaderId;
    use prost::Message;

    use super::*;
    use crate::index::types::{Entry, IndexCommand};

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(
            openraft::impls::leader_id_adv::LeaderId::new(term, node),
            index,
        )
    }

    #[test]
    fn append_entries_round_trip_through_bytes() {
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(2, 1, 9)),
            entries: vec![
                Entry {
                    log_id: log_id(3, 1, 10),
                    payload: EntryPayload::Blank,
                },
                Entry {
                    log_id: log_id(3, 1, 11),
                    payload: EntryPayload::Normal(IndexCommand::default()),
                },
            ],
            leader_commit: Some(log_id(3, 1, 10)),
        };
        let bytes = append_request_to_pb(&req).encode_to_vec();
        let back =
            append_request_from_pb(pb::AppendEntriesRequest::decode(&bytes[..]).unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{req:?}"));

        for resp in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(Some(log_id(3, 1, 10))),
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(Vote::new(4, 2)),
        ] {
            let back = append_response_from_pb(append_response_to_pb(&resp)).unwrap();
            assert_eq!(back, resp);
        }
    }

    #[test]
    fn stream_append_answers_round_trip() {
        for r in [
            Ok(Some(log_id(3, 1, 10))),
            Ok(None),
            Err(StreamAppendError::Conflict(log_id(2, 1, 9))),
            Err(StreamAppendError::HigherVote(Vote::new(4, 2))),
        ] {
            let back = stream_result_from_pb(stream_result_to_pb(&r)).unwrap();
            assert_eq!(format!("{back:?}"), format!("{r:?}"));
        }
        assert!(stream_result_from_pb(pb::StreamAppendResponse::default()).is_err());
    }

    #[test]
    fn votes_and_transfers_round_trip() {
        let req = VoteRequest::<TypeConfig>::new(Vote::new(5, 2), Some(log_id(4, 1, 7)));
        let back = vote_request_from_pb(vote_request_to_pb(&req)).unwrap();
        assert_eq!(back, req);
        let resp = VoteResponse::<TypeConfig>::new(Vote::new(5, 2), None, true);
        let back = vote_response_from_pb(vote_response_to_pb(&resp)).unwrap();
        assert_eq!(back, resp);
        let t = TransferLeaderRequest::<TypeConfig>::new(Vote::new_committed(5, 2), 3, None);
        let back = transfer_request_from_pb(transfer_request_to_pb(&t)).unwrap();
        assert_eq!(back.to_node_id(), &3);
        assert_eq!(back.from_leader(), t.from_leader());
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(append_request_from_pb(pb::AppendEntriesRequest::default()).is_err());
        assert!(append_response_from_pb(pb::AppendEntriesResponse::default()).is_err());
        assert!(vote_request_from_pb(pb::VoteRequest::default()).is_err());
        let bad_entry = pb::AppendEntriesRequest {
            vote: Some(vote_to_pb(&Vote::new(1, 1))),
            entries: vec![pb::Entry::default()],
            ..Default::default()
        };
        assert!(append_request_from_pb(bad_entry).is_err());
    }
}
