#!/usr/bin/env bash
# meshd at Kubernetes scale (issue 17, item 8): a real kube-apiserver and
# etcd (scripts/kube-peers.sh builds them once into ~/.cache/mesh-peers)
# populated with 1000 Services, 5000 EndpointSlices (2 endpoints each),
# 10000 Pods with status and 100 DestinationRules + 100 VirtualServices;
# the release meshd started on it with --source kubernetes; 500 simulated
# SotW clients x 10 Services each; 5 EndpointSlice changes, each timed
# until every client that targets the Service has ACKed the new
# endpoints. Then the same objects as files for `meshd --config DIR`,
# measured the same way. Prints a Markdown table (ready time, RSS after
# sync and with clients, change -> all affected ACKed min/median/max,
# meshd CPU per change, kubernetes/files ratios) and a `json {...}` line.
# The run is bounded (TIMEOUT, default 15 minutes).
#
#   scripts/kube-scale.sh                      # the full size
#   scripts/kube-scale.sh --smoke              # 50 Services, 20 clients: does it work
#   scripts/kube-scale.sh --clients 100 --no-files
#   scripts/kube-scale.sh --meshd-env MESHD_LOG=debug --keep-logs /tmp/kube-scale-logs
#
# Flags go to the bench (see `--help`): --services --slices-per-service
# --endpoints-per-slice --pods --namespaces --istio-every --clients
# --targets --connections --changes --concurrency --no-files --timeout
# --settle --meshd --meshd-env --keep-logs --smoke.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_INCREMENTAL=0
if [ ! -x "${MESH_KUBE_APISERVER:-${MESH_PEER_CACHE:-$HOME/.cache/mesh-peers}/kube/v1.37.2/kube-apiserver}" ]; then
  bash scripts/kube-peers.sh >&2
fi
cargo build --release -p mesh-control --bin meshd >&2
# The bench executable itself, so that `timeout` signals its process
# group: the bench, meshd, kube-apiserver and etcd.
bench="$(cargo bench --no-run -p mesh-loadgen --bench kube_scale 2>&1 >/dev/null |
  tee /dev/stderr | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -n 1)"
if [ -z "$bench" ]; then
  echo "kube-scale.sh: cargo did not name the bench executable" >&2
  exit 1
fi
target="$(realpath "${CARGO_TARGET_DIR:-target}")"
exec timeout --kill-after=30s "${TIMEOUT:-15m}" \
  "$bench" --meshd "$target/release/meshd" "$@"
