#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, from the seed
# corpora in fuzz/corpus/ and the regressions in fuzz/regressions/, and
# prints per target the executions, the coverage reached and the corpus
# grown. Exits 1 on the first property that fails (the input that broke it
# is kept under fuzz/artifacts/<target>/). See docs/testing.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]     (default: 20 s, every target)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); the stable
# toolchain builds the instrumented targets with RUSTC_BOOTSTRAP=1 (the
# sanitizer flags cargo-fuzz passes are unstable options).
# FUZZ_SANITIZER=none (CI) leaves AddressSanitizer out: a faster build, the
# same properties (mxmedia's own code has no `unsafe`).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-20}"
shift || true
if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
export RUSTC_BOOTSTRAP=1
echo "== building ${#targets[@]} fuzz targets"
sanitizer="${FUZZ_SANITIZER:-address}"
cargo fuzz build --sanitizer "$sanitizer" --debug-assertions
printf '%-14s %12s %8s %8s %8s\n' target executions exec/s cov corpus
for target in "${targets[@]}"; do
  # New inputs go to a scratch corpus, never into the repository's seeds.
  scratch="target/corpus/$target"
  mkdir -p "$scratch" "corpus/$target" "regressions/$target"
  log="target/fuzz-$target.log"
  if ! cargo fuzz run --sanitizer "$sanitizer" --debug-assertions "$target" "$scratch" "corpus/$target" "regressions/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "== $target: a property failed; the input is in fuzz/artifacts/$target/"
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  corpus=$(find "$scratch" "corpus/$target" -type f | wc -l)
  printf '%-14s %12s %8s %8s %8s\n' "$target" "$execs" "$speed" "$cov" "$corpus"
done
