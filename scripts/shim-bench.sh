#!/usr/bin/env bash
# What mesh-shim costs, side by side in one run: direct to a loopback
# upstream, one shim (L7 route, plaintext to the upstream), nginx and
# haproxy as plain reverse proxies with the same worker count, and two
# shims with STRICT mesh mTLS between them. Prints one Markdown table with
# throughput (wrk HTTP/1.1, h2load HTTP/2), p50/p99 at a fixed rate, proxy
# CPU per 1000 requests and proxy RSS, ratios, and the shim's goals met or
# not (reported, never asserted). About 2 minutes on 2 cores after the
# release build; every load is bounded in time, all traffic on 127.0.0.1.
#
#   scripts/shim-bench.sh                # 5 s saturation loads, 10 s at 1000 req/s
#   scripts/shim-bench.sh --workers 2    # shim threads = nginx workers = haproxy threads
#   scripts/shim-bench.sh --quick        # 1 s loads at 200 req/s: does every row work
#   scripts/shim-bench.sh --rate 2000 --secs 10
#
# Installs Debian's wrk, nghttp2-client (h2load), nginx and haproxy when
# missing (as root, with apt-get), as scripts/test.sh installs its peers.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in wrk:wrk h2load:nghttp2-client nginx:nginx haproxy:haproxy; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${missing[*]}" >&2
    apt-get update -qq -o DPkg::Lock::Timeout=300
    # The bench runs its own nginx and haproxy on free loopback ports, so
    # whether the packages start their services does not matter.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
  else
    echo "shim-bench needs ${missing[*]}: apt-get install ${missing[*]} (as root)" >&2
    exit 1
  fi
fi

export CARGO_INCREMENTAL=0
cargo build --release --locked -p sidecar-shim --bin mesh-shim -p mesh-benches --bin shim-bench >&2
target="$(realpath "${CARGO_TARGET_DIR:-target}")"
exec "$target/release/shim-bench" --shim "$target/release/mesh-shim" "$@"
