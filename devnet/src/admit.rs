//! Growing a running network: a node the genesis does not name, started, then admitted as
//! a validator by a governance record, the way an inspection body that joins the scheme
//! later would be.
//!
//! [`add_validator`] runs the whole procedure and returns once the new node is a Raft
//! voter and holds the same ledger as everyone else. Until the governance record commits,
//! every peer refuses the new node's connections; once it does, the leader adds it to Raft
//! as a learner, sends it the ledger (by snapshot or log), and makes it a voter when it
//! has caught up.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use veritrace_ledger::org::Validator;
use veritrace_ledger::record::GovernanceAction;
use veritrace_proto::v1 as pb;

use crate::client::{GRPC_COMMIT_TIMEOUT, block_on, connect, status_blocking, submit_until_decided};
use crate::demo::DemoTarget;
use crate::network::{Network, now_ms};

/// What [`add_validator`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Admitted {
    pub node_id: String,
    pub org: String,
    /// The node's public key, hex.
    pub public_key: String,
    /// The node the governance record was submitted through (the leader then).
    pub via: String,
    /// Log position of the governance record.
    pub log_index: u64,
    /// Raft voters once the node is one.
    pub voters: Vec<String>,
    /// Height every node agreed on at the end.
    pub height: u64,
    /// From the start of the node to its holding the same ledger as a voter.
    pub elapsed_ms: u64,
}

/// Adds a node operated by `org` ([`Network::add_node`]), submits the governance record
/// that admits it as a validator ([`Network::governance`]) through the leader, and waits,
/// up to `timeout` for each step, until the node is a voter at the same height and roots
/// as every other running node.
pub fn add_validator(net: &Network, org: &str, timeout: Duration) -> Result<Admitted> {
    let started = Instant::now();
    let v: Validator = net.add_node(org)?;
    let node = v.node_id.to_string();
    let target = DemoTarget::of(net, None, timeout)?;
    let signed = net.governance(now_ms(), GovernanceAction::AddValidator(v.clone()))?;
    let receipt = block_on(async {
        let mut client = connect(target.grpc, GRPC_COMMIT_TIMEOUT).await?;
        submit_until_decided(&mut client, &signed, timeout, &target.via).await
    })?;
    if receipt.status != pb::ReceiptStatus::Accepted as i32 {
        bail!("the governance record admitting {node} was refused: {}", receipt.message);
    }
    let mut voters = Vec::new();
    net.wait_until(timeout, &format!("{node} to become a raft voter"), |n| {
        let Some(leader) = n.leader() else { return Ok(false) };
        voters = status_blocking(n.grpc_addr(&leader)?).map(|s| s.voters).unwrap_or_default();
        Ok(voters.contains(&node))
    })?;
    let height = net.wait_for_same_height(timeout).with_context(|| format!("{node} catching up"))?;
    Ok(Admitted {
        node_id: node,
        org: v.org.to_string(),
        public_key: v.public_key.to_hex(),
        via: target.via,
        log_index: receipt.log_index,
        voters,
        height,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}
