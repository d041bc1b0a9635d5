//! `veritrace-node --config FILE`: runs one node until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(name = "veritrace-node", version, about = "veritrace ledger node")]
struct Args {
    /// The node's TOML config (docs/operations.md).
    #[arg(long)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,libp2p=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cfg = veritrace_node::config::Config::load(&args.config)?;
    let node = veritrace_node::run::start(cfg).await?;
    // Launchers (devnet, tests) read this line to learn the bound addresses.
    node.announce_serving();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stopped = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); None }
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupt: shutting down"); None }
        fatal = node.raft_stopped() => {
            tracing::error!(error = format!("{fatal:#}"), "raft stopped by itself: shutting down");
            Some(fatal)
        }
    };
    if tokio::time::timeout(veritrace_node::run::SHUTDOWN_GRACE, node.shutdown()).await.is_err() {
        tracing::warn!("shutdown took too long; exiting");
    }
    match stopped {
        None => Ok(()),
        // Exit 1 with the cause: a supervisor sees a failed node, not a healthy one.
        Some(fatal) => Err(fatal.context(
            "this node cannot go on: remove the cause below (a full disk: free space) and start it \
             again; it resumes from what it synced and catches up from its peers",
        )),
    }
}
