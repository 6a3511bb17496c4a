#!/usr/bin/env bash
# Every test in the workspace: unit, property and integration tests, the
# CLI tests that run meshctl on the sample configs in examples/, the
# interop tests with stock gRPC (Python grpcio and Node grpc-js-xds, which
# this script installs: grpcio into target/interop-venv, the npm packages
# into tests/interop/node_modules), and the differential check against
# istiod (tests/tests/istiod_diff.rs), whose pilot-discovery binary
# scripts/istiod.sh builds once from the Go module proxy into
# ~/.cache/mesh-peers (about 6 minutes cold) and reuses, the real
# kube-apiserver and etcd of the Kubernetes tests (tests/tests/
# kube_harness.rs, through mesh-test-support's `kube` harness), which
# scripts/kube-peers.sh builds once the same way (about 5 minutes cold),
# with iproute2's `ip` for their private network namespace, and Debian's
# prometheus package (installed here when missing): promtool for the
# metrics exposition checks, the prometheus server for the test that
# runs Kiali's and Istio's dashboard queries on the demo's metrics
# (examples/tests/prometheus.rs), and Debian's wrk, h2load, nginx and
# haproxy for the mesh-shim cost bench's smoke test
# (benches/tests/shim_bench.rs). A test that cannot run fails; none
# passes by skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== stock gRPC for the interop tests (tests/interop)"
venv=target/interop-venv
if ! "$venv/bin/python3" -c "import grpc" 2>/dev/null; then
  python3 -m venv "$venv"
  PIP_ROOT_USER_ACTION=ignore "$venv/bin/python3" -m pip install --quiet \
    --disable-pip-version-check -r tests/interop/requirements.txt
fi
export PATH="$PWD/$venv/bin:$PATH"
python3 -c "import grpc; print('grpcio', grpc.__version__)"
if [ ! -f tests/interop/node_modules/@grpc/grpc-js-xds/package.json ]; then
  (cd tests/interop && npm ci --silent --no-audit --no-fund)
fi
node -e "console.log('grpc-js-xds', require('./tests/interop/node_modules/@grpc/grpc-js-xds/package.json').version)"

echo "== prometheus and promtool (Debian's prometheus package: the exposition checks and examples/tests/prometheus.rs)"
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
fi
promtool --version | head -n 1
prometheus --version | head -n 1

# curl: the shim's gateway demo and test call it as an outside client.
if ! command -v curl >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
fi
echo "== iptables (Debian's package: mesh-shim's transparent capture test, sidecar-shim/tests/capture.rs)"
if ! command -v iptables-restore >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables >/dev/null
  fi
fi
iptables --version

echo "== wrk, h2load, nginx and haproxy (Debian's packages: benches/tests/shim_bench.rs runs scripts/shim-bench.sh's bench in its 1-second mode)"
if ! command -v wrk >/dev/null 2>&1 || ! command -v h2load >/dev/null 2>&1 ||
  ! command -v nginx >/dev/null 2>&1 || ! command -v haproxy >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    # The bench runs its own nginx and haproxy on free loopback ports, so
    # whether the packages start their services does not matter.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      wrk nghttp2-client nginx haproxy >/dev/null
  fi
fi
nginx -v 2>&1
haproxy -v | sed -n 1p

echo "== istiod (reference control plane for tests/tests/istiod_diff.rs)"
bash scripts/istiod.sh | tail -n 1

echo "== kube-apiserver and etcd (the Kubernetes tests: mesh-test-support's kube harness, tests/tests/kube_harness.rs)"
# Built once from the Go module proxy into ~/.cache/mesh-peers (about 5
# minutes cold), then answers at once. The harness runs them in a private
# network namespace, made with iproute2's `ip` (as root).
if ! command -v ip >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
  fi
fi
ip -V
bash scripts/kube-peers.sh | tail -n 2

echo "== mesh-tower for a local-only user: no xDS, no CA service"
cargo check -p mesh-tower --no-default-features --lib --locked
if cargo tree -p mesh-tower --no-default-features -e normal,build --prefix none --locked |
  grep -E '^(mesh-xds|envoy-types|protox|tonic-prost-build) '; then
  echo "mesh-tower without its xds and ca features still pulls in the crates above" >&2
  exit 1
fi

cargo test --workspace --locked
