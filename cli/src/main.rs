//! `veritrace`: the command-line client. A thin layer over the library crates: parse,
//! validate, act. Human output by default, `--json` for scripts (one JSON object per line).
//!
//! Offline commands (keys, codes, bundle verification) live in [`local`], genesis files in
//! [`genesis`], QR codes for labels in [`qr`]; the commands that talk to a node over gRPC
//! in [`records`] (signing and submitting one record per kind), [`import`] (records from a
//! JSON-lines file, in batches), [`gov`] (governance), [`query`] (traces,
//! proofs, bundles, checkpoints), [`audit`] (the checkpoint monitor) and [`epcis`] (EPCIS
//! 2.0 export and import), all through [`client`]; [`bench`](mod@bench) measures a network (and etcd). Exit codes are in [`exit`] and docs/cli.md.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod bench;
mod client;
mod devnet_cmd;
mod epcis;
mod exit;
mod genesis;
mod gov;
mod import;
mod local;
mod output;
mod qr;
mod query;
mod records;
mod render;

use exit::Failure;
use output::Out;

#[derive(Parser)]
#[command(name = "veritrace", version, about = "veritrace traceability ledger client")]
struct Cli {
    /// Print machine-readable JSON instead of text (one object per line).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start, inspect and break a local network (docs/devnet.md).
    #[command(subcommand)]
    Devnet(devnet_cmd::DevnetCmd),
    /// Signing keys.
    #[command(subcommand)]
    Key(local::KeyCmd),
    /// Genesis files: check one, or write one step by step.
    #[command(subcommand)]
    Genesis(genesis::GenesisCmd),
    /// Trace codes.
    #[command(subcommand)]
    Code(local::CodeCmd),
    /// Verify a trace bundle offline against the validators of a genesis file.
    Verify(local::VerifyArgs),
    /// The QR code (PNG or SVG) of a code's GS1 Digital Link URI, for labels.
    Qr(qr::QrArgs),

    /// Issue codes for the items of a lot (producer).
    Issue(records::IssueArgs),
    /// Certify a lot's conformity (its producer).
    Certify(records::CertifyArgs),
    /// Record an inspection report on lots or codes (inspection body).
    Inspect(records::InspectArgs),
    /// Ship subjects to another organisation (their custodian).
    Ship(records::ShipArgs),
    /// Receive subjects shipped to you (the named recipient).
    Receive(records::ReceiveArgs),
    /// Pack items or lots into a logistic unit (their custodian).
    Aggregate(records::AggregationArgs),
    /// Unpack items or lots from a logistic unit (its custodian).
    Disaggregate(records::AggregationArgs),
    /// Sell units to consumers: they leave the chain (their custodian).
    Sell(records::SellArgs),
    /// Hold lots or codes: nothing held ships or sells (regulator).
    Hold(records::RegulatoryArgs),
    /// Release a hold (regulator).
    Release(records::RegulatoryArgs),
    /// Recall lots or codes, for good (regulator).
    Recall(records::RegulatoryArgs),
    /// Customs clearance of lots or codes (regulator).
    Clear(records::RegulatoryArgs),
    /// Sign and submit the records of a JSON-lines file (one record body a line), in batches.
    Import(import::ImportArgs),
    /// Governance: organisations, keys and validators; needs a quorum of regulators.
    #[command(subcommand)]
    Gov(gov::GovCmd),

    /// A node's status: role, leader, height, roots, checkpoint, membership.
    Status(query::StatusArgs),
    /// The receipt of a record by id.
    Receipt(query::ReceiptArgs),
    /// The whole history of a code, with its lot's and logistic unit's, and their state.
    Trace(query::TraceArgs),
    /// Who holds the units of a lot now, and how many.
    RecallImpact(query::RecallImpactArgs),
    /// Records made by one organisation, in log order.
    Records(query::RecordsArgs),
    /// A checkpoint (the latest complete one, or at a height), optionally verified.
    Checkpoint(query::CheckpointArgs),
    /// Inclusion proof of a record, verified here against a checkpoint.
    Proof(query::ProofArgs),
    /// Export the trace bundle of a code to a file, for offline `verify`.
    Bundle(query::BundleArgs),
    /// Check that every new checkpoint is signed and consistent with the last one seen.
    Audit(audit::AuditArgs),
    /// EPCIS 2.0: export a trace as JSON-LD events, import events as signed records.
    #[command(subcommand)]
    Epcis(epcis::EpcisCmd),

    /// Committed records/s and commit latency of a network under N concurrent clients.
    Bench(bench::BenchArgs),
    /// The same measure of an etcd cluster's puts, for comparison (docs/performance.md).
    BenchEtcd(bench::BenchEtcdArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return output::usage_error(e),
    };
    let out = Out::new(cli.json);
    match run(&cli, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => out.failure(f),
    }
}

fn run(cli: &Cli, out: &Out) -> Result<(), Failure> {
    match &cli.cmd {
        Cmd::Devnet(cmd) => devnet_cmd::run(cmd, out),
        Cmd::Key(cmd) => local::key(cmd, out),
        Cmd::Genesis(cmd) => genesis::run(cmd, out),
        Cmd::Code(cmd) => local::code(cmd, out),
        Cmd::Verify(args) => local::verify(args, out),
        Cmd::Qr(args) => qr::run(args, out),

        Cmd::Issue(a) => records::issue(a, out),
        Cmd::Certify(a) => records::certify(a, out),
        Cmd::Inspect(a) => records::inspect(a, out),
        Cmd::Ship(a) => records::ship(a, out),
        Cmd::Receive(a) => records::receive(a, out),
        Cmd::Aggregate(a) => records::aggregate(a, out),
        Cmd::Disaggregate(a) => records::disaggregate(a, out),
        Cmd::Sell(a) => records::sell(a, out),
        Cmd::Hold(a) => records::regulatory(a, veritrace_ledger::record::RegulatoryKind::Hold, out),
        Cmd::Release(a) => records::regulatory(a, veritrace_ledger::record::RegulatoryKind::Release, out),
        Cmd::Recall(a) => records::regulatory(a, veritrace_ledger::record::RegulatoryKind::Recall, out),
        Cmd::Clear(a) => records::regulatory(a, veritrace_ledger::record::RegulatoryKind::CustomsClearance, out),
        Cmd::Import(a) => import::run(a, out),
        Cmd::Gov(cmd) => gov::run(cmd, out),

        Cmd::Status(a) => query::status(a, out),
        Cmd::Receipt(a) => query::receipt(a, out),
        Cmd::Trace(a) => query::trace(a, out),
        Cmd::RecallImpact(a) => query::recall_impact(a, out),
        Cmd::Records(a) => query::records(a, out),
        Cmd::Checkpoint(a) => query::checkpoint(a, out),
        Cmd::Proof(a) => query::proof(a, out),
        Cmd::Bundle(a) => query::bundle(a, out),
        Cmd::Audit(a) => audit::run(a, out),
        Cmd::Epcis(cmd) => epcis::run(cmd, out),
        Cmd::Bench(a) => bench::run(a, out),
        Cmd::BenchEtcd(a) => bench::run_etcd(a, out),
    }
}
