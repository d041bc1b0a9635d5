//! The `veritrace` binary end to end: exit codes, messages, files.

use std::process::{Command, Output};

use veritrace_ledger::testkit::{Fixture, T0_MS};

fn veritrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veritrace")).args(args).output().expect("run veritrace")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn key_gen_writes_a_private_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.json");
    let p = path.to_str().unwrap();
    let o = veritrace(&["key", "gen", "--out", p, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let public = v["public_key"].as_str().unwrap().to_string();
    assert_eq!(public.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let o = veritrace(&["key", "show", p]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), public);
    let o = veritrace(&["key", "gen", "--out", p]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("k.json"), "{}", text(&o));
}

#[test]
fn code_parse_prints_the_canonical_form_or_names_the_bad_part() {
    let o = veritrace(&["code", "parse", "https://id.example.com/01/9312345000012/21/A%2F1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "01/09312345000012/21/A%2F1");
    let o = veritrace(&["code", "parse", "01/09312345000013/21/X"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("check digit"), "{}", text(&o));
}

#[test]
fn genesis_check_accepts_a_good_genesis_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let path = dir.path().join("genesis.json");
    std::fs::write(&path, fx.genesis.to_json()).unwrap();
    let o = veritrace(&["genesis", "check", path.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hash"], fx.genesis.hash().to_hex());
    let mut bad = fx.genesis.clone();
    bad.governance.quorum = 9;
    std::fs::write(&path, bad.to_json()).unwrap();
    let o = veritrace(&["genesis", "check", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("quorum 9"), "{}", text(&o));
}

#[test]
fn verify_accepts_an_honest_bundle_and_refuses_a_tampered_one() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let mut store = fx.mem_store();
    let t = T0_MS + 5_000;
    let (header, _) = store.apply_block(&fx.block(1, t, vec![fx.sign("nutri", t, fx.issue_range("L1", 100))])).unwrap();
    let bundle = store.bundle(&fx.item("L1", 7), fx.checkpoint(&header)).unwrap();
    let genesis = dir.path().join("genesis.json");
    std::fs::write(&genesis, fx.genesis.to_json()).unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(&good, bundle.to_json()).unwrap();
    let bin = dir.path().join("good.bin");
    std::fs::write(&bin, bundle.to_bytes()).unwrap();
    for f in [&good, &bin] {
        let o = veritrace(&["verify", f.to_str().unwrap(), "--genesis", genesis.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("signed by 3 of 3 validators"), "{}", text(&o));
    }
    let mut forged = bundle.clone();
    forged.checkpoint.signatures.truncate(1);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, forged.to_json()).unwrap();
    let o = veritrace(&["verify", bad.to_str().unwrap(), "--genesis", genesis.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("quorum"), "{}", text(&o));
    std::fs::write(&bad, "{ not json").unwrap();
    let o = veritrace(&["verify", bad.to_str().unwrap(), "--genesis", genesis.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
