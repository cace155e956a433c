"""Driver overhead per trial: a grid of N no-op trials (a trial function that returns an ok row at
once) through the real runner, `sweeper.sweep.runner.run_sweep`, on a local Ray instance.

    python bench/driver_overhead.py --trials 200,2000 --out /tmp/driver-overhead --json

One JSON line per N: `trials`, `seconds` (run_sweep's wall time: plan, Tune, rows, compaction;
Ray is started before and not counted), `ms_per_trial`, `rows` (rows read back, once each),
`cpus`. Target (issue 19): < 100 ms per trial on 2 cores, flat from 200 to 2,000 trials.
A first, unreported run of `--warmup` trials pays the one-time costs (imports of torch and of
Tune's integrations, Ray's first worker processes), which would otherwise land on the first N.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def noop_trial(config: Any, *, checkpoint_dir: str | None = None, on_epoch: Any = None,
               catch: bool = True, weights_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Looks like run_trial to the runner, and does nothing: an ok row at once."""
    from sweeper.schema import empty_row
    from sweeper.trial import config_columns

    now = datetime.now(timezone.utc)
    row = empty_row()
    row.update(config_columns(config), status="ok", clean_acc=0.5, started_at=now, ended_at=now)
    return row


def measure(n: int, out: Path, cpus: int) -> dict[str, Any]:
    from sweeper import results
    from sweeper.space import load
    from sweeper.sweep.runner import RunOptions, run_sweep

    root = out / f"trials-{n}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    space = root / "noop.yaml"
    seeds = ", ".join(str(i) for i in range(n))
    base = "{data: {dataset: synthetic}, train: {epochs: 1}}"  # no-op trials read no data
    space.write_text(f"sweep: noop\nbase: {base}\nseeds: [{seeds}]\n")
    options = RunOptions(results=str(root / "results"), progress=False)
    t0 = time.perf_counter()
    summary = run_sweep(load(space), options, trial_fn=noop_trial)
    seconds = time.perf_counter() - t0
    rows = results.read(str(root / "results" / "noop"))
    assert summary.started == n and len(rows) == n and rows["trial_id"].is_unique
    return {"trials": n, "seconds": round(seconds, 1), "ms_per_trial": round(1000 * seconds / n),
            "rows": len(rows), "cpus": cpus}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="200", help="comma-separated trial counts")
    parser.add_argument("--out", default="/tmp/sweeper-driver-overhead")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--warmup", type=int, default=20, help="trials run first, unreported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import ray

    from sweeper.sweep.runner import RunOptions, _init_ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    _init_ray(RunOptions(), num_cpus=args.cpus)
    try:
        if args.warmup:
            measure(args.warmup, Path(args.out), args.cpus)
            shutil.rmtree(Path(args.out) / f"trials-{args.warmup}", ignore_errors=True)
        for n in (int(x) for x in args.trials.split(",")):
            record = measure(n, Path(args.out), args.cpus)
            print(json.dumps(record) if args.json else record, flush=True)
            shutil.rmtree(Path(args.out) / f"trials-{n}", ignore_errors=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
