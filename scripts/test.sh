#!/usr/bin/env bash
# Every test in the workspace: unit, property and integration tests, and the
# CLI tests that run meshctl on the sample configs in examples/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
