//! The consumer page in headless Chromium, without a network: pages rendered from bundles
//! of the ledger's test fixture, served by an in-process server with the node's static
//! assets, checked by the page's own in-browser verifier. An honest page verifies; every
//! kind of lie — in the bundle (a record altered, a record or a recall left out, a recall
//! hidden in a subject's state, an inclusion path altered, a forged checkpoint signature)
//! or in the page (a value changed, a failed test shown as passed, a record hidden) —
//! makes the browser's verdict fail and say what failed. The same against a real network
//! is `tests/tests/consumer.rs`.
//!
//! Needs Chromium (Debian package `chromium`, installed by scripts/setup.sh; or set
//! `VERITRACE_CHROMIUM` to a browser binary).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use veritrace_ledger::bundle::{TraceBundle, verify_bundle};
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::ids::SubjectId;
use veritrace_ledger::record::*;
use veritrace_ledger::testkit::{Fixture, T0_MS};
use veritrace_ledger::view::Outcome;
use veritrace_node::consumer::{ConsumerView, static_asset};
use veritrace_tests::browser::{dump_dom, verdict};

/// Two lots: L1 issued, certified, inspected (pass), shipped, received, cleared, one tin
/// sold; L2 issued, inspected (fail), recalled. Returns the fixture and the bundles of
/// the sold tin and of a tin of the recalled lot.
fn chains() -> (Fixture, TraceBundle, TraceBundle) {
    let fx = Fixture::new();
    let mut store = fx.mem_store();
    let (lot1, lot2) = (fx.lot_id("L1"), fx.lot_id("L2"));
    let (sold, recalled) = (fx.item("L1", 42), fx.item("L2", 7));
    let t0 = T0_MS + 10_000;
    let inspection = |lot: &SubjectId, no: &str, result: Verdict| {
        RecordBody::Inspection(InspectionReport {
            subjects: vec![lot.clone()],
            report_no: no.into(),
            standard: "GB 10765-2021".into(),
            result,
            test_items: vec![
                TestItem {
                    name: "protein".into(),
                    requirement: "1.8-3.0 g/100 kcal".into(),
                    measured: "2.2".into(),
                    verdict: Verdict::Pass,
                },
                TestItem {
                    name: "Cronobacter".into(),
                    requirement: "not detected in 10 g".into(),
                    measured: if result == Verdict::Pass { "not detected" } else { "detected" }.into(),
                    verdict: result,
                },
            ],
            document_digest: Hash32(*blake3::hash(no.as_bytes()).as_bytes()),
            valid_until_ms: Some(t0 + 365 * 86_400_000),
        })
    };
    let steps: Vec<(&str, RecordBody)> = vec![
        ("nutri", fx.issue_range("L1", 6_000)),
        (
            "nutri",
            RecordBody::CertifyConformity(CertifyConformity {
                gtin: fx.formula().gtin,
                lot: veritrace_ledger::ids::Lot::parse("L1").unwrap(),
                certificate_no: "COC-2026-0001".into(),
                standard: "GB 10765-2021".into(),
                statement: "factory inspection: every batch release test passed".into(),
            }),
        ),
        ("ccic-au", inspection(&lot1, "CCIC-AU-2026-0117", Verdict::Pass)),
        (
            "nutri",
            RecordBody::Ship(Ship {
                to: fx.org_id("importer"),
                subjects: vec![lot1.clone()],
                location: "Melbourne".into(),
            }),
        ),
        (
            "importer",
            RecordBody::Receive(Receive {
                from: fx.org_id("nutri"),
                subjects: vec![lot1.clone()],
                location: "Pingtan <port> & \"FTZ\"".into(),
            }),
        ),
        (
            "customs-pingtan",
            RecordBody::Regulatory(RegulatoryAction {
                action: RegulatoryKind::CustomsClearance,
                subjects: vec![lot1.clone()],
                reason: "pre-shipment inspection matches the consignment".into(),
                reference: "PT-2026-88".into(),
            }),
        ),
        ("importer", RecordBody::Sell(Sell { subjects: vec![sold.clone()], channel: "cross-border shop".into() })),
        ("nutri", fx.issue_range("L2", 1_200)),
        ("ccic-au", inspection(&lot2, "CCIC-AU-2026-0131", Verdict::Fail)),
        (
            "samr",
            RecordBody::Regulatory(RegulatoryAction {
                action: RegulatoryKind::Recall,
                subjects: vec![lot2.clone()],
                reason: "Cronobacter detected".into(),
                reference: "SAMR-2026-0042".into(),
            }),
        ),
    ];
    let mut header = None;
    for (i, (author, body)) in steps.into_iter().enumerate() {
        let t = t0 + 1_000 * i as u64;
        let block = fx.block(i as u64 + 1, t, vec![fx.sign(author, t, body)]);
        let (h, receipts) = store.apply_block(&block).unwrap();
        assert!(matches!(receipts[0].outcome, Outcome::Accepted { .. }), "{:?}", receipts[0]);
        header = Some(h);
    }
    let cp = fx.checkpoint(&header.unwrap());
    let a = store.bundle(&sold, cp.clone()).unwrap();
    let b = store.bundle(&recalled, cp).unwrap();
    (fx, a, b)
}

fn page_of(fx: &Fixture, b: &TraceBundle) -> String {
    let verdict = verify_bundle(b, &fx.genesis.validator_set());
    ConsumerView::build(&fx.genesis, &b.code.to_string(), b, &verdict).html()
}

/// An HTTP server of fixed pages (by path, the query ignored) and the node's static files.
async fn serve(pages: BTreeMap<String, (&'static str, String)>) -> String {
    async fn any(State(pages): State<Arc<BTreeMap<String, (&'static str, String)>>>, uri: Uri) -> Response {
        let path = uri.path();
        if let Some((kind, body)) = path.strip_prefix("/static/").and_then(static_asset) {
            return ([(header::CONTENT_TYPE, kind)], body).into_response();
        }
        match pages.get(path) {
            Some((kind, body)) => ([(header::CONTENT_TYPE, *kind)], body.clone()).into_response(),
            None => (StatusCode::NOT_FOUND, "not found").into_response(),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(any).with_state(Arc::new(pages));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn edit(bundle: &TraceBundle, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(&bundle.to_json()).unwrap();
    f(&mut v);
    serde_json::to_string_pretty(&v).unwrap()
}

/// `hex` with its last digit changed.
fn flip_last(hex: &str) -> String {
    let mut s = hex.to_string();
    let last = s.pop().unwrap();
    s.push(if last == '0' { '1' } else { '0' });
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_verifies_honest_pages_and_names_every_lie() {
    let (fx, sold, recalled) = chains();
    let profile = tempfile::tempdir().unwrap();
    let (sold_page, recalled_page) = (page_of(&fx, &sold), page_of(&fx, &recalled));
    let (sold_path, recalled_path) = (format!("/{}", sold.code), format!("/{}", recalled.code));
    let position = |b: &TraceBundle, kind: &str| {
        b.records.iter().position(|r| r.record.record.body.kind().as_str() == kind).unwrap()
    };
    let inspection = position(&sold, "inspection");
    let inspection_log = sold.records[inspection].log_index;
    let recall = position(&recalled, "regulatory");
    let recall_log = recalled.records[recall].log_index;
    let recalled_lot = recalled.subjects[1].subject.to_string();
    let verified = |b: &TraceBundle| {
        format!(
            "verified in this browser against checkpoint at height {}, signed by 3 of 3 validators",
            b.checkpoint.header.height
        )
    };

    // (name, path, page html, bundle json, expected state, expected words in the verdict)
    let cases: Vec<(&str, &str, String, String, &str, String)> = vec![
        ("honest", &sold_path, sold_page.clone(), sold.to_json(), "ok", verified(&sold)),
        ("honest, recalled", &recalled_path, recalled_page.clone(), recalled.to_json(), "ok", verified(&recalled)),
        (
            "an inspection result altered in the bundle",
            &sold_path,
            sold_page.clone(),
            edit(&sold, |v| v["records"][inspection]["record"]["record"]["body"]["inspection"]["result"] = "fail".into()),
            "fail",
            format!("record at log index {inspection_log}: signature of ccic-au does not verify"),
        ),
        (
            "a record left out of the bundle",
            &sold_path,
            sold_page.clone(),
            edit(&sold, |v| {
                v["records"].as_array_mut().unwrap().remove(inspection);
            }),
            "fail",
            format!("chain names log index {inspection_log}, which the bundle lacks"),
        ),
        (
            "a recall left out of the bundle and of the lot's chain",
            &recalled_path,
            recalled_page.clone(),
            edit(&recalled, |v| {
                v["records"].as_array_mut().unwrap().remove(recall);
                v["subjects"][1]["chain"].as_array_mut().unwrap().retain(|i| i.as_u64() != Some(recall_log));
            }),
            "fail",
            format!("subject {recalled_lot}: 2 records given, the ledger counts 3"),
        ),
        (
            "a recall hidden in the lot's state",
            &recalled_path,
            recalled_page.clone(),
            edit(&recalled, |v| v["subjects"][1]["state"]["regulatory"] = "clear".into()),
            "fail",
            format!("subject {recalled_lot}: state proof: the state map holds another value for this entry"),
        ),
        (
            "an inclusion path altered",
            &sold_path,
            sold_page.clone(),
            edit(&sold, |v| {
                let p = flip_last(v["records"][0]["inclusion"][0].as_str().unwrap());
                v["records"][0]["inclusion"][0] = p.into();
            }),
            "fail",
            format!("record at log index {}: inclusion proof: computes root", sold.records[0].log_index),
        ),
        (
            "a forged checkpoint signature",
            &sold_path,
            sold_page.clone(),
            edit(&sold, |v| {
                let s = flip_last(v["checkpoint"]["signatures"][0]["signature"].as_str().unwrap());
                v["checkpoint"]["signatures"][0]["signature"] = s.into();
            }),
            "fail",
            "checkpoint: signature of node \"node-1\" does not verify".into(),
        ),
        (
            "a value changed on the page",
            &sold_path,
            sold_page.replacen("data-vt=\"product.name\">Infant formula", "data-vt=\"product.name\">Organic formula", 1),
            sold.to_json(),
            "fail",
            "the page shows product.name \"Organic formula stage 1, 900 g\", the bundle says \"Infant formula stage 1, 900 g\""
                .into(),
        ),
        (
            "a failed test item shown as passed",
            &recalled_path,
            recalled_page.replacen("data-vt=\"test.1.verdict\">FAIL<", "data-vt=\"test.1.verdict\">PASS<", 1),
            recalled.to_json(),
            "fail",
            "shows test.1.verdict \"PASS\", the bundle says \"FAIL\"".into(),
        ),
        (
            "a record hidden on the page",
            &sold_path,
            hide_record(&sold_page, inspection_log),
            sold.to_json(),
            "fail",
            format!("the page leaves out the record at log index {inspection_log}"),
        ),
    ];
    for (name, path, page, bundle, state, words) in cases {
        let mut pages = BTreeMap::new();
        pages.insert(path.to_string(), ("text/html; charset=utf-8", page));
        pages.insert(format!("{path}/bundle"), ("application/json", bundle));
        let base = serve(pages).await;
        let dom = dump_dom(&format!("{base}{path}"), profile.path()).await;
        let (got_state, text) = verdict(&dom, "browser");
        assert_eq!(got_state, state, "{name}: {text}");
        assert!(text.contains(&words), "{name}: verdict {text:?} does not say {words:?}");
        // The node's own verdict is in the page as served: a page with a forged bundle
        // still says the node verified it, which is why the browser checks for itself.
        assert!(dom.contains("id=\"vt-server-text\">verified against checkpoint at height"), "{name}");
        if path == recalled_path {
            assert!(dom.contains("<strong>RECALLED</strong>"), "{name}: recall banner");
            assert!(dom.contains("data-vt=\"status\">recalled<"), "{name}");
        }
    }
}

/// The page without the row of the record at `log_index`.
fn hide_record(page: &str, log_index: u64) -> String {
    let start = page.find(&format!("<li class=\"rec\" data-vt-record=\"{log_index}\"")).expect("the record's row");
    let end = start + page[start..].find("</li>").expect("end of the row") + "</li>".len();
    format!("{}{}", &page[..start], &page[end..])
}
