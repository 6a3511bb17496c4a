#!/usr/bin/env bash
# Runs the ADS load generator (loadgen/, binary `ads-load`) against meshd
# and istiod on the same generated YAML, for the matrix of issue 14:
# 100 / 1000 / 2000 clients x 100 / 1000 services, SotW, with one
# VirtualService edit each, and prints each run's table with meshd/istiod
# ratios.
#
#   scripts/ads-load.sh                 # the whole matrix
#   scripts/ads-load.sh --delta         # extra flags go to every ads-load run
#
# Environment:
#   CLIENTS    space-separated client counts   (default "100 1000 2000")
#   SERVICES   space-separated service counts  (default "100 1000")
#   TIMEOUT    seconds each phase of a run may take (default 300)
#   CONNECTIONS  HTTP/2 connections per run    (default 8)
#   ISTIOD     a pilot-discovery binary (default: built/cached by scripts/istiod.sh)
#   SERVER     meshd | istiod | both           (default both)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_INCREMENTAL=0
cargo build --release -p mesh-control --bin meshd -p mesh-loadgen --bin ads-load >&2
target="$(realpath "${CARGO_TARGET_DIR:-target}")"
meshd="$target/release/meshd"
load="$target/release/ads-load"

server="${SERVER:-both}"
istiod_args=()
if [[ "$server" != meshd ]]; then
  istiod="${ISTIOD:-$(bash scripts/istiod.sh | tail -n 1)}"
  istiod_args=(--istiod "$istiod")
fi

for services in ${SERVICES:-100 1000}; do
  for clients in ${CLIENTS:-100 1000 2000}; do
    echo "=== $clients clients x $services services ==="
    # A run that fails (a server that does not start) is reported and the
    # matrix goes on; clients that never configure give a partial row.
    "$load" --server "$server" --meshd "$meshd" "${istiod_args[@]}" \
      --clients "$clients" --services "$services" \
      --connections "${CONNECTIONS:-8}" --timeout "${TIMEOUT:-300}" \
      --edit "$@" || echo "(run failed: exit $?)"
    echo
  done
done
