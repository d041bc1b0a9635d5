//! Inputs the fuzz targets (`ledger/fuzz/`) once crashed on, kept as tests: every file
//! under `ledger/fuzz/regressions/<target>/` goes through the target's body
//! (`veritrace_ledger::fuzzing`), and so does each seed of the corpora. With
//! `VERITRACE_WRITE_FUZZ_CORPUS=1` the seeds are (re)written to `ledger/fuzz/corpus/`.

use std::fs;
use std::path::Path;

use veritrace_ledger::fuzzing::{TARGETS, seeds};

fn fuzz_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz"))
}

#[test]
fn every_regression_input_passes_its_target() {
    let mut ran = 0;
    for (target, body) in TARGETS {
        let dir = fuzz_dir().join("regressions").join(target);
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        let mut paths: Vec<_> = entries.map(|e| e.expect("regression dir entry").path()).collect();
        paths.sort();
        for path in paths {
            let data = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            eprintln!("{target}: {}", path.display());
            body(&data);
            ran += 1;
        }
    }
    eprintln!("{ran} regression inputs");
}

#[test]
fn every_seed_passes_its_target() {
    let write = std::env::var_os("VERITRACE_WRITE_FUZZ_CORPUS").is_some_and(|v| v == "1");
    for (target, body) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        for (i, seed) in seeds(target).into_iter().enumerate() {
            body(&seed);
            if write {
                fs::create_dir_all(&dir).expect("corpus dir");
                fs::write(dir.join(format!("seed-{i}")), &seed).expect("write seed");
            }
        }
    }
}
