#!/usr/bin/env bash
# Runs the ledger's fuzz targets (ledger/fuzz, docs/faults.md "Fuzzing") for a bounded
# time each: `bash scripts/fuzz.sh [SECONDS_PER_TARGET]` (default 20). Builds them with
# cargo-fuzz on nightly (installed if missing) into a target directory outside the clone,
# and exits non-zero if any target crashes, naming the input that crashed it.
#
# Build choices: release with debug assertions and overflow checks (`-a`), so an integer
# overflow is a crash as it is in the debug builds the tests run; no sanitizer
# (`-s none`): the ledger and its parsers are safe Rust, and AddressSanitizer would halve
# the executions per second on CI's two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-20}"
[[ "$secs" =~ ^[0-9]+$ ]] && [ "$secs" -gt 0 ] || { echo "fuzz: seconds per target must be a positive integer, got '$secs'" >&2; exit 2; }
targets=(record_decode proof_decode bundle_decode digital_link genesis)

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# Its own target directory: the fuzz build (nightly, coverage instrumentation, no
# RocksDB) shares nothing with the main workspace's, whose RocksDB must not be rebuilt.
cache="$HOME/.cache/veritrace"
export CARGO_TARGET_DIR="${VERITRACE_FUZZ_TARGET_DIR:-$cache/fuzz-target}"
# The working corpora grow between runs and stay outside the clone; the checked-in seeds
# (ledger/fuzz/corpus/<target>) are read, never written.
work="${VERITRACE_FUZZ_CORPUS_DIR:-$cache/fuzz-corpus}"
artifacts="$PWD/ledger/fuzz/artifacts"
flags=(--fuzz-dir ledger/fuzz -a -s none --target-dir "$CARGO_TARGET_DIR")

echo "== cargo fuzz build (target dir $CARGO_TARGET_DIR)"
start=$(date +%s)
cargo +nightly fuzz build "${flags[@]}"
echo "   built in $(( $(date +%s) - start )) s"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "$artifacts/$t"
  log="$CARGO_TARGET_DIR/fuzz-$t.log"
  echo "== fuzz $t for ${secs} s"
  if cargo +nightly fuzz run "${flags[@]}" "$t" "$work/$t" "ledger/fuzz/corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts/$t/" \
      -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$log" | sed 's/^/   /' || true
  else
    echo "!! $t crashed (log: $log)" >&2
    grep -E -A2 "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | head -n 20 >&2 || true
    grep -Eo "Test unit written to [^ ]+" "$log" | sed 's/^Test unit written to /!! crash input: /' >&2 || true
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${failed[*]} crashed; fix the parser, then copy the crash input to ledger/fuzz/regressions/<target>/" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${secs} s each, no crash"
