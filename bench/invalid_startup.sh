#!/usr/bin/env bash
# Start-up cost of an invalid run (issue 26): `epochs: 1e9` in the base and in a grid, a
# 50 MB grid file, and a YAML syntax error, each through `sweeper run --dry-run`; wall time
# and max RSS from /usr/bin/time. Each must be refused (exit 2) in about a second and well
# under 150 MB: nothing imports torch (or pandas, Ray) before the space validates.
#
#   bash bench/invalid_startup.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=$(mktemp -d /tmp/sweeper-invalid-startup.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
printf 'sweep: b\nbase:\n  train: {epochs: 1e9}\n' > "$WORK/epochs.yaml"
printf 'sweep: b\naxes:\n  - grid: {train.epochs: [10, 1e9]}\n' > "$WORK/epochs_axis.yaml"
printf 'sweep: b\nbase:\n  train: {epochs: [1\n' > "$WORK/syntax.yaml"
"$PY" - "$WORK/grid_50mb.yaml" <<'PYEOF'
import sys
row = ", ".join(["0.12345678"] * 10_000)
with open(sys.argv[1], "w") as out:
    out.write("sweep: b\naxes:\n  - grid:\n      train.lr: [0.1")
    for _ in range(440):
        out.write(", " + row)
    out.write("]\n")
PYEOF
for name in epochs epochs_axis grid_50mb syntax; do
  (cd "$WORK" && /usr/bin/time -f "$name: exit %x, %e s wall, %U s user + %S s sys CPU, %M KB max RSS" \
    "$OLDPWD/$PY" -m sweeper run "$WORK/$name.yaml" --dry-run 2>&1 | sed 's/^/  /')
done
