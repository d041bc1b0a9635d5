#!/usr/bin/env bash
# The test command (README): set-up, then format check, clippy with -D warnings, the API
# docs with rustdoc's warnings as errors (broken and private links), and every test of the
# workspace, then a bounded run of the ledger's fuzz targets (15 s each; docs/faults.md
# "Fuzzing"). Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
echo "== fuzz (15 s per target)"
bash scripts/fuzz.sh 15
