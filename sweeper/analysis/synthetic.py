"""Fake rows with the result schema, for tests and for trying the analysis before a sweep ran.

These are NOT results. Every fake row has `device` = SYNTHETIC_DEVICE, and the report
prints a warning at the top whenever it sees one. The accuracies follow simple planted
rules (known effects, a planted depth-share optimum) so that tests can check that the
analysis recovers them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweeper.config import NOT_IDENTITY, identity_hash
from sweeper.schema import COLUMNS, SCHEMA, empty_row

SYNTHETIC_DEVICE = "synthetic (not a result)"
WRN_28_10_MACS = 5.24e9

# Planted effects (fractions of CW accuracy) of the block-level studies' variants.
EFFECTS: dict[str, dict[str, Any]] = {
    "block_topology": {
        "factors": {
            "block": ["basic", "bottleneck", "inverted_bottleneck"],
            "activation_order": ["pre", "post"],
        },
        "effect": {"bottleneck": 0.006, "inverted_bottleneck": -0.012, "post": -0.004},
    },
    "se": {
        "factors": {"se": ["none", "standard", "residual"], "se_reduction": [4, 64]},
        "effect": {"standard": 0.003, "residual": 0.008, 64: 0.002},
    },
    "activation": {
        "factors": {"activation": ["relu", "silu", "gelu", "softplus", "mish", "elu"]},
        "effect": {"silu": 0.004, "gelu": 0.003, "softplus": 0.005, "mish": 0.002, "elu": -0.006},
    },
    "normalization": {
        "factors": {"norm": ["batchnorm", "groupnorm", "layernorm", "instancenorm"]},
        "effect": {"groupnorm": -0.015, "layernorm": -0.02, "instancenorm": -0.03},
    },
}


def approx_macs(depths: Sequence[int], widths: Sequence[float], kernel: int = 3) -> int:
    """Multiply-accumulates of a pre-activation basic-block WRN on 32x32 (convs + linear)."""
    macs = 3 * 16 * 9 * 32 * 32
    c_in = 16
    for d, w, base, side in zip(depths, widths, (16, 32, 64), (32, 16, 8)):
        p = max(1, round(base * w))
        px = side * side
        macs += c_in * p * kernel**2 * px + (c_in * p * px if c_in != p else 0)
        macs += p * p * kernel**2 * px * (2 * d - 1)
        c_in = p
    return int(macs + c_in * 10)


def approx_params(depths: Sequence[int], widths: Sequence[float], kernel: int = 3) -> int:
    """Parameters of the same network (conv weights, norms, linear)."""
    params = 3 * 16 * 9
    c_in = 16
    for d, w, base in zip(depths, widths, (16, 32, 64)):
        p = max(1, round(base * w))
        params += c_in * p * kernel**2 + (c_in * p if c_in != p else 0) + 2 * (c_in + p)
        params += (p * p * kernel**2 + 2 * p) * (2 * d - 1)
        c_in = p
    return int(params + c_in * 10 + 10)


def _split(total: int, ratio: Sequence[float]) -> list[int]:
    """Split an integer total by `ratio`, rounding so that the parts keep the sum."""
    raw = np.asarray(ratio, float) / sum(ratio) * total
    parts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - parts))[: total - parts.sum()]:
        parts[i] += 1
    return [max(1, int(p)) for p in parts]


@lru_cache(maxsize=4096)
def scaled_arch(gmacs: float, share: float) -> tuple[list[int], list[int]]:
    """Depths (2:2:1) and integer widths (2:2.5:1) whose share is about `share` and whose
    MACs are closest to `gmacs` - a stand-in for sweeper.models.robust_scaling."""
    best: tuple[float, list[int], list[int]] | None = None
    for total in range(8, 400):
        depths = _split(round(share * total), (2, 2, 1))
        widths = _split(round((1 - share) * total), (2, 2.5, 1))
        ratio = approx_macs(depths, widths) / (gmacs * 1e9)
        if best is None or abs(np.log(ratio)) < best[0]:
            best = (abs(np.log(ratio)), depths, widths)
        if ratio > 2:  # MACs grow with the total: nothing closer lies further on
            break
    assert best is not None
    return best[1], best[2]


def make_row(
    sweep: str,
    seed: int,
    *,
    arch: dict[str, Any] | None = None,
    cw: float,
    macs_target: float | None = None,
    epochs: int = 10,
    rng: np.random.Generator | None = None,
    study: str | None = None,
) -> dict[str, Any]:
    """One fake ok row; clean/PGD/AA follow from `cw` with fixed gaps (as in the paper's
    tables: PGD about 2.7 points above CW, AA about 1.5 below)."""
    a: dict[str, Any] = {
        "block": "basic",
        "activation_order": "pre",
        "conv_type": "standard",
        "se": "none",
        "se_reduction": 16,
        "kernel_size": 3,
        "activation": "relu",
        "norm": "batchnorm",
        "depths": [4, 4, 4],
        "widths": [10, 10, 10],
    }
    a.update(arch or {})
    rng = rng or np.random.default_rng(seed)
    config = {
        "sweep": sweep,
        "study": study or sweep,
        "seed": seed,
        "macs_target": macs_target,
        "arch": a,
        "train": {"method": "trades", "epochs": epochs, "eps": 8.0},
    }
    row = empty_row()
    row.update(
        sweep=sweep,
        study=study or sweep,
        trial_id=identity_hash({k: v for k, v in config.items() if k not in NOT_IDENTITY}),
        status="ok",
        seed=seed,
        macs_target=macs_target,
        dataset="cifar10",
        train_method="trades",
        epochs=epochs,
        eps=8.0,
        **_arch_columns(a),
        **_accuracies(cw, rng),
        **_RUN_COLUMNS,
        config=json.dumps(config),
        history="[]",
    )
    return row


def _arch_columns(a: dict[str, Any]) -> dict[str, Any]:
    """The architecture columns of a row, params and MACs from the approximations above."""
    k = a["kernel_size"]
    ks = max(k) if isinstance(k, list) else k
    return dict(
        block=a["block"],
        activation_order=a["activation_order"],
        conv_type=a["conv_type"],
        se=a["se"],
        kernel_size="/".join(map(str, k)) if isinstance(k, list) else str(k),
        activation=a["activation"],
        norm=a["norm"],
        **{f"depth{i + 1}": a["depths"][i] for i in range(3)},
        **{f"width{i + 1}": float(a["widths"][i]) for i in range(3)},
        params=approx_params(a["depths"], a["widths"], ks),
        macs=approx_macs(a["depths"], a["widths"], ks),
    )


def _accuracies(cw: float, rng: np.random.Generator) -> dict[str, Any]:
    """Clean, PGD and AA accuracy from CW's with the paper's gaps and a little noise (drawn
    in this order, so a seeded generator gives the same rows), and the points counted."""
    return dict(
        clean_acc=float(np.clip(cw + 0.31 + rng.normal(0, 0.004), 0, 1)),
        pgd_acc=float(np.clip(cw + 0.027 + rng.normal(0, 0.001), 0, 1)),
        cw_acc=float(np.clip(cw, 0, 1)),
        aa_acc=float(np.clip(cw - 0.015 + rng.normal(0, 0.001), 0, 1)),
        clean_n=10000,
        pgd_n=10000,
        cw_n=10000,
        aa_n=1000,
    )


# when, how long and on what a synthetic trial "ran": the same for every row
_RUN_COLUMNS = dict(
    started_at=pd.Timestamp("2026-01-01", tz="UTC"),
    ended_at=pd.Timestamp("2026-01-01 00:30", tz="UTC"),
    train_seconds=1500.0,
    eval_seconds=300.0,
    device=SYNTHETIC_DEVICE,
    sweeper_version="synthetic",
    torch_version="synthetic",
)


def scaling_rows(
    budgets: Iterable[float] = (5, 10, 20, 40),
    shares: Iterable[float] = np.arange(0.30, 0.91, 0.04),
    *,
    vertex: float | dict[float, float] = 0.7,
    curvature: float = -0.15,
    noise: float = 0.003,
    seeds: Sequence[int] = (0,),
    sweep: str = "compound",
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """Compound-scaling rows around a planted quadratic in the depth share (computed from
    each network's integer depths and widths): cw = base(budget) + curvature*(s - vertex)^2.
    Use a positive curvature or a vertex outside the shares for 'no optimum' data."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for g in budgets:
        v = vertex[g] if isinstance(vertex, dict) else vertex
        for s in shares:
            depths, widths = scaled_arch(float(g), round(float(s), 6))
            actual = sum(depths) / (sum(depths) + sum(widths))
            for seed in seeds:
                cw = 0.53 + 0.012 * np.log2(g / 5) + curvature * (actual - v) ** 2
                rows.append(
                    make_row(
                        sweep,
                        seed,
                        arch={"depths": list(depths), "widths": list(widths)},
                        macs_target=float(g),
                        cw=cw + rng.normal(0, noise),
                        rng=rng,
                    )
                )
    return to_frame(rows)


def study_rows(
    study: str,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    noise: float = 0.003,
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """Rows of one study: a block-level one of EFFECTS (at WRN-28-10's budget), or
    "depth" / "width" (a coarse grid; accuracy rises with log MACs, 2:2:1 depth splits
    and 2:2.5:1 width splits do best)."""
    rng = rng or np.random.default_rng(0)
    rows = []
    if study in EFFECTS:
        spec = EFFECTS[study]
        names = list(spec["factors"])
        for combo in pd.MultiIndex.from_product(list(spec["factors"].values())):
            arch = dict(zip(names, combo))
            cw = 0.53 + sum(spec["effect"].get(v, 0.0) for v in combo)
            for seed in seeds:
                rows.append(make_row(study, seed, arch=arch, cw=cw + rng.normal(0, noise), rng=rng))
    elif study in ("depth", "width"):
        values = [2, 4, 7, 11] if study == "depth" else [4, 10, 14, 20]
        ideal = np.array([2, 2, 1.0]) if study == "depth" else np.array([2, 2.5, 1.0])
        for combo in pd.MultiIndex.from_product([values] * 3):
            key = "depths" if study == "depth" else "widths"
            arch = {key: list(combo)}
            macs = approx_macs(arch.get("depths", [4, 4, 4]), arch.get("widths", [10, 10, 10]))
            split = np.array(combo, float) / sum(combo)
            cw = (
                0.53
                + 0.015 * np.log2(macs / WRN_28_10_MACS)
                - 0.2 * np.abs(split - ideal / ideal.sum()).sum() ** 2
            )
            rows.append(make_row(study, 0, arch=arch, cw=cw + rng.normal(0, noise), rng=rng))
    else:
        raise ValueError(
            f"unknown fake study {study!r}; choose from: {', '.join([*EFFECTS, 'depth', 'width'])}"
        )
    return to_frame(rows)


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with the schema's columns and Arrow types, as read_parquet gives."""
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=SCHEMA).to_pandas()


def write_results(frame: pd.DataFrame, root: str | Path) -> Path:
    """Write rows as the runner does: ROOT/<sweep>/<trial_id>.parquet, one row per file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    for row in frame[COLUMNS].to_dict("records"):
        folder = root / str(row["sweep"])
        folder.mkdir(parents=True, exist_ok=True)
        clean = {k: (None if _isna(v) else v) for k, v in row.items()}
        table = pa.Table.from_pylist([clean], schema=SCHEMA)
        pq.write_table(table, folder / f"{row['trial_id']}.parquet")
    return root


def _isna(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def fake_results(
    root: str | Path,
    studies: Iterable[str] = (
        "block_topology",
        "se",
        "activation",
        "normalization",
        "depth",
        "width",
        "compound",
    ),
    seed: int = 0,
) -> Path:
    """Write a results folder of fake sweeps (one subfolder each) for trying the report."""
    rng = np.random.default_rng(seed)
    frames = [scaling_rows(rng=rng) if s == "compound" else study_rows(s, rng=rng) for s in studies]
    return write_results(pd.concat(frames, ignore_index=True), root)


# --- known ground truth for the study-economics checks (sweeper.analysis.fidelity, adaptive order)

DEPTH_VALUES = (2, 3, 4, 5, 7, 9, 11)  # the depth study's grid of D1, D2, D3
DEPTH_OPTIMUM = (9.0, 9.0, 4.3)  # planted best blocks per stage: about 2 : 2 : 1


def planted_depth_cw(depths: Sequence[int], optimum: Sequence[float] = DEPTH_OPTIMUM) -> float:
    """A depth study's noiseless CW accuracy with one planted optimum: a smoothed cone in
    log-depth space around `optimum` (9 : 9 : 4.3, the paper's 2:2:1 split). Over the
    343-cell grid it spans about 8 points, the order of the paper's depth study; its best
    cell, D = 9/9/4, leads the next ones by 0.25 points or more."""
    gap = np.log(np.asarray(depths, float)) - np.log(np.asarray(optimum, float))
    return float(0.53 - 0.035 * np.sqrt((gap**2).sum() + 0.05**2))


def depth_grid_rows(
    values: Sequence[int] = DEPTH_VALUES,
    *,
    optimum: Sequence[float] = DEPTH_OPTIMUM,
    noise: float = 0.003,
    seed: int = 0,
    sweep: str = "depth",
) -> pd.DataFrame:
    """Every cell of a D1 x D2 x D3 grid (W 10/10/10, one seed): `planted_depth_cw` plus
    Gaussian noise of sd `noise`. The planted best cell is the grid's argmax of
    `planted_depth_cw`."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in itertools.product(values, repeat=3):
        cw = planted_depth_cw(d, optimum) + rng.normal(0, noise)
        rows.append(make_row(sweep, 0, arch={"depths": list(d)}, cw=cw, rng=rng))
    return to_frame(rows)


def fidelity_pair(
    networks: int = 60,
    tau: float = 0.6,
    *,
    seed: int = 0,
    epochs: tuple[int, int] = (10, 100),
    study: str = "depth",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One study at two fidelities (sweeps `<study>-e<epochs>`) whose CW accuracies have a
    planted population Kendall tau: the two are bivariate normal with correlation
    sin(pi tau / 2), whose Kendall tau is exactly `tau` (Greiner's relation)."""
    rng = np.random.default_rng(seed)
    cells = list(itertools.product(DEPTH_VALUES, repeat=3))
    picked = [cells[i] for i in rng.choice(len(cells), size=networks, replace=False)]
    r = np.sin(np.pi * tau / 2)
    z = rng.multivariate_normal([0.0, 0.0], [[1.0, r], [r, 1.0]], size=networks)
    sides = []
    for column, (e, mean) in enumerate(zip(epochs, (0.45, 0.53))):
        sweep, cw = f"{study}-e{e}", mean + 0.02 * z[:, column]
        rows = [
            make_row(sweep, 0, arch={"depths": list(d)}, cw=c, epochs=e, rng=rng, study=study)
            for d, c in zip(picked, cw)
        ]
        sides.append(to_frame(rows))
    return sides[0], sides[1]
