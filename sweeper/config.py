"""TrialConfig: everything one trial needs, fully resolved and validated.

Its canonical JSON (minus the `runtime` section, which says where and how fast to
run, not what to run) is what `trial_id` hashes and what a row stores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sweeper.models.spec import ArchSpec

AA_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr", "fab")  # pyautoattack's names


def check_aa_attacks(version: str, attacks: Sequence[str] | None) -> None:
    """A list of attacks goes with version 'custom' only, and only AutoAttack's names."""
    if version != "custom" and attacks is not None:
        raise ValueError(f"attacks={list(attacks)} needs version 'custom' (got {version!r})")
    if version == "custom":
        unknown = sorted(set(attacks or ()) - set(AA_ATTACKS))
        if not attacks or unknown:
            raise ValueError(
                f"version 'custom' needs a list of attacks from {', '.join(AA_ATTACKS)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            )


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Section):
    dataset: Literal["cifar10", "cifar100", "digits", "synthetic"] = "cifar10"
    train_size: int | None = Field(None, ge=1)  # first N training images; None: all
    test_size: int | None = Field(None, ge=1)  # first N test images for clean/PGD/CW
    holdout_size: int = Field(512, ge=0)  # training images held out for per-epoch history
    augment: bool = True  # random crop (4 px padding) + horizontal flip
    rotate_degrees: float = Field(0.0, ge=0)  # CIFAR-100 protocol uses 20
    image_size: int = Field(32, ge=4, le=1024)  # digits / synthetic only; CIFAR is 32
    synthetic_classes: int = Field(10, ge=2, le=100_000)
    synthetic_train: int = Field(1000, ge=1, le=1_000_000)
    synthetic_test: int = Field(500, ge=1, le=1_000_000)


FGSM_STEP = 1.25  # FGSM-RS step as a multiple of eps (Wong et al. 2020)
L2_STEP = 0.25  # L2 training attack step as a multiple of eps (2.5 * eps / 10 steps, Madry)
L2_METHODS = ("pgd", "trades")
THREATS = ("linf", "l2", "corruptions")

# Upper bounds, checked before anything runs: a typo (epochs: 1e9) would otherwise start a
# trial that never ends, or allocate a batch larger than any dataset. Each is far beyond the
# study (100-200 epochs, batches of 128-512, PGD-10 in training, PGD-20 / CW-40 in evaluation;
# AutoAttack's APGD runs 100 steps) and the robustness literature (at most a few thousand
# epochs on CIFAR).
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536  # more than CIFAR's 50,000 training images in one batch
MAX_ATTACK_STEPS = 1_000


class TrainConfig(_Section):
    method: Literal["clean", "pgd", "trades", "mart", "fgsm"] = "trades"
    # Length of the lr schedule (milestones are fractions of it).
    epochs: int = Field(100, ge=1, le=MAX_EPOCHS)
    # Train only the first stop_epoch epochs of that schedule (the reference's --stop_epoch);
    # None: all of them.
    stop_epoch: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(2e-4, ge=0)
    nesterov: bool = False
    grad_clip: float | None = Field(5.0, gt=0)  # gradient-norm clipping; None: off
    schedule: Literal["multistep", "cosine", "onecycle", "constant"] = "multistep"
    milestones: tuple[float, ...] = (0.75, 0.9)  # fractions of the run, lr x gamma at each
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: float = Field(0.0, ge=0, le=MAX_EPOCHS)
    # Threat of the training attack (PGD-AT and TRADES): linf, or l2 (eps and step_size
    # then in L2 units of [0, 1] images, e.g. eps 0.5)
    norm: Literal["linf", "l2"] = "linf"
    eps: float = Field(8.0, ge=0)  # L-inf radius in 1/255 pixel units (norm l2: L2 radius)
    # Attack step in 1/255 pixel units. Unset: 2 (PGD-AT, TRADES, MART: the reference's
    # 2/255), FGSM_STEP * eps (fgsm) or L2_STEP * eps (norm l2); the stored config holds
    # the number used.
    step_size: float = Field(2.0, gt=0)
    steps: int = Field(10, ge=1, le=MAX_ATTACK_STEPS)  # attack steps during training
    beta: float = Field(6.0, ge=0)  # TRADES / MART regulariser weight
    ema: float | None = Field(None, gt=0, lt=1)  # weight-averaging decay; None: off

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        # Epoch numbers here (e.g. [75, 90]) would silently switch the lr drops off.
        if any(not 0 < m <= 1 for m in v) or list(v) != sorted(v):
            raise ValueError(f"expected increasing fractions of the run in (0, 1], got {list(v)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _method_step(cls, data: Any) -> Any:
        """An unset step_size is the method's own: FGSM_STEP * eps for fgsm, else 2."""
        if not isinstance(data, dict) or data.get("step_size") is not None:
            return data
        data = {k: v for k, v in data.items() if k != "step_size"}
        eps = data.get("eps", 8.0)
        if not isinstance(eps, (int, float)) or eps <= 0:
            return data
        if data.get("norm") == "l2":
            data["step_size"] = L2_STEP * float(eps)
        elif data.get("method") == "fgsm":
            data["step_size"] = FGSM_STEP * float(eps)
        return data

    @model_validator(mode="after")
    def _l2_methods(self) -> TrainConfig:
        if self.norm == "l2" and self.method not in L2_METHODS:
            raise ValueError(
                f"norm: l2 training is for methods {', '.join(L2_METHODS)} "
                f"(got method {self.method!r})"
            )
        return self

    @model_validator(mode="after")
    def _stop_within_schedule(self) -> TrainConfig:
        if self.stop_epoch is not None and self.stop_epoch > self.epochs:
            raise ValueError(
                f"stop_epoch: {self.stop_epoch} is past the end of the {self.epochs}-epoch "
                "schedule (train.epochs)"
            )
        return self

    @property
    def trained_epochs(self) -> int:
        """Epochs actually trained: stop_epoch, or the whole schedule."""
        return self.stop_epoch if self.stop_epoch is not None else self.epochs


class EvalConfig(_Section):
    eps: float = Field(8.0, ge=0)  # 1/255 pixel units
    pgd_steps: int = Field(20, ge=0, le=MAX_ATTACK_STEPS)  # 0: skip PGD
    pgd_step_size: float = Field(0.8, gt=0)  # 1/255 pixel units
    cw_steps: int = Field(40, ge=0, le=MAX_ATTACK_STEPS)  # 0: skip CW
    cw_step_size: float = Field(0.8, gt=0)
    # CW confidence: the margin loss stops rising once a wrong class leads by cw_kappa
    # logits; 0 as the reference's `_pgd_cw_whitebox` (core/dist_engine.py).
    cw_kappa: float = Field(0.0, ge=0)
    aa_size: int = Field(1000, ge=0)  # first N test images for AutoAttack; 0: skip
    aa_version: Literal["standard", "plus", "rand", "custom"] = "standard"
    aa_attacks: tuple[str, ...] | None = None  # with aa_version=custom
    batch_size: int = Field(500, ge=1, le=MAX_BATCH)
    # PGD steps of the per-epoch holdout check
    history_pgd_steps: int = Field(10, ge=0, le=MAX_ATTACK_STEPS)
    # The weights scored: those after the last epoch, or those of the epoch with the best
    # holdout PGD accuracy (the reference keeps its best-PGD-20 epoch; it picks it on the
    # test set, we on the holdout split, which the test metrics never see).
    checkpoint: Literal["last", "best"] = "last"
    # Threat models evaluated (sweeper.threats): linf (PGD / CW / AutoAttack above), l2
    # (PGD-L2 and AutoAttack norm L2 at l2_eps), corruptions (CIFAR-10-C protocol).
    # Clean accuracy is always measured.
    threats: tuple[Literal["linf", "l2", "corruptions"], ...] = ("linf",)
    l2_eps: float = Field(0.5, ge=0)  # L2 radius in [0, 1] pixel units (RobustBench's 0.5)
    l2_pgd_steps: int = Field(20, ge=0)  # 0: skip PGD-L2
    l2_pgd_step_size: float = Field(0.0625, gt=0)  # L2 units; 2.5 * 0.5 / 20 (Madry's rule)
    # First N test images per corruption and severity (of the test split as loaded)
    corruption_size: int = Field(1000, ge=1)

    @field_validator("threats")
    @classmethod
    def _threats_once(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"expected distinct threats from {', '.join(THREATS)}")
        return v

    @model_validator(mode="after")
    def _aa_attacks_match_version(self) -> EvalConfig:
        """Checked here, not after training: a bad pairing would fail the trial at its end."""
        try:
            check_aa_attacks(self.aa_version, self.aa_attacks)
        except ValueError as err:
            raise ValueError(f"aa_attacks / aa_version: {err}") from None
        return self


class RuntimeConfig(_Section):
    """How and where to run; not part of the trial's identity."""

    device: str = "auto"  # auto: cuda when available
    data_dir: str | None = None  # default: $SWEEPER_DATA or ./data
    download: bool = False  # torchvision download, where torchvision imports
    bf16: bool = True  # autocast for training and attacks on CUDA
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the model on CUDA
    eval_fp32: bool = True
    deterministic: bool = False
    # Data-parallel workers (one GPU each) training this trial through Ray Train; 1: in the
    # trial's own process. train.batch_size stays the global batch, split over the workers.
    workers: int = Field(1, ge=1)


# How a trial runs and where its row goes, not what it is: no part of its trial_id
NOT_IDENTITY = ("runtime", "sweep", "study")

# Keys added after trials were stored: left out of a trial's identity while they hold their
# defaults, so the trial ids (and evaluation ids) of earlier configs stay what they were.
LATER_KEYS = {
    "train": ("norm",),
    "eval": ("threats", "l2_eps", "l2_pgd_steps", "l2_pgd_step_size", "corruption_size"),
}


def drop_later_defaults(section: str, dump: dict[str, Any]) -> dict[str, Any]:
    """`dump` (one section's model_dump) without the LATER_KEYS that hold their default."""
    model = {"train": TrainConfig, "eval": EvalConfig}[section]
    fields = model.model_fields
    out = dict(dump)
    for key in LATER_KEYS.get(section, ()):
        default = fields[key].default
        if key in out and _json_equal(out[key], default):
            del out[key]
    return out


def _json_equal(a: Any, b: Any) -> bool:
    return json.dumps(a) == json.dumps(list(b) if isinstance(b, tuple) else b)


class TrialConfig(_Section):
    sweep: str = "adhoc"  # the results folder's name (`run --sweep NAME` renames it)
    study: str | None = None  # the space file's `sweep:` name, kept when a run is renamed
    seed: int = 0
    macs_target: float | None = None  # GMACs budget a derived architecture was fitted to
    arch: ArchSpec = Field(default_factory=ArchSpec)  # built when used: imports torch
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @field_validator("arch", mode="before")
    @classmethod
    def _resolve_preset(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            from sweeper.models.presets import resolve_arch

            return resolve_arch(value)
        return value

    @model_validator(mode="after")
    def _best_needs_holdout(self) -> TrialConfig:
        if self.eval.checkpoint == "best" and (
            self.data.holdout_size == 0 or self.eval.history_pgd_steps == 0
        ):
            raise ValueError(
                "eval.checkpoint: 'best' picks the epoch by holdout PGD accuracy, so it needs "
                "data.holdout_size > 0 and eval.history_pgd_steps > 0"
            )
        return self

    @model_validator(mode="after")
    def _batch_splits_over_workers(self) -> TrialConfig:
        """Every worker trains on an equal slice of the global batch (as the reference's
        main_dist.py: batch_size // world_size); a remainder would change the batch."""
        if self.train.batch_size % self.runtime.workers:
            raise ValueError(
                f"runtime.workers: {self.runtime.workers} workers cannot split "
                f"train.batch_size {self.train.batch_size} into equal slices"
            )
        return self

    def identity(self) -> dict[str, Any]:
        """The config that defines the experiment (no runtime, no sweep or study name)."""
        ident = self.model_dump(mode="json", exclude=set(NOT_IDENTITY))
        for section in LATER_KEYS:
            ident[section] = drop_later_defaults(section, ident[section])
        return ident

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def trial_id(self) -> str:
        return identity_hash(self.identity())


def identity_hash(identity: dict[str, Any]) -> str:
    """The trial_id: 16 hex digits of sha256 over the identity's compact, key-sorted JSON.

    The one definition, for a validated config (TrialConfig.trial_id), a dict that failed
    validation (its failed row) and synthetic rows alike. Raises TypeError / ValueError
    when the dict does not serialise."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
