"""The whole path in minutes: run the smoke sweep on the digits data, then write its report.

    python -m sweeper.analysis.demo                  # under $TMPDIR/sweeper-demo/
    python -m sweeper.analysis.demo --out DIR -- --set train.epochs=2
    python -m sweeper.analysis.demo --synthetic      # no training: fake rows, marked as such

The smoke sweep is the packaged one (sweeper/studies/smoke.yaml), so this runs from any
folder. Everything after `--` goes to `sweeper run`. The same two steps by hand:

    sweeper run smoke --results DIR/results
    sweeper report DIR/results --out DIR/report
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sweeper.space.load import studies_dir

SMOKE = studies_dir() / "smoke.yaml"


def run_smoke(results: Path, extra: list[str]) -> None:
    """`sweeper run smoke.yaml` in a child process (the same interpreter), output shown."""
    if not SMOKE.is_file():
        raise SystemExit(f"{SMOKE} is missing: the smoke sweep is not in this installation")
    cmd = [sys.executable, "-m", "sweeper", "run", str(SMOKE), "--results", str(results), *extra]
    print("$", " ".join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    if code != 0:
        raise SystemExit(f"the smoke sweep failed (exit {code}); see its output above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "sweeper-demo",
        help="folder for the results and the report",
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="skip training: write fake rows (labelled as such) and report them",
    )
    parser.add_argument("--bootstrap", type=int, default=500, help="resamples of scaling fits")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    from sweeper.analysis.report import write_report

    results = args.out.resolve() / "results"
    start = time.perf_counter()
    if args.synthetic:
        from sweeper.analysis.synthetic import fake_results

        fake_results(results)
        print(f"wrote FAKE rows (not results) to {results}")
    else:
        run_smoke(results, extra)
    report = write_report(results, args.out / "report", bootstrap=args.bootstrap)
    print(f"report: {report} ({time.perf_counter() - start:.0f} s in all)")
    print(f"rows in pandas: pandas.read_parquet({str(results)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
