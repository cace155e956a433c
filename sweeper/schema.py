"""The one result schema: every row of every sweep has exactly these columns.

Fixed Arrow types keep one-file-per-row datasets readable in one
`pandas.read_parquet(...)` call. Fractions are in [0, 1]; eps and eval_eps are in 1/255 units.
New columns go at the end (readers of older sweeps see them as null there).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

_COLUMNS: list[tuple[str, pa.DataType]] = [
    # identity
    ("sweep", pa.string()),
    ("study", pa.string()),  # the space's `sweep:` name; differs from sweep after --sweep NAME
    ("trial_id", pa.string()),
    ("status", pa.string()),  # ok | failed
    ("error", pa.string()),  # null when ok
    ("seed", pa.int64()),
    # architecture; per-stage values are "3" when uniform, "3/5/7" when they vary
    ("block", pa.string()),
    ("activation_order", pa.string()),
    ("conv_type", pa.string()),
    ("se", pa.string()),
    ("kernel_size", pa.string()),
    ("activation", pa.string()),
    ("norm", pa.string()),
    ("depth1", pa.int64()),
    ("depth2", pa.int64()),
    ("depth3", pa.int64()),
    ("width1", pa.float64()),
    ("width2", pa.float64()),
    ("width3", pa.float64()),
    ("params", pa.int64()),
    # multiply-accumulates of one 32x32 image, whatever the data's image size: the unit of
    # macs_target, the dry run and `sweeper model` (the paper's CIFAR budgets)
    ("macs", pa.int64()),
    ("macs_target", pa.float64()),  # GMACs budget, when the arch was derived from one
    # training
    ("dataset", pa.string()),
    ("train_method", pa.string()),
    ("epochs", pa.int64()),  # length of the lr schedule
    ("stop_epoch", pa.int64()),  # epochs trained: train.stop_epoch, or all of the schedule
    ("eps", pa.float64()),  # TRAINING attack radius (train.eps), 1/255; eval's: eval_eps
    ("precision", pa.string()),  # training forward passes: bf16 (autocast) | fp32
    # metrics (fractions) and the number of test points each was measured on, all at radius
    # eval_eps: PGD-k (k: pgd_steps, CE loss), CW-k (k: cw_steps, margin loss), AutoAttack on
    # the first aa_n test points only (an AA above PGD on a small aa_n is the subset's noise)
    ("clean_acc", pa.float64()),
    ("pgd_acc", pa.float64()),
    ("cw_acc", pa.float64()),
    ("aa_acc", pa.float64()),
    ("clean_n", pa.int64()),
    ("pgd_n", pa.int64()),
    ("cw_n", pa.int64()),
    ("aa_n", pa.int64()),
    # what the metrics were measured with
    ("cw_kappa", pa.float64()),  # CW confidence (eval.cw_kappa)
    ("checkpoint", pa.string()),  # weights scored: last | best (eval.checkpoint)
    ("best_epoch", pa.int64()),  # epoch with the best holdout PGD accuracy (null: no holdout)
    ("eval_precision", pa.string()),  # bf16 | fp32
    # provenance and cost
    ("started_at", pa.timestamp("us", tz="UTC")),
    ("ended_at", pa.timestamp("us", tz="UTC")),
    ("train_seconds", pa.float64()),
    ("eval_seconds", pa.float64()),
    ("device", pa.string()),
    ("workers", pa.int64()),  # data-parallel workers that trained it (runtime.workers)
    ("sweeper_version", pa.string()),
    ("torch_version", pa.string()),
    ("config", pa.string()),  # the full resolved TrialConfig as JSON
    ("history", pa.string()),  # per-epoch records as a JSON list
    # the trained network: a plain state dict (torch.load(..., weights_only=True)), as a path
    # relative to the folder holding the row (_weights/<trial_id>/final.pt); null: none kept
    ("weights", pa.string()),
    # provenance of the code and machine that produced the row (sweeper.provenance)
    ("git_commit", pa.string()),  # null outside a git checkout; "-dirty" when edited
    ("host", pa.string()),
    ("python_version", pa.string()),
    ("numpy_version", pa.string()),
    ("ray_version", pa.string()),
    ("autoattack_version", pa.string()),
    ("space_sha256", pa.string()),  # the space as loaded (extends merged, --set applied)
    # what the metrics were measured with (null in rows of older sweeps: see `config`)
    ("eval_eps", pa.float64()),  # EVALUATION attack radius (eval.eps), 1/255 pixel units
    ("pgd_steps", pa.int64()),  # steps of the PGD attack behind pgd_acc (eval.pgd_steps)
    ("cw_steps", pa.int64()),  # steps of the CW attack behind cw_acc (eval.cw_steps)
    # other threat models (eval.threats; sweeper.threats); null where not evaluated
    ("train_norm", pa.string()),  # threat of the training attack: linf | l2 (train.norm)
    ("l2_eps", pa.float64()),  # L2 radius in [0, 1] pixel units (eval.l2_eps)
    ("l2_pgd_acc", pa.float64()),  # PGD-L2 (eval.l2_pgd_steps)
    ("l2_aa_acc", pa.float64()),  # AutoAttack norm L2 on the first aa_size points
    ("l2_pgd_n", pa.int64()),
    ("l2_aa_n", pa.int64()),
    ("corruption_acc", pa.float64()),  # mean over 15 corruptions x 5 severities
    # JSON: {corruption: [accuracy at severity 1, ..., 5]}
    ("corruption_accs", pa.string()),
    ("corruption_source", pa.string()),  # CIFAR-10-C / CIFAR-100-C files, or generated (seed)
    ("corruption_n", pa.int64()),  # test images per corruption and severity
]

SCHEMA = pa.schema(_COLUMNS)
# Best rows are ranked by the strongest attack the rows were measured with, everywhere they
# are shown (`sweeper run`'s live view, `sweeper status`)
RANKING = ("aa_acc", "cw_acc", "pgd_acc", "clean_acc")


def ranking_metric(measured: set[str]) -> str:
    """The first metric of RANKING among the `measured` ones (those some row has)."""
    return next((m for m in RANKING if m in measured), "clean_acc")

COLUMNS: list[str] = [name for name, _ in _COLUMNS]
PROVENANCE = ["git_commit", "host", "python_version", "numpy_version", "ray_version",
              "autoattack_version"]  # fmt: skip

THREAT_METRICS = ["l2_eps", "l2_pgd_acc", "l2_aa_acc", "l2_pgd_n", "l2_aa_n", "corruption_acc",
                  "corruption_accs", "corruption_source", "corruption_n"]  # fmt: skip

# A row of the evaluation table (`sweeper eval`: stored weights evaluated again, possibly
# with other settings); kept apart from the training rows in RESULTS/_state/<sweep>/_eval/.
_TYPES = dict(_COLUMNS)
_EVAL_NAMES = [
    "sweep", "trial_id", "eval_id", "status", "error", "weights",
    "clean_acc", "pgd_acc", "cw_acc", "aa_acc", "clean_n", "pgd_n", "cw_n", "aa_n",
    *THREAT_METRICS, "evaluation", "config", "started_at", "ended_at", "eval_seconds", "device",
    "sweeper_version", "torch_version", *PROVENANCE,
]  # fmt: skip
_EVAL_ONLY = {
    "eval_id": pa.string(),  # hash of `evaluation` and the weights file: same id, same numbers
    "evaluation": pa.string(),  # JSON: the eval and data sections the metrics were measured with
}
EVAL_SCHEMA = pa.schema([(n, _EVAL_ONLY.get(n) or _TYPES[n]) for n in _EVAL_NAMES])
EVAL_COLUMNS: list[str] = list(_EVAL_NAMES)


def empty_row() -> dict[str, Any]:
    """A row with every column present and null."""
    return dict.fromkeys(COLUMNS)


def check_row(row: dict[str, Any], columns: list[str] = COLUMNS) -> None:
    """Reject a row whose keys differ from the schema (a bug, not user input)."""
    missing = [c for c in columns if c not in row]
    extra = [c for c in row if c not in columns]
    if missing or extra:
        raise KeyError(f"row does not match the result schema: missing {missing}, extra {extra}")
