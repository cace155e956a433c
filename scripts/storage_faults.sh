#!/usr/bin/env bash
# Storage faults end to end (issue 26): a results store on a small tmpfs that fills up during
# `sweeper run`, then the same store remounted read-only under `sweeper run` and `sweeper eval`.
# Each must end in one `error:` line naming the path and the errno, exit code 2, no traceback,
# no retries, and the rows written before the fault intact.
#
#   sudo bash scripts/storage_faults.sh        (needs root: mount -t tmpfs, mount -o remount,ro)
#
# FREE_KB (default 700) is what is left free on the tmpfs before the sweep starts: enough for
# the lease and a few rows, not for every trial's weights and Ray's checkpoints.
set -uo pipefail
cd "$(dirname "$0")/.."
SWEEPER=${SWEEPER:-.venv/bin/sweeper}
FREE_KB=${FREE_KB:-700}
WORK=$(mktemp -d /tmp/sweeper-storage-faults.XXXXXX)
STORE=$WORK/store
mkdir -p "$STORE"
cleanup() { umount -l "$STORE" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
mount -t tmpfs -o size=4m tmpfs "$STORE" || { echo "cannot mount a tmpfs (root?)"; exit 1; }

cat > "$WORK/tiny.yaml" <<'EOF'
sweep: tiny
base:
  arch: {block: basic, depths: [1, 1, 1], widths: [0.25, 0.25, 0.25]}
  data: {dataset: synthetic, image_size: 8, synthetic_train: 64, synthetic_test: 32,
         holdout_size: 16}
  train: {method: clean, epochs: 3, batch_size: 32}
  eval: {pgd_steps: 1, cw_steps: 1, aa_size: 0, batch_size: 32}
axes:
  - grid: {arch.activation: [relu, silu, gelu, elu, mish, tanh]}
EOF

check() {  # name, exit code, stderr file: one error line, exit 2, no traceback
  local name=$1 code=$2 err=$3
  local errors lines
  errors=$(grep -c '^error: ' "$err")
  lines=$(grep -cv '^\s*$' "$err")
  echo "== $name: exit $code, $lines stderr line(s), tracebacks: $(grep -c Traceback "$err")"
  grep '^error: ' "$err"
  [ "$code" = 2 ] && [ "$errors" = 1 ] && ! grep -q Traceback "$err"
}

status=0
# 1. disk full during the run
avail=$(df -k --output=avail "$STORE" | tail -1)
fallocate -l $(( (avail - FREE_KB) * 1024 )) "$STORE/filler" 2>/dev/null \
  || dd if=/dev/zero of="$STORE/filler" bs=1k count=$((avail - FREE_KB)) status=none
t0=$(date +%s.%N)
"$SWEEPER" run "$WORK/tiny.yaml" --results "$STORE" --cpus-per-trial 1 --max-concurrent 2 \
  > "$WORK/full.out" 2> "$WORK/full.err"
code=$?
echo "   took $(echo "$(date +%s.%N) - $t0" | bc) s; retries: $(grep -c '^retry' "$WORK/full.err")"
check "disk full, sweeper run" "$code" "$WORK/full.err" || status=1
rows=$(ls "$STORE/tiny"/*.parquet 2>/dev/null | wc -l)
echo "   rows on the store: $rows"
.venv/bin/python -c "import pandas as pd, sys; print('   rows read back:', len(pd.read_parquet(sys.argv[1])))" \
  "$STORE/tiny" 2>/dev/null || echo "   rows read back: 0"

# 2. the same store, made room on and finished, then read-only
rm -f "$STORE/filler"
"$SWEEPER" run "$WORK/tiny.yaml" --results "$STORE" > /dev/null 2> "$WORK/finish.err"
echo "== finishing run: exit $? ($(ls "$STORE/tiny"/*.parquet | wc -l) rows, $(du -sk "$STORE/tiny" | cut -f1) KB:" \
  "$(du -sk "$STORE/_state/tiny/_ray" | cut -f1) KB in _ray/, $(du -sk "$STORE/_state/tiny/_weights" | cut -f1) KB in _weights/)"
mount -o remount,ro "$STORE"
"$SWEEPER" run "$WORK/tiny.yaml" --results "$STORE" > /dev/null 2> "$WORK/ro-run.err"
check "read-only, sweeper run" $? "$WORK/ro-run.err" || status=1
t0=$(date +%s.%N)
"$SWEEPER" eval "$STORE/tiny" > /dev/null 2> "$WORK/ro-eval.err"
code=$?
echo "   took $(echo "$(date +%s.%N) - $t0" | bc) s"
check "read-only, sweeper eval" "$code" "$WORK/ro-eval.err" || status=1
echo "   rows read back: $(.venv/bin/python -c "import pandas as pd, sys; print(len(pd.read_parquet(sys.argv[1])))" "$STORE/tiny")"
[ "$status" = 0 ] && echo "PASS" || { echo "FAIL"; echo "--- stderr of the disk-full run:"; tail -40 "$WORK/full.err"; }
exit $status
