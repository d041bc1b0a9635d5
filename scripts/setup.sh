#!/usr/bin/env bash
# Installs what building veritrace needs and is missing on this machine (Debian), and
# exports the shared target directory. Sourced by scripts/test.sh, scripts/demo.sh and
# scripts/bench-compare.sh.
# protoc is not installed here: the build takes it from the protoc-bin-vendored crate.
set -euo pipefail

# chromium (with a font for its screenshots) and zbar-tools (zbarimg) are for the consumer
# page tests: headless Chromium runs the page's in-browser verifier, zbarimg reads QR codes.
# python3-jsonschema is for the EPCIS tests: scripts/epcis_validate.py checks exported
# documents against GS1's EPCIS 2.0 JSON schema.
need=()
for pkg in libclang-dev build-essential pkg-config chromium fonts-dejavu-core zbar-tools python3-jsonschema; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The EPCIS tests run python3 on PATH, else /usr/bin/python3 (where the Debian package goes).
python3 -c 'import jsonschema' 2>/dev/null || /usr/bin/python3 -c 'import jsonschema' 2>/dev/null ||
  { echo "setup: no python3 can import jsonschema (Debian package python3-jsonschema)" >&2; exit 1; }

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust 1.95 with rustup" >&2; exit 1; }
for comp in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$comp" || rustup component add "$comp"
done

# One target directory outside the checkout, reused between runs and clones: a cold
# build of RocksDB's C++ takes ~20 minutes on 2 cores. RUSTFLAGS and CC are left alone on
# purpose: changing either rebuilds RocksDB.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/veritrace/target}"
mkdir -p "$CARGO_TARGET_DIR"
