"""GPU-hours of every shipped study (sweeper/studies/*.yaml), from a measured calibration.

Why a script and not a number in a README: the hours depend on the device, the schedule
(`--set train.epochs=N`) and the evaluation sizes, so the figure is recomputed from a
calibration measured with `sweeper calibrate` on the device that will run the study.

    sweeper calibrate                                    # on the GPU, once
    python bench/study_hours.py                          # hours per study, and the total
    python bench/study_hours.py --set train.epochs=100   # at the paper's full schedule
    python bench/study_hours.py --assume-tflops 346      # NOT a measurement: an assumed rate

`--assume-tflops` replaces the calibration by a constant FLOP rate for training and evaluation
alike; its output is labelled as an assumption and must not be reported as measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sweeper.perf import calibrate as cal

SPACES = Path(__file__).resolve().parents[1] / "sweeper" / "studies"


def assumed_calibration(tflops: float) -> dict[str, Any]:
    """A calibration whose rate is `tflops` at every size (F-units/s = rate / (2 * MACs))."""
    points = [
        {
            "model": f"assumed-{g}g",
            "macs": int(g * 1e9),
            "train_units_per_s": tflops * 1e12 / (2 * g * 1e9),
            "eval_units_per_s": tflops * 1e12 / (2 * g * 1e9),
        }
        for g in (1, 10)
    ]
    return {"device": f"ASSUMED {tflops} TFLOP/s (not measured)", "date": None, "points": points}


def study_rows(calibration: dict[str, Any], sets: list[str]) -> list[dict[str, Any]]:
    from sweeper import space as sp

    rows = []
    for path in sorted(SPACES.glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        space = sp.load(path, sets)
        configs = sp.expand(space)
        if not configs:  # an Optuna / random search: its trials are drawn while it runs
            rows.append({"study": path.stem, "trials": None, "gpu_hours": None})
            continue
        hours = cal.estimate_gpu_hours(configs, calibration)
        epochs = sorted({c.train.epochs for c in configs})
        rows.append(
            {"study": path.stem, "trials": len(configs), "epochs": epochs, "gpu_hours": hours}
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calibration", help="calibration JSON (default: this device's)")
    p.add_argument("--assume-tflops", type=float, help="an assumed constant rate instead")
    p.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.assume_tflops:
        calibration = assumed_calibration(args.assume_tflops)
    else:
        calibration = cal.load_calibration(args.calibration)
        if calibration is None:
            print("no calibration: run `sweeper calibrate` on the target GPU", file=sys.stderr)
            return 2
    rows = study_rows(calibration, args.sets)
    total = sum(r["gpu_hours"] or 0.0 for r in rows)
    if args.json:
        print(
            json.dumps(
                {
                    "device": calibration["device"],
                    "date": calibration.get("date"),
                    "sets": args.sets,
                    "studies": rows,
                    "total_gpu_hours": total,
                }
            )
        )
        return 0
    print(f"# {calibration['device']}, calibrated {calibration.get('date')}; sets {args.sets}")
    for r in rows:
        hours = "search (not expanded)" if r["gpu_hours"] is None else f"{r['gpu_hours']:10.1f} h"
        print(f"{r['study']:16s} {r['trials'] or '':>5} trials  {hours}")
    print(f"{'total':16s} {sum(r['trials'] or 0 for r in rows):>5} trials  {total:10.1f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
