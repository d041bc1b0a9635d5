//! The gRPC surface of the node (service `veritrace.v1.Ledger`, standard health and
//! reflection). Errors become `tonic::Status` here and only here.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::record::SignedRecord;
use veritrace_ledger::view::{Outcome, Receipt};
use veritrace_proto::v1 as pb;

use crate::service::{Services, SubmitError, SubmitOutcome};

/// Largest gRPC message the node decodes or sends (a batch of records, a bundle).
pub const GRPC_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most records in one SubmitBatch.
pub const SUBMIT_BATCH_RECORDS_MAX: usize = 10_000;

impl From<SubmitError> for Status {
    fn from(e: SubmitError) -> Status {
        match &e {
            SubmitError::Malformed { .. } => Status::invalid_argument(e.to_string()),
            SubmitError::BadSignature { .. } => Status::unauthenticated(e.to_string()),
            SubmitError::NoLeader | SubmitError::Busy | SubmitError::Forward(_) => Status::unavailable(e.to_string()),
            SubmitError::Commit(_) => Status::unavailable(e.to_string()),
            SubmitError::Storage(_) => Status::internal(e.to_string()),
        }
    }
}

fn receipt_pb(r: &Receipt) -> pb::Receipt {
    let mut out = pb::Receipt { record_id: r.record_id.as_bytes().to_vec(), height: r.height, ..Default::default() };
    match &r.outcome {
        Outcome::Accepted { log_index } => {
            out.status = pb::ReceiptStatus::Accepted as i32;
            out.log_index = *log_index;
            out.message = format!("accepted at log index {log_index}, height {}", r.height);
        }
        Outcome::Rejected { code, message } => {
            out.status = pb::ReceiptStatus::Rejected as i32;
            out.reject_code = *code as u32;
            out.reject_reason = code.as_str().to_string();
            out.message = message.clone();
        }
    }
    out
}

fn outcome_pb(o: &SubmitOutcome) -> pb::Receipt {
    match o {
        SubmitOutcome::Decided(r) => receipt_pb(r),
        SubmitOutcome::Pending(id) => pb::Receipt {
            record_id: id.as_bytes().to_vec(),
            status: pb::ReceiptStatus::Pending as i32,
            message: "queued at the leader".into(),
            ..Default::default()
        },
    }
}

fn decode_record(index: usize, bytes: &[u8]) -> Result<SignedRecord, Status> {
    SignedRecord::from_bytes(bytes).map_err(|e| Status::invalid_argument(format!("record {index}: {e}")))
}

/// The `veritrace.v1.Ledger` service.
pub struct LedgerApi {
    pub services: Arc<Services>,
}

#[tonic::async_trait]
impl pb::ledger_server::Ledger for LedgerApi {
    async fn submit(&self, req: Request<pb::SubmitRequest>) -> Result<Response<pb::SubmitResponse>, Status> {
        let req = req.into_inner();
        let record = decode_record(0, &req.signed_record)?;
        let out = self.services.submit(vec![record], req.wait_for_commit).await?;
        Ok(Response::new(pb::SubmitResponse { receipt: out.first().map(outcome_pb) }))
    }

    async fn submit_batch(
        &self,
        req: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let req = req.into_inner();
        if req.signed_records.len() > SUBMIT_BATCH_RECORDS_MAX {
            return Err(Status::invalid_argument(format!(
                "{} records in one batch, at most {SUBMIT_BATCH_RECORDS_MAX}",
                req.signed_records.len()
            )));
        }
        let records =
            req.signed_records.iter().enumerate().map(|(i, b)| decode_record(i, b)).collect::<Result<Vec<_>, _>>()?;
        let out = self.services.submit(records, req.wait_for_commit).await?;
        Ok(Response::new(pb::SubmitBatchResponse { receipts: out.iter().map(outcome_pb).collect() }))
    }

    async fn get_receipt(&self, req: Request<pb::GetReceiptRequest>) -> Result<Response<pb::Receipt>, Status> {
        let id = req.into_inner().record_id;
        let id: [u8; 32] = id
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument(format!("record id must be 32 bytes, got {}", id.len())))?;
        let id = Hash32(id);
        let s = self.services.clone();
        let found = tokio::task::spawn_blocking(move || {
            let store = s.store.read().map_err(|_| Status::internal("store lock poisoned"))?;
            store.receipt(&id).map_err(|e| Status::internal(e.to_string()))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        match found {
            Some(r) => Ok(Response::new(receipt_pb(&r))),
            None => Err(Status::not_found(format!("no receipt for record {id}"))),
        }
    }

    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let s = &self.services;
        let metrics = s.raft.metrics().borrow().clone();
        let name = |id: u64| s.members.get(&id).map(|m| m.node_id.to_string()).unwrap_or_else(|| id.to_string());
        let role = match metrics.state {
            openraft::ServerState::Leader => "leader",
            openraft::ServerState::Follower => "follower",
            openraft::ServerState::Candidate => "candidate",
            openraft::ServerState::Learner => "learner",
            openraft::ServerState::Shutdown => "shutdown",
        };
        let membership = metrics.membership_config.membership();
        let voters: Vec<String> = membership.voter_ids().map(name).collect();
        let learners: Vec<String> = membership.learner_ids().map(name).collect();
        let peers = s.p2p.connected_peers().await.iter().map(|p| p.to_string()).collect();
        let s2 = s.clone();
        let head = tokio::task::spawn_blocking(move || s2.store.read().map(|st| st.head().clone()).map_err(|_| ()))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|_| Status::internal("store lock poisoned"))?;
        Ok(Response::new(pb::StatusResponse {
            ledger_id: head.ledger_id.to_string(),
            node_id: s.node_id.to_string(),
            role: role.into(),
            leader: metrics.current_leader.map(name).unwrap_or_default(),
            height: head.height,
            log_size: head.log_size,
            log_root: head.log_root.as_bytes().to_vec(),
            state_root: head.state_root.as_bytes().to_vec(),
            complete_checkpoint_height: s.complete_height.load(std::sync::atomic::Ordering::Relaxed),
            peers,
            voters,
            learners,
        }))
    }
}
