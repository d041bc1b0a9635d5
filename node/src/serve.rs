//! The node's listeners: gRPC (the Ledger service, grpc.health.v1, server reflection) and
//! HTTP (health, Prometheus metrics, and the consumer page with its bundle, EPCIS document,
//! QR codes and static assets: [`crate::consumer`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use veritrace_proto::v1 as pb;

use crate::grpc::{GRPC_MESSAGE_BYTES_MAX, LedgerApi};
use crate::service::{RaftLogIndexes, Services};

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Serves gRPC on `listener` until shutdown.
pub async fn grpc(services: Arc<Services>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<pb::ledger_server::LedgerServer<LedgerApi>>().await;
    let reflection = match tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "building grpc reflection");
            return;
        }
    };
    let ledger = pb::ledger_server::LedgerServer::new(LedgerApi { services })
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ledger)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            stopped(shutdown),
        )
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "grpc server stopped");
    }
}

/// Serves HTTP on `listener` until shutdown: `/health`, `/metrics`, the consumer page at
/// GS1 Digital Link paths and its static assets, and a 404 page for anything else.
pub async fn http(services: Arc<Services>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(crate::consumer::routes())
        .fallback(crate::consumer::not_found)
        .with_state(services);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped(shutdown)).await {
        tracing::error!(error = %e, "http server stopped");
    }
}

async fn health(State(s): State<Arc<Services>>) -> (StatusCode, String) {
    let m = s.raft.metrics().borrow().clone();
    if let Err(fatal) = &m.running_state {
        // Until the process exits (`RunningNode::raft_stopped`), a leader it last knew is no
        // sign of health.
        return (StatusCode::SERVICE_UNAVAILABLE, format!("raft stopped: {}\n", crate::run::why_stopped(fatal)));
    }
    match m.current_leader {
        Some(_) => (StatusCode::OK, "ok\n".into()),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no leader\n".into()),
    }
}

async fn metrics(State(s): State<Arc<Services>>) -> (StatusCode, String) {
    let m = s.raft.metrics().borrow().clone();
    let s2 = s.clone();
    let Ok(Ok(head)) =
        tokio::task::spawn_blocking(move || s2.store.read().map(|st| st.head().clone()).map_err(|_| ())).await
    else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "store unavailable\n".into());
    };
    let leader = u8::from(m.state == openraft::ServerState::Leader);
    let raft_log = RaftLogIndexes::of(&m);
    let body = format!(
        "# HELP veritrace_height Height of the last applied block.\n# TYPE veritrace_height gauge\nveritrace_height {}\n\
         # HELP veritrace_log_size Records in the Merkle log.\n# TYPE veritrace_log_size gauge\nveritrace_log_size {}\n\
         # HELP veritrace_complete_checkpoint_height Latest checkpoint with a validator quorum.\n# TYPE veritrace_complete_checkpoint_height gauge\nveritrace_complete_checkpoint_height {}\n\
         # HELP veritrace_raft_term Current Raft term.\n# TYPE veritrace_raft_term gauge\nveritrace_raft_term {}\n\
         # HELP veritrace_is_leader 1 on the Raft leader.\n# TYPE veritrace_is_leader gauge\nveritrace_is_leader {}\n\
         # HELP veritrace_checkpoint_conflicts_total Checkpoint signatures received on a header other than this node's at that height (evidence kept in data_dir/evidence).\n# TYPE veritrace_checkpoint_conflicts_total counter\nveritrace_checkpoint_conflicts_total {}\n\
         # HELP veritrace_raft_last_log_index Index of the last entry in this node's Raft log.\n# TYPE veritrace_raft_last_log_index gauge\nveritrace_raft_last_log_index {}\n\
         # HELP veritrace_raft_applied_index Index of the last Raft entry applied.\n# TYPE veritrace_raft_applied_index gauge\nveritrace_raft_applied_index {}\n\
         # HELP veritrace_raft_snapshot_index Index of the last Raft entry in this node's snapshot.\n# TYPE veritrace_raft_snapshot_index gauge\nveritrace_raft_snapshot_index {}\n\
         # HELP veritrace_raft_purged_index Raft entries up to this index are deleted from the log.\n# TYPE veritrace_raft_purged_index gauge\nveritrace_raft_purged_index {}\n",
        head.height,
        head.log_size,
        s.complete_height(),
        m.current_term,
        leader,
        s.checkpoint_conflicts(),
        raft_log.last,
        raft_log.applied,
        raft_log.snapshot,
        raft_log.purged,
    );
    (StatusCode::OK, body)
}
