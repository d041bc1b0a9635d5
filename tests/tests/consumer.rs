//! The consumer page on a real network, after the devnet demo has played its chains
//! (docs/consumer.md):
//!
//! - over HTTP, on a validator and on an observer: the page as HTML and as JSON, the
//!   bundle it links to (verified here offline), QR codes as PNG (decoded with zbarimg:
//!   it carries the Digital Link URI, under whatever host was asked) and SVG, the static
//!   assets, a 404 page for an unknown code or a wrong lot, a 400 page for a bad check
//!   digit or serial character;
//! - in headless Chromium: the page of a sold tin shows its product, inspection and both
//!   verdicts, the browser's own included (a screenshot is saved and its path printed); a
//!   tin of the recalled lot shows the recall banner; the same page served by a test
//!   server with a tampered bundle gets a failing browser verdict that names the record.
//!
//! Needs Chromium and zbarimg (Debian packages `chromium` and `zbar-tools`, installed by
//! scripts/setup.sh; `VERITRACE_CHROMIUM` may name another browser binary).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use veritrace_devnet::Network;
use veritrace_devnet::demo::{CodeReport, DemoReport, DemoTarget, play};
use veritrace_ledger::bundle::{TraceBundle, verify_bundle};
use veritrace_tests::browser::{dump_dom, screenshot, tool, verdict};
use veritrace_tests::*;

/// Longest wait for one HTTP exchange with a node.
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

// ---- a small HTTP/1.1 client and server --------------------------------------------------

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).unwrap_or_default()
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not json ({e}): {}", self.text()))
    }
}

/// `GET path` with extra request headers (a `Host` among them replaces the default).
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: {addr}\r\n"));
        }
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange).await.unwrap_or_else(|_| panic!("GET {path}: no answer"));
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = std::str::from_utf8(&raw[..end]).expect("utf-8 headers");
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Resp { status, headers, body }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line]).unwrap().trim(), 16).expect("chunk size");
        rest = &rest[line + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// A test server: fixed answers by path (the query ignored), `/static/...` fetched from
/// the node at `upstream`. Returns its address.
async fn serve(pages: BTreeMap<String, (&'static str, Vec<u8>)>, upstream: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pages = Arc::new(pages);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let pages = pages.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
                let target = line.split(' ').nth(1).unwrap_or("/").to_string();
                let path = target.split('?').next().unwrap_or_default().to_string();
                let (status, kind, body) = if path.starts_with("/static/") {
                    let r = get(upstream, &target, &[]).await;
                    (r.status, r.header("content-type").to_string(), r.body)
                } else {
                    match pages.get(&path) {
                        Some((kind, body)) => (200, kind.to_string(), body.clone()),
                        None => (404, "text/plain".into(), b"not found".to_vec()),
                    }
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    addr
}

// ---- tools -------------------------------------------------------------------------------

fn zbar_decode(png: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qr.png");
    std::fs::write(&file, png).unwrap();
    let out = std::process::Command::new(tool("VERITRACE_ZBARIMG", &["zbarimg"], "zbar-tools"))
        .args(["--quiet", "--raw"])
        .arg(&file)
        .output()
        .expect("zbarimg runs");
    assert!(out.status.success(), "zbarimg could not read the qr code: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

// ---- the network -------------------------------------------------------------------------

/// What a page says once every validator has signed the checkpoint it shows.
const ALL_SIGNED: &str = "signed by 3 of 3 validators";

/// A network with the demo played through its leader, once every validator has signed the
/// last head. Pages show the latest complete checkpoint, which a quorum (2 of 3) completes;
/// the third signature lands a moment later, and the tests look for all three.
async fn demo_network(observers: u32) -> (Network, DemoReport) {
    let net = network(3, observers, None);
    let target = DemoTarget::of(&net, None, WAIT).expect("demo target");
    let report = play(&target, &mut |_| {}).await.expect("the demo plays");
    assert!(report.failures().is_empty(), "{:?}", report.failures());
    let page = format!("/{}", code(&report, "a tin sold").code);
    wait_for(&format!("{page} to name all three validators' signatures"), async || {
        get(report.http, &page, &[HTML]).await.text().contains(ALL_SIGNED).then_some(())
    })
    .await;
    (net, report)
}

fn code<'a>(r: &'a DemoReport, label_starts: &str) -> &'a CodeReport {
    r.codes.iter().find(|c| c.label.starts_with(label_starts)).unwrap_or_else(|| panic!("no demo code {label_starts}"))
}

const JSON: (&str, &str) = ("Accept", "application/json");
const HTML: (&str, &str) = ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_page_json_bundle_qr_and_error_pages() {
    let (net, report) = demo_network(1).await;
    let http = report.http;
    let sold = &code(&report, "a tin sold").code;
    let recalled = &code(&report, "a tin of the recalled lot").code;
    let board = &code(&report, "a sheet of board").code;
    assert_eq!(code(&report, "a tin sold").page_status, Some(200), "the demo found the page");

    // The page, as HTML.
    let page = get(http, &format!("/{sold}"), &[HTML]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert!(page.header("content-security-policy").contains("script-src 'self'"));
    let html = page.text();
    for needle in [
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "data-vt=\"product.name\">Southern Cross infant formula, stage 1 (0-6 months), 900 g<",
        "data-vt=\"product.standard\">GB 10765-2021<",
        "data-vt=\"product.producer\">Southern Cross Nutrition<",
        "<b data-vt=\"what\">Inspection report</b>",
        "data-vt=\"result\">PASS<",
        "<strong>SOLD</strong>",
        "<b data-vt=\"what\">Customs clearance</b>",
        "id=\"vt-server-text\">verified against checkpoint at height",
        ALL_SIGNED,
        "<script type=\"module\" src=\"/static/verify.js\"></script>",
    ] {
        assert!(html.contains(needle), "the page lacks {needle:?}");
    }

    // The same resource as JSON.
    let j = get(http, &format!("/{sold}"), &[JSON]).await;
    assert_eq!((j.status, j.header("content-type")), (200, "application/json"));
    let v = j.json();
    assert_eq!(v["code"], sold.as_str());
    assert_eq!(v["status"], "sold");
    assert_eq!(v["product"]["name"], "Southern Cross infant formula, stage 1 (0-6 months), 900 g");
    assert_eq!(v["verdict"]["verified"], true, "{}", v["verdict"]);
    assert_eq!(v["trust"]["validators"].as_array().unwrap().len(), 3);
    let records = v["records"].as_array().unwrap();
    let inspection = records.iter().find(|r| r["kind"] == "inspection").expect("an inspection");
    assert_eq!((inspection["result"].as_str(), inspection["by"]["id"].as_str()), (Some("pass"), Some("ccic-au")));
    let kinds: Vec<&str> = records.iter().filter_map(|r| r["kind"].as_str()).collect();
    for k in ["issue_codes", "inspection", "ship", "receive", "regulatory", "sell"] {
        assert!(kinds.contains(&k), "no {k} record in {kinds:?}");
    }

    // The bundle it links to verifies offline against the genesis validators, and holds
    // the records the page shows.
    let link = v["links"]["bundle"].as_str().unwrap().to_string();
    let height: u64 = v["checkpoint"]["height"].as_u64().unwrap();
    assert!(link.ends_with(&format!("/bundle?height={height}")), "{link}");
    let b = get(http, &link, &[]).await;
    assert_eq!((b.status, b.header("content-type")), (200, "application/json"));
    assert!(b.header("cache-control").contains("immutable"));
    let bundle = TraceBundle::from_json(&b.text()).expect("a bundle");
    let verdict = verify_bundle(&bundle, &net.genesis().validator_set()).expect("the bundle verifies");
    assert_eq!((verdict.height, verdict.records as usize), (height, records.len()));
    let latest = get(http, &format!("/{sold}/bundle"), &[]).await;
    assert_eq!((latest.status, latest.header("cache-control")), (200, "no-store"));
    let far = get(http, &format!("/{sold}/bundle?height=99999999"), &[]).await;
    assert_eq!(far.status, 404, "{}", far.text());

    // Other codes of the demo: the recall, the certificate of conformity.
    let r = get(http, &format!("/{recalled}"), &[JSON]).await.json();
    assert_eq!(r["status"], "recalled");
    let recall = r["records"].as_array().unwrap().iter().find(|x| x["action"] == "recall").expect("the recall");
    assert_eq!(recall["by"]["id"], "samr");
    assert!(get(http, &format!("/{recalled}"), &[]).await.text().contains("<strong>RECALLED</strong>"));
    let bj = get(http, &format!("/{board}"), &[JSON]).await.json();
    assert!(bj["records"].as_array().unwrap().iter().any(|x| x["kind"] == "certify_conformity"), "{bj}");

    // Every node serves the page: the observer too.
    let observer = net.observers()[0].clone();
    // Its checkpoint signatures arrive a moment after the blocks: wait for one as high.
    checkpoint_at(&net, &observer, height).await;
    let o = get(net.http_addr(&observer).unwrap(), &format!("/{sold}"), &[JSON]).await;
    assert_eq!(o.status, 200, "{}", o.text());
    assert_eq!(o.json()["verdict"]["verified"], true);

    // The path with its lot before the serial; a wrong lot is not this item.
    let (gtin, serial) = sold.strip_prefix("01/").unwrap().split_once("/21/").unwrap();
    let lot = v["product"]["lot"].as_str().unwrap();
    let with_lot = get(http, &format!("/01/{gtin}/10/{lot}/21/{serial}"), &[JSON]).await;
    assert_eq!(with_lot.status, 200, "{}", with_lot.text());
    assert_eq!(with_lot.json()["links"]["page"], format!("/01/{gtin}/10/{lot}/21/{serial}"));
    let wrong = get(http, &format!("/01/{gtin}/10/NOT-{lot}/21/{serial}"), &[]).await;
    assert_eq!(wrong.status, 404);
    assert!(wrong.text().contains(&format!("is not an item of lot NOT-{lot}")), "{}", wrong.text());

    // QR codes: the Digital Link URI under the host asked for.
    let png = get(http, &format!("/{sold}/qr.png"), &[("Host", "id.example.com")]).await;
    assert_eq!((png.status, png.header("content-type")), (200, "image/png"));
    assert_eq!(zbar_decode(&png.body), format!("http://id.example.com/{sold}"));
    let png = get(http, &format!("/{sold}/qr.png"), &[]).await;
    assert_eq!(zbar_decode(&png.body), format!("http://{http}/{sold}"));
    let https = get(
        http,
        &format!("/01/{gtin}/10/{lot}/21/{serial}/qr.png"),
        &[("Host", "id.example.com"), ("X-Forwarded-Proto", "https")],
    )
    .await;
    assert_eq!(zbar_decode(&https.body), format!("https://id.example.com/01/{gtin}/10/{lot}/21/{serial}"));
    let svg = get(http, &format!("/{sold}/qr.svg"), &[]).await;
    assert_eq!((svg.status, svg.header("content-type")), (200, "image/svg+xml"));
    assert!(svg.text().contains("<svg"));
    // `veritrace qr` makes the label offline: scanned, it leads to this node's page.
    let cli = veritrace_devnet::locate::node_binary_for_tests().unwrap().with_file_name("veritrace");
    let dir = tempfile::tempdir().unwrap();
    let (png_file, svg_file) = (dir.path().join("label.png"), dir.path().join("label.svg"));
    let base = format!("http://{http}");
    for (file, extra) in [(&png_file, None), (&svg_file, Some("--svg"))] {
        let out = std::process::Command::new(&cli)
            .args(["qr", sold.as_str(), "--base", &base, "-o"])
            .arg(file)
            .args(extra)
            .output()
            .expect("veritrace qr runs");
        assert!(out.status.success(), "veritrace qr: {}", String::from_utf8_lossy(&out.stderr));
    }
    let scanned = zbar_decode(&std::fs::read(&png_file).unwrap());
    assert_eq!(scanned, format!("{base}/{sold}"));
    assert!(std::fs::read_to_string(&svg_file).unwrap().contains("<svg"));
    let page = get(http, scanned.strip_prefix(&base).unwrap(), &[HTML]).await;
    assert_eq!(page.status, 200, "{}", page.text());

    // Unknown codes: 404 pages that say so, as HTML and as JSON.
    let never = format!("01/{gtin}/21/NEVER-ISSUED");
    let e = get(http, &format!("/{never}"), &[HTML]).await;
    assert_eq!((e.status, e.header("content-type")), (404, "text/html; charset=utf-8"));
    assert!(e.text().contains("Unknown code") && e.text().contains("never issued"), "{}", e.text());
    let e = get(http, &format!("/{never}"), &[JSON]).await.json();
    assert_eq!(e["status"], 404);
    assert!(e["message"].as_str().unwrap().contains(&never), "{e}");
    assert_eq!(get(http, &format!("/{never}/qr.png"), &[]).await.status, 404);
    assert_eq!(get(http, &format!("/{never}/bundle"), &[]).await.status, 404);

    // Malformed paths: 400 pages that say what is wrong.
    let bad_check = format!("/01/{}{}/21/{serial}", &gtin[..13], (gtin.as_bytes()[13] - b'0' + 1) % 10);
    let e = get(http, &bad_check, &[]).await;
    assert_eq!(e.status, 400);
    assert!(e.text().contains("This is not a valid product code") && e.text().contains("check digit"), "{}", e.text());
    let e = get(http, &format!("/01/{gtin}/21/bad%20serial"), &[]).await;
    assert_eq!(e.status, 400);
    assert!(e.text().contains("serial") && e.text().contains("character &#39; &#39;"), "{}", e.text());
    let e = get(http, &format!("/01/{gtin}/21/bad%20serial"), &[JSON]).await;
    assert_eq!((e.status, e.header("content-type")), (400, "application/json"));
    assert!(e.json()["message"].as_str().unwrap().contains("serial"));
    assert_eq!(get(http, &format!("/{sold}/qr.gif"), &[]).await.status, 400);
    assert_eq!(get(http, &format!("/{sold}/bundle?page=2"), &[]).await.status, 400);

    // Static assets are built in; anything else is a 404 page.
    let js = get(http, "/static/verify.js", &[]).await;
    assert_eq!((js.status, js.header("content-type")), (200, "text/javascript; charset=utf-8"));
    for asset in ["vendor/noble-hashes/blake3.js", "vendor/noble-ed25519/index.js", "vendor/noble-ed25519/LICENSE"] {
        assert_eq!(get(http, &format!("/static/{asset}"), &[]).await.status, 200, "{asset}");
    }
    assert_eq!(get(http, "/static/nothing.js", &[]).await.status, 404);
    let e = get(http, "/nothing", &[]).await;
    assert!(e.status == 404 && e.text().contains("Page not found"), "{}", e.text());
    assert_eq!(get(http, "/health", &[]).await.status, 200, "the node's own routes stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn browser_verifies_the_demo_pages_and_fails_a_tampered_bundle() {
    let (net, report) = demo_network(0).await;
    let http = report.http;
    let profile = tempfile::tempdir().unwrap();
    let shots = std::env::temp_dir().join(format!("veritrace-consumer-{}", std::process::id()));
    std::fs::create_dir_all(&shots).unwrap();

    // A sold tin: product, inspection, both verdicts.
    let sold = code(&report, "a tin sold").code.clone();
    let url = format!("http://{http}/{sold}");
    let dom = dump_dom(&url, profile.path()).await;
    for needle in [
        "Southern Cross infant formula, stage 1 (0-6 months), 900 g",
        "<b data-vt=\"what\">Inspection report</b>",
        "data-vt=\"result\">PASS<",
        "data-vt=\"product.producer\">Southern Cross Nutrition<",
    ] {
        assert!(dom.contains(needle), "the page lacks {needle:?}");
    }
    let (state, text) = verdict(&dom, "server");
    assert!(state == "ok" && text.starts_with("verified against checkpoint at height"), "{text}");
    let (state, text) = verdict(&dom, "browser");
    assert_eq!(state, "ok", "browser verdict: {text}");
    assert!(text.starts_with("verified in this browser against checkpoint at height"), "{text}");
    assert!(text.ends_with(ALL_SIGNED), "{text}");
    let shot = shots.join("sold-tin.png");
    screenshot(&url, &shot, profile.path()).await;
    println!("screenshot of {url}: {}", shot.display());

    // A tin of the recalled lot: the banner, and still verified.
    let recalled = code(&report, "a tin of the recalled lot").code.clone();
    let url = format!("http://{http}/{recalled}");
    let dom = dump_dom(&url, profile.path()).await;
    assert!(dom.contains("<strong>RECALLED</strong>"), "no recall banner");
    assert!(dom.contains("data-vt=\"status\">recalled<"));
    assert!(dom.contains("data-vt=\"result\">FAIL<"), "the failed inspection");
    assert_eq!(verdict(&dom, "browser").0, "ok", "{}", verdict(&dom, "browser").1);
    let shot = shots.join("recalled-tin.png");
    screenshot(&url, &shot, profile.path()).await;
    println!("screenshot of {url}: {}", shot.display());

    // The sold tin's page served by another server, with the inspection's result changed
    // in the bundle: the node's verdict in the page still says verified, the browser's
    // says what failed.
    let page = get(http, &format!("/{sold}"), &[HTML]).await.body;
    let view = get(http, &format!("/{sold}"), &[JSON]).await.json();
    let link = view["links"]["bundle"].as_str().unwrap().to_string();
    let mut bundle: Value = get(http, &link, &[]).await.json();
    let records = bundle["records"].as_array_mut().unwrap();
    let inspection = records.iter_mut().find(|r| r["record"]["record"]["body"].get("inspection").is_some()).unwrap();
    let index = inspection["log_index"].as_u64().unwrap();
    inspection["record"]["record"]["body"]["inspection"]["result"] = "fail".into();
    let mut pages = BTreeMap::new();
    pages.insert(format!("/{sold}"), ("text/html; charset=utf-8", page));
    pages.insert(link.split('?').next().unwrap().to_string(), ("application/json", bundle.to_string().into_bytes()));
    let liar = serve(pages, http).await;
    let url = format!("http://{liar}/{sold}");
    let dom = dump_dom(&url, profile.path()).await;
    assert_eq!(verdict(&dom, "server").0, "ok", "the copied page keeps the node's verdict");
    let (state, text) = verdict(&dom, "browser");
    assert_eq!(state, "fail", "a tampered bundle verified in the browser: {text}");
    assert_eq!(
        text,
        format!("NOT verified in this browser: record at log index {index}: signature of ccic-au does not verify")
    );
    let shot = shots.join("tampered-bundle.png");
    screenshot(&url, &shot, profile.path()).await;
    println!("screenshot of {url}: {}", shot.display());
    drop(net);
}
