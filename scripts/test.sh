#!/usr/bin/env bash
# Every test in the workspace: unit, property and integration tests, the
# CLI tests that run meshctl on the sample configs in examples/, and the
# differential check against istiod (tests/tests/istiod_diff.rs), whose
# pilot-discovery binary scripts/istiod.sh builds once from the Go module
# proxy into ~/.cache/mesh-peers (about 6 minutes cold) and reuses.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== istiod (reference control plane for tests/tests/istiod_diff.rs)"
bash scripts/istiod.sh | tail -n 1
cargo test --workspace --locked
