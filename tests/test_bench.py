"""bench/throughput.py: well-formed records on CPU, and both loops take the same kind of step."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # spawned packing workers import `throughput` by this path too
import reference_loop  # noqa: E402
import throughput  # noqa: E402

from sweeper.config import TrainConfig  # noqa: E402
from sweeper.training import build_optimizer, make_step  # noqa: E402

KEYS = set(
    "model loop method batch_size images_per_s tflops mfu peak_mem_bytes device date".split()
)


def _records(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[dict]:
    assert throughput.main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def test_quick_json_has_both_loops(capsys: pytest.CaptureFixture[str]) -> None:
    models = ["wrn-16-4", "robustresnet-a1"]
    methods = ["trades", "pgd20-eval"]
    argv = f"--quick --json --steps 1 --models {','.join(models)} --methods {','.join(methods)}"
    records = _records(capsys, argv.split())
    assert len(records) == len(models) * len(methods) * 2
    seen = {(r["model"], r["method"], r["loop"]) for r in records}
    assert seen == {
        (m, k, loop) for m in models for k in methods for loop in ("reference", "sweeper")
    }
    for r in records:
        assert KEYS <= r.keys()
        assert r["images_per_s"] > 0 and r["tflops"] > 0
        assert r["mfu"] is None  # CPU: no bf16 peak to compare with
        assert r["device"].startswith("CPU") and r["batch_size"] == 4 and r["quick"]
        assert r["peak_mem_bytes"] is None or r["peak_mem_bytes"] > 0
        if r["loop"] == "sweeper":
            assert r["speedup"] > 0


def test_packing_quick(capsys: pytest.CaptureFixture[str]) -> None:
    (record,) = _records(capsys, ["--quick", "--json", "--steps", "1", "--packing", "2"])
    assert record["mode"] == "packing" and record["trials"] == 2
    assert record["single_images_per_s"] > 0 and record["packed_images_per_s"] > 0
    assert record["packing_speedup"] == pytest.approx(
        record["packed_images_per_s"] / record["single_images_per_s"]
    )


def test_data_parallel_quick(capsys: pytest.CaptureFixture[str]) -> None:
    """--workers 2 on CPU: two gloo processes train one model's DDP step on the global batch."""
    argv = "--quick --json --steps 1 --workers 2 --models wrn-16-4 --methods trades,pgd20-eval"
    (record,) = _records(capsys, argv.split())  # evaluation shards points: not timed here
    assert record["mode"] == "data_parallel" and record["loop"] == "sweeper-ddp"
    assert (record["workers"], record["backend"], record["method"]) == (2, "gloo", "trades")
    assert record["images_per_s"] > 0 and record["one_worker_images_per_s"] > 0
    assert record["scaling_efficiency"] == pytest.approx(record["speedup_vs_one_worker"] / 2)
    assert record["batch_size"] == 4 and record["images"] == 4  # one timed global batch


@pytest.mark.parametrize("method", ["trades", "pgd"])
def test_reference_and_sweeper_take_the_same_step(method: str) -> None:
    """Same weights, same batch: both steps train (finite loss, parameters move) and agree on
    the loss value up to the attacks' random starts."""
    from sweeper.models import build

    torch.manual_seed(0)
    spec = throughput.arch_for("wrn-16-4", quick=True)
    ref_model = build(spec)
    ours_model = copy.deepcopy(ref_model)
    before = [p.detach().clone() for p in ref_model.parameters()]
    x = torch.rand(8, 3, 32, 32)
    y = torch.randint(0, 10, (8,))
    cfg = TrainConfig(method=method, steps=10)

    opt = torch.optim.SGD(
        ref_model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    step_ref = (
        reference_loop.reference_trades_step
        if method == "trades"
        else reference_loop.reference_pgd_step
    )
    ref_loss = step_ref(ref_model, opt, x, y, cfg)

    device = torch.device("cpu")
    step = make_step(ours_model, build_optimizer(ours_model, cfg, device), cfg)
    ours_loss = float(step(x, y)[0])

    assert torch.isfinite(torch.tensor([ref_loss, ours_loss])).all()
    for model in (ref_model, ours_model):
        moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
        assert any(moved), "the step changed no parameter"
    assert ours_loss == pytest.approx(ref_loss, rel=0.1)


def test_reference_eval_counts_errors() -> None:
    from sweeper.models import build

    torch.manual_seed(0)
    model = build(throughput.arch_for("wrn-16-4", quick=True)).eval()
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    errors = reference_loop.reference_pgd_eval(model, x, y, steps=2)
    assert 0 <= errors <= 4


class _CountFlops(TorchDispatchMode):
    """FLOPs of every op actually run (FlopCounterMode's table; its module hooks would clash
    with the attacks' autograd.grad, so a plain dispatch mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = FlopCounterMode().flop_registry
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        count = self.table.get(func._overloadpacket)
        if count is not None:
            self.total += count(*args, **(kwargs or {}), out_val=out)
        return out


@pytest.mark.parametrize("method", ["trades", "pgd", "pgd20-eval"])
def test_flop_model_matches_counted_flops(method: str) -> None:
    """The documented cost (27 / 23 / 41 forward-equivalents) is what sweeper's step runs."""
    from sweeper.attacks import pgd
    from sweeper.models import build, count_macs

    spec = throughput.arch_for("wrn-16-4", quick=True)
    model = build(spec)
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    with _CountFlops() as counter:
        if method == "pgd20-eval":
            model.eval()
            x_adv = pgd(model, x, y, eps=8 / 255, step_size=0.8 / 255, steps=20)
            with torch.no_grad():
                model(x_adv)
        else:
            cfg = TrainConfig(method=method, steps=10)
            make_step(model, build_optimizer(model, cfg, torch.device("cpu")), cfg)(x, y)
    units = counter.total / 4 / (2 * count_macs(spec))
    assert units == pytest.approx(throughput.units_per_image(method), rel=0.03)


def test_assumed_rate_for_study_hours() -> None:
    """study_hours --assume-tflops: a constant FLOP rate, so hours = FLOPs / rate exactly."""
    import study_hours

    from sweeper.config import TrialConfig
    from sweeper.perf import calibrate as cal

    calib = study_hours.assumed_calibration(100.0)
    config = TrialConfig(train={"epochs": 1}, eval={"aa_size": 0, "pgd_steps": 0, "cw_steps": 0})
    seconds = cal.trial_seconds(config, calib, macs=10**9)
    images = (50000 - 512) // 128 * 128
    flops = 2e9 * (images * 27 + 512 * (1 + 21) + 10000 * 1)
    assert seconds["train_s"] + seconds["eval_s"] == pytest.approx(flops / 100e12)
