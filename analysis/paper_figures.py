"""The paper's figures and tables from a results folder, with plain pandas and matplotlib.

    python analysis/paper_figures.py results --out figures/      # every sweep under results/
    python analysis/paper_figures.py --synthetic --out figures/  # fake rows, to try it out

A worked example of reading sweeper's rows: one row per trained network, with the
architecture as columns (depth1..3, width1..3, block, activation, ...), its MACs and its
clean / PGD / CW / AutoAttack accuracy. It writes
  depth.png     robust accuracy against each stage's depth (the depth study),
  width.png     the same against each stage's widening factor (the width study),
  compound.png  robust accuracy against the depth share, per MACs budget (compound study),
  tables.md     one table per block-level study: mean accuracy (%) +- std over seeds.
A study missing from the folder is skipped. `sweeper report` is the fuller report (CIs,
deltas, bootstrap fits); this script shows how little code the figures need.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs on a machine without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ACCURACIES = ["clean_acc", "pgd_acc", "cw_acc", "aa_acc"]
ROBUST = "cw_acc"  # the paper ranks networks by CW-40 accuracy
ARCH = ["block", "activation_order", "conv_type", "se", "kernel_size", "activation", "norm"]
SHAPE_STUDIES = ("depth", "width", "compound")


def load_rows(results: str | Path) -> pd.DataFrame:
    """Every ok row under a results folder (RESULTS/<sweep>/*.parquet)."""
    import sweeper

    rows = sweeper.read(results)
    return rows[rows["status"] == "ok"].reset_index(drop=True)


def synthetic_rows() -> pd.DataFrame:
    """Fake rows of every study (sweeper.analysis.synthetic), marked as not results."""
    from sweeper.analysis import synthetic

    parts = [synthetic.study_rows(s, seeds=(0, 1)) for s in synthetic.EFFECTS]
    parts += [synthetic.study_rows("depth"), synthetic.study_rows("width")]
    parts.append(synthetic.scaling_rows(budgets=(5, 10, 20)))
    return pd.concat(parts, ignore_index=True)


def stage_figure(rows: pd.DataFrame, kind: str) -> plt.Figure:
    """Mean robust accuracy against one stage's depth (or width), the other stages averaged
    over: which stage gains most from more layers (channels)?"""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for stage in (1, 2, 3):
        column = f"{kind}{stage}"
        mean = rows.groupby(column)[ROBUST].mean() * 100
        ax.plot(mean.index, mean.values, marker="o", label=f"stage {stage}")
    ax.set_xlabel("blocks per stage" if kind == "depth" else "widening factor")
    ax.set_ylabel(f"{ROBUST} (%), mean over the other stages")
    ax.set_title(f"{kind.capitalize()} study ({len(rows)} networks)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def compound_figure(rows: pd.DataFrame) -> plt.Figure:
    """Robust accuracy against the depth share sum(D) / (sum(D) + sum(W)), one quadratic
    per budget (np.polyfit), its peak marked."""
    depth = rows[["depth1", "depth2", "depth3"]].sum(axis=1)
    width = rows[["width1", "width2", "width3"]].sum(axis=1)
    rows = rows.assign(share=depth / (depth + width))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (budget, group) in enumerate(rows.groupby("macs_target")):
        colour = f"C{i}"
        ax.scatter(group["share"], group[ROBUST] * 100, s=10, color=colour,
                   label=f"{budget:g} GMACs")  # fmt: skip
        a, b, c = np.polyfit(group["share"], group[ROBUST] * 100, 2)
        grid = np.linspace(group["share"].min(), group["share"].max(), 100)
        ax.plot(grid, a * grid**2 + b * grid + c, color=colour)
        if a < 0:
            ax.axvline(-b / (2 * a), color=colour, ls=":", lw=1)
    ax.set_xlabel("depth share")
    ax.set_ylabel(f"{ROBUST} (%)")
    ax.set_title("Compound scaling: where each budget peaks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def block_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean +- std (over seeds) of each accuracy, in %, per variant of a block-level study:
    the variants are the architecture columns that take more than one value."""
    factors = [c for c in ARCH if c in rows and rows[c].nunique() > 1] or ["trial_id"]
    grouped = rows.groupby(factors)[ACCURACIES]
    mean, std = grouped.mean() * 100, grouped.std().fillna(0) * 100
    table = mean.round(1).astype(str) + " ± " + std.round(1).astype(str)
    table["seeds"] = grouped.size()
    return table.loc[mean[ROBUST].sort_values(ascending=False).index]  # most robust first


def write_all(rows: pd.DataFrame, out: Path) -> list[Path]:
    """The figures and tables of the studies found in `rows`; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    by_study = dict(tuple(rows.groupby("sweep")))
    for kind in ("depth", "width"):
        if kind in by_study:
            written.append(_save(stage_figure(by_study[kind], kind), out / f"{kind}.png"))
    if "compound" in by_study:
        written.append(_save(compound_figure(by_study["compound"]), out / "compound.png"))
    from sweeper.analysis.tables import to_markdown  # pandas' own needs `tabulate`

    blocks = {name: part for name, part in by_study.items() if name not in SHAPE_STUDIES}
    sections = [f"## {n}\n\n{to_markdown(block_table(blocks[n]))}\n" for n in sorted(blocks)]
    if sections:
        note = "" if not _synthetic(rows) else "**SYNTHETIC rows: not results.**\n\n"
        (out / "tables.md").write_text(f"# Block-level studies\n\n{note}" + "\n".join(sections))
        written.append(out / "tables.md")
    return written


def _synthetic(rows: pd.DataFrame) -> bool:
    from sweeper.analysis.synthetic import SYNTHETIC_DEVICE

    return bool((rows.get("device") == SYNTHETIC_DEVICE).any())


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", help="a results folder (RESULTS/<sweep>/...)")
    parser.add_argument("--synthetic", action="store_true", help="fake rows, no results needed")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    args = parser.parse_args(argv)
    if bool(args.results) == args.synthetic:
        parser.error("give a results folder or --synthetic")
    rows = synthetic_rows() if args.synthetic else load_rows(args.results)
    for path in write_all(rows, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
