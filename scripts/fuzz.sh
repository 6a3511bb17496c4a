#!/usr/bin/env bash
# Fuzzes every target in fuzz/ (YAML loader, xDS client, JWT, path
# normalizer, inbound request handling) for a bounded time each, with
# libFuzzer through cargo-fuzz on nightly:
#
#   scripts/fuzz.sh [seconds per target, default 60] [target ...]
#
# Corpora grow in fuzz/corpus/<target> (seeded from the examples and our
# own encoders); crashing inputs land in fuzz/artifacts/<target>. Copy a
# crash into fuzz/regressions/<target>/ with a name saying what it found,
# fix it, and `cargo test -p mesh-fuzz` keeps it fixed. Prints executions
# and crashes per target; exits non-zero when anything crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(yaml xds jwt path inbound)

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz.sh needs cargo-fuzz: cargo install cargo-fuzz" >&2
  exit 1
fi

# The harness is its own workspace; pin it to the main lock file's versions.
cp Cargo.lock fuzz/harness/Cargo.lock
CARGO_INCREMENTAL=0 cargo run --quiet -p mesh-fuzz --bin fuzz-seeds -- fuzz/corpus

sanitizer=${FUZZ_SANITIZER:-none}
summary=()
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/artifacts/$t" "fuzz/corpus/$t"
  extra=()
  [ "$t" = yaml ] && extra=(examples/bookinfo examples/mistakes)
  log="fuzz/artifacts/$t.log"
  echo "== $t for ${secs}s"
  set +e
  cargo +nightly fuzz run --fuzz-dir fuzz/harness -s "$sanitizer" -a "$t" \
    "fuzz/corpus/$t" "${extra[@]}" -- \
    -max_total_time="$secs" -artifact_prefix="fuzz/artifacts/$t/" \
    -print_final_stats=1 -timeout=10 -rss_limit_mb=4096 >"$log" 2>&1
  rc=$?
  set -e
  # A target that failed to build has no stats.
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  crashes=$(find "fuzz/artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) | wc -l)
  if [ "$rc" -ne 0 ]; then
    failed=1
    tail -n 40 "$log"
  fi
  summary+=("$(printf '%-8s %12s execs %8s/s  cov %6s  crashes %s  exit %s' \
    "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$crashes" "$rc")")
done
echo "== fuzz summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
