//! The gRPC surface of the node (service `veritrace.v1.Ledger`, standard health and
//! reflection). Errors become `tonic::Status` here and only here.

use std::sync::Arc;

use prost::Message;
use tonic::{Code, Request, Response, Status};
use veritrace_ledger::apply::RejectCode;
use veritrace_ledger::record::SignedRecord;
use veritrace_ledger::view::{Outcome, Receipt};
use veritrace_proto::v1 as pb;

use veritrace_proto::convert::hash_from_pb;

use crate::query::{self, LedgerStore};
use crate::service::{RaftLogIndexes, Services, SubmitError, SubmitOutcome};

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
            SubmitError::Commit(_) | SubmitError::Unverified(_) => Status::unavailable(e.to_string()),
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

/// The status a rejected record answers a single `Submit` with: the class of the rule it
/// broke (docs/api.md has the table).
pub fn reject_status_code(code: RejectCode) -> Code {
    use RejectCode::*;
    match code {
        Malformed | TimeOutOfWindow => Code::InvalidArgument,
        BadSignature | KeyNotValid => Code::Unauthenticated,
        RoleNotAllowed | PrefixNotAllowed | OutOfScope | NotCustodian | NotRecipient | QuorumNotMet => {
            Code::PermissionDenied
        }
        AlreadyIssued | Duplicate => Code::AlreadyExists,
        UnknownSubject => Code::NotFound,
        UnknownOrganisation | SubjectHeld | SubjectRecalled | WrongTransitState | SubjectSold | Conflict => {
            Code::FailedPrecondition
        }
    }
}

/// A rejected receipt as an error status; the receipt itself travels in the details.
fn rejected_status(r: &Receipt, code: RejectCode, message: &str) -> Status {
    let receipt = receipt_pb(r);
    Status::with_details(
        reject_status_code(code),
        format!("record {} rejected at height {} ({}): {message}", r.record_id, r.height, code.as_str()),
        receipt.encode_to_vec().into(),
    )
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
        let first = out.first().ok_or_else(|| Status::internal("no outcome for the record"))?;
        if let SubmitOutcome::Decided(r) = first
            && let Outcome::Rejected { code, message } = &r.outcome
        {
            return Err(rejected_status(r, *code, message));
        }
        Ok(Response::new(pb::SubmitResponse { receipt: Some(outcome_pb(first)) }))
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
        let id = hash_from_pb("record_id", &req.into_inner().record_id).map_err(Status::invalid_argument)?;
        let found = self.read(move |st, _| st.receipt(&id).map_err(query::store_status)).await?;
        match found {
            Some(r) => Ok(Response::new(receipt_pb(&r))),
            None => Err(Status::not_found(format!("no receipt for record {id}"))),
        }
    }

    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let s = &self.services;
        let metrics = s.raft.metrics().borrow().clone();
        let raft_log = RaftLogIndexes::of(&metrics);
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
            complete_checkpoint_height: s.complete_height(),
            peers,
            voters,
            learners,
            raft_last_log_index: raft_log.last,
            raft_applied_index: raft_log.applied,
            raft_snapshot_index: raft_log.snapshot,
            raft_purged_index: raft_log.purged,
        }))
    }

    async fn get_record(&self, req: Request<pb::GetRecordRequest>) -> Result<Response<pb::RecordEntry>, Status> {
        let req = req.into_inner();
        self.read(move |st, _| query::get_record(st, &req)).await.map(Response::new)
    }

    async fn trace(&self, req: Request<pb::TraceRequest>) -> Result<Response<pb::TraceResponse>, Status> {
        let req = req.into_inner();
        self.read(move |st, _| query::trace(st, &req)).await.map(Response::new)
    }

    async fn recall_impact(
        &self,
        req: Request<pb::RecallImpactRequest>,
    ) -> Result<Response<pb::RecallImpactResponse>, Status> {
        let req = req.into_inner();
        self.read(move |st, _| query::recall_impact(st, &req)).await.map(Response::new)
    }

    async fn records_by_org(
        &self,
        req: Request<pb::RecordsByOrgRequest>,
    ) -> Result<Response<pb::RecordsByOrgResponse>, Status> {
        let req = req.into_inner();
        self.read(move |st, _| query::records_by_org(st, &req)).await.map(Response::new)
    }

    async fn get_checkpoint(&self, req: Request<pb::GetCheckpointRequest>) -> Result<Response<pb::Checkpoint>, Status> {
        let asked = req.into_inner().height;
        let height = match asked {
            0 => self.latest_complete()?,
            h => h,
        };
        self.read(move |st, s| query::get_checkpoint(st, &s.genesis.ledger_id, &s.validators_of(st), height))
            .await
            .map(Response::new)
    }

    type WatchCheckpointsStream = CheckpointStream;

    async fn watch_checkpoints(
        &self,
        req: Request<pb::WatchCheckpointsRequest>,
    ) -> Result<Response<Self::WatchCheckpointsStream>, Status> {
        let after = req.into_inner().after_height;
        let rx = self.services.watch_complete();
        let api = LedgerApi { services: self.services.clone() };
        // The latest complete checkpoint first (if newer than `after`), then each newer one.
        let start = if after == 0 { self.services.complete_height().saturating_sub(1) } else { after };
        let stream = futures::stream::unfold((api, rx, start), |(api, mut rx, sent)| async move {
            loop {
                let latest = *rx.borrow_and_update();
                if latest > sent {
                    let item = api
                        .read(move |st, s| {
                            query::get_checkpoint(st, &s.genesis.ledger_id, &s.validators_of(st), latest)
                        })
                        .await;
                    return Some((item, (api, rx, latest)));
                }
                rx.changed().await.ok()?;
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn inclusion_proof(
        &self,
        req: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProofResponse>, Status> {
        let req = req.into_inner();
        let complete = self.services.complete_height();
        self.read(move |st, s| query::inclusion_proof(st, &req, s.complete_log_size(st, complete)))
            .await
            .map(Response::new)
    }

    async fn consistency_proof(
        &self,
        req: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProofResponse>, Status> {
        let req = req.into_inner();
        let complete = self.services.complete_height();
        self.read(move |st, s| query::consistency_proof(st, &req, s.complete_log_size(st, complete)))
            .await
            .map(Response::new)
    }

    async fn get_bundle(&self, req: Request<pb::GetBundleRequest>) -> Result<Response<pb::GetBundleResponse>, Status> {
        let req = req.into_inner();
        let code = query::parse_code("code", &req.code)?;
        let format = pb::BundleFormat::try_from(req.format)
            .map_err(|_| Status::invalid_argument(format!("bundle format {} is not known", req.format)))?;
        let height = match req.height {
            0 => self.latest_complete()?,
            h => h,
        };
        self.read(move |st, s| {
            let (cp, complete) = query::checkpoint_at(st, &s.genesis.ledger_id, &s.validators_of(st), height)?;
            if !complete {
                return Err(Status::failed_precondition(format!(
                    "checkpoint at height {height} has no validator quorum yet"
                )));
            }
            let b = query::bundle(st, &code, cp)?;
            let bytes = match format {
                pb::BundleFormat::Json => b.to_json().into_bytes(),
                pb::BundleFormat::Compact => b.to_bytes(),
            };
            Ok(pb::GetBundleResponse {
                code: code.to_string(),
                format: format as i32,
                bundle: bytes,
                height,
                records: b.records.len() as u32,
            })
        })
        .await
        .map(Response::new)
    }
}

/// The stream of complete checkpoints.
pub type CheckpointStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::Checkpoint, Status>> + Send>>;

impl LedgerApi {
    /// Runs a read query against the store on the blocking pool (the store lock is a
    /// blocking lock that apply holds while it writes a block).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LedgerStore, &Services) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        self.services.check_serving()?;
        let s = self.services.clone();
        tokio::task::spawn_blocking(move || {
            let store = s.store.read().map_err(|_| Status::internal("store lock poisoned"))?;
            f(&store, &s)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    fn latest_complete(&self) -> Result<u64, Status> {
        match self.services.complete_height() {
            0 => Err(Status::not_found("no complete checkpoint yet")),
            h => Ok(h),
        }
    }
}
