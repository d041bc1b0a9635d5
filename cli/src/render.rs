//! How records read for people: one line per record.

use veritrace_ledger::ids::SubjectId;
use veritrace_ledger::record::{CodeSet, GovernanceAction, RecordBody, RegulatoryKind, SignedRecord, Verdict};

/// Subjects listed in full in a one-line summary; beyond that only the count is shown.
const SUBJECTS_SHOWN_MAX: usize = 3;

fn subjects(list: &[SubjectId]) -> String {
    if list.len() <= SUBJECTS_SHOWN_MAX {
        list.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    } else {
        let shown: Vec<String> = list.iter().take(SUBJECTS_SHOWN_MAX).map(ToString::to_string).collect();
        format!("{} and {} more", shown.join(", "), list.len() - SUBJECTS_SHOWN_MAX)
    }
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
    }
}

/// What a record says, in a line.
pub fn summary(r: &SignedRecord) -> String {
    match &r.record.body {
        RecordBody::IssueCodes(i) => {
            let codes = match &i.codes {
                CodeSet::Range(range) => match (range.serial_at(0), range.last()) {
                    (Some(a), Some(b)) => format!("{} serials {a}..{b}", range.count),
                    _ => format!("{} serials", range.count),
                },
                CodeSet::Serials(s) => format!("{} listed serials", s.len()),
                CodeSet::Codes(c) => format!("{} codes ({})", c.len(), subjects(c)),
            };
            format!(
                "issued {codes} of {} lot {} ({}, produced {})",
                i.product.gtin, i.lot, i.product.name, i.production_date
            )
        }
        RecordBody::CertifyConformity(c) => {
            format!(
                "certified lot {} of {} conformant to {} (certificate {})",
                c.lot, c.gtin, c.standard, c.certificate_no
            )
        }
        RecordBody::Inspection(i) => format!(
            "inspection report {} to {}: {} ({} test items) on {}",
            i.report_no,
            i.standard,
            verdict(i.result),
            i.test_items.len(),
            subjects(&i.subjects)
        ),
        RecordBody::Ship(s) => format!("shipped {} to {}", subjects(&s.subjects), s.to),
        RecordBody::Receive(s) => format!("received {} from {}", subjects(&s.subjects), s.from),
        RecordBody::Aggregate(a) => format!("packed {} into 00/{}", subjects(&a.children), a.parent),
        RecordBody::Disaggregate(a) => format!("unpacked {} from 00/{}", subjects(&a.children), a.parent),
        RecordBody::Sell(s) if s.channel.is_empty() => format!("sold {}", subjects(&s.subjects)),
        RecordBody::Sell(s) => format!("sold {} via {}", subjects(&s.subjects), s.channel),
        RecordBody::Regulatory(a) => {
            let action = match a.action {
                RegulatoryKind::Hold => "held",
                RegulatoryKind::Release => "released",
                RegulatoryKind::Recall => "recalled",
                RegulatoryKind::CustomsClearance => "cleared through customs",
            };
            let reference = if a.reference.is_empty() { String::new() } else { format!(" [{}]", a.reference) };
            format!("{action} {}: {}{reference}", subjects(&a.subjects), a.reason)
        }
        RecordBody::Governance(g) => {
            let what = match g {
                GovernanceAction::AddOrganisation(o) => format!("added organisation {} ({})", o.id, o.name),
                GovernanceAction::UpdateOrganisation(o) => format!("updated organisation {} ({})", o.id, o.name),
                GovernanceAction::AddKey { org, key } => format!("added key {} of {org}", key.key_id),
                GovernanceAction::RevokeKey { org, key_id } => format!("revoked key {key_id} of {org}"),
                GovernanceAction::AddValidator(v) => format!("added validator {} run by {}", v.node_id, v.org),
                GovernanceAction::RemoveValidator { node_id } => format!("removed validator {node_id}"),
            };
            let approvers: Vec<&str> = r.approvals.iter().map(|a| a.org.as_str()).collect();
            if approvers.is_empty() { what } else { format!("{what}, approved by {}", approvers.join(", ")) }
        }
    }
}
