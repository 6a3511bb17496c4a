#!/usr/bin/env bash
# The main job: a whole mesh on loopback (meshd serving Istio YAML over
# xDS to three SDK workloads, productpage calling reviews v1/v2 over mesh
# mTLS, a rollout by editing the YAML under traffic, a failing v2 and the
# Istio metrics each workload reports), then the operator's view:
# analyze the sample mesh configuration and explain a routing and an
# authorization decision with the same engines the SDK executes.
set -euo pipefail
cd "$(dirname "$0")/.."
# Two builds: target flags apply to every package named, and `--examples`
# alone would leave out the meshctl binary the steps below run.
# curl: the shim's gateway demo and test call it as an outside client.
if ! command -v curl >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
fi
cargo build -q -p meshctl --bin meshctl --locked
cargo build -q -p mesh-examples --examples --locked
cargo build -q -p sidecar-shim --bin mesh-shim --locked
meshctl=target/debug/meshctl

echo "== the mesh on loopback: meshd + productpage and reviews v1/v2, all SDK workloads (Mesh::xds)"
cargo run -q -p mesh-examples --example mesh_demo --locked

echo
echo "== apps not written in Rust: Python http.server apps behind mesh-shim, a Python client, the SDK beside them, mesh-shim gateway"
cargo run -q -p mesh-examples --example legacy_demo --locked

echo
echo "== meshctl analyze examples/bookinfo (a healthy mesh config)"
$meshctl analyze examples/bookinfo

echo
echo "== meshctl x route: where does a request from productpage to reviews go, for user jason?"
$meshctl x route --config examples/bookinfo --host reviews --port 9080 --path /reviews/0 \
  -H 'end-user: jason' --source-namespace bookinfo --source-labels app=productpage

echo
echo "== meshctl x authz: may the ratings workload call reviews?"
$meshctl x authz --config examples/bookinfo --workload bookinfo/reviews-v1 \
  --labels app=reviews,version=v1 --port 9080 --method GET --path /reviews/0 \
  --principal cluster.local/ns/bookinfo/sa/bookinfo-ratings || true

echo
echo "== meshctl analyze examples/mistakes (the configs behind real Istio outages)"
$meshctl analyze examples/mistakes || echo "(exit $?: errors found, as expected)"
