#!/usr/bin/env bash
# The main job (README): set-up, build, then a local network of real nodes (3 validators
# and 1 observer) that plays the demo chains of the seeds through its gRPC API, and where
# to look next. Run again, it restarts the same network (keeping its data) and plays the
# demo once more with new lots. VERITRACE_DEVNET_DIR chooses the network directory.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

# Partitions need a network namespace per node (root and iproute2); without them the
# network runs on 127.0.0.1 and everything but `devnet partition` works.
if [ "$(id -u)" -eq 0 ] && ! command -v ip >/dev/null; then
  echo "demo: installing iproute2 (network namespaces for partitions)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi

dir="${VERITRACE_DEVNET_DIR:-$HOME/.cache/veritrace/devnet}"
bin="$CARGO_TARGET_DIR/debug"

echo "== cargo build --workspace --bins"
cargo build --workspace --bins --locked
echo
echo "== veritrace devnet up --dir $dir --validators 3 --observers 1"
"$bin/veritrace" devnet up --dir "$dir" --validators 3 --observers 1 --node-bin "$bin/veritrace-node"
echo
echo "== veritrace devnet demo --dir $dir"
"$bin/veritrace" devnet demo --dir "$dir"

cat <<EOT

== where to look
The network keeps running in the background. With v=$bin/veritrace:
  \$v devnet status --dir $dir           per node: process, leader, height, roots, checkpoint
  \$v devnet logs --dir $dir node-1      a node's log (-f to follow)
  \$v devnet partition --dir $dir node-1 cut a node off (then: demo, status, heal)
  \$v trace --help, \$v bundle --help      query a node yourself (docs/cli.md)
  \$v devnet down --dir $dir [--purge]   stop it (and delete it)
Files: $dir (devnet.json, genesis.json, keys/, nodes/node-K/{config.toml,node.log,data/}).
Every command: docs/devnet.md.
EOT
