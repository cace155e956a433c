"""The driver's progress display without Ray running: Tune's callback calls are made by hand
with stand-in trials and a fake clock."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("ray")
from helpers import tiny_space  # noqa: E402
from rich.console import Console  # noqa: E402

from sweeper.space import load  # noqa: E402
from sweeper.sweep.plan import PARAM, make_plan  # noqa: E402
from sweeper.sweep.progress import SweepProgress  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Setup = tuple[SweepProgress, list[Any], list[str], io.StringIO, Clock]


def _setup(tmp_path: Path, cells: str = "[relu, gelu, elu]", epochs: int = 1,
           **kw: Any) -> Setup:  # fmt: skip
    body = f"axes:\n  - grid: {{arch.activation: {cells}}}\n"
    text = tiny_space("prog", textwrap.dedent(body)).replace("epochs: 1", f"epochs: {epochs}")
    path = tmp_path / "prog.yaml"
    path.write_text(text)
    plan = make_plan(load(path), str(tmp_path / "r"))
    out, clock = io.StringIO(), Clock()
    view = SweepProgress(plan, metric="cw_acc", stream=out, clock=clock, **kw)
    trials = [SimpleNamespace(trial_id=f"t{i}", config={PARAM: c.model_dump_json()},
                              get_error=lambda: "") for i, c in enumerate(plan.to_run)]  # fmt: skip
    return view, trials, [c.trial_id for c in plan.to_run], out, clock


def _lines(out: io.StringIO) -> list[str]:
    return [line.split(" ", 2)[2] for line in out.getvalue().splitlines()]


def test_the_eta_counts_the_time_running_trials_have_spent(tmp_path: Path) -> None:
    """Issue 19: the ETA stayed frozen while slow trials ran."""
    view, (a, b, c), _, _, clock = _setup(tmp_path)
    with view:
        view.on_trial_start(0, [], a)
        clock.now += 100
        view.on_trial_result(0, [], a, {"status": "ok", "cw_acc": 0.3})
        view.on_trial_complete(0, [], a)  # one trial: 100 s
        view.on_trial_start(0, [], b)
        view.on_trial_start(0, [], c)
        clock.now += 60
        first = view.eta_seconds()
        clock.now += 30
        later = view.eta_seconds()
    assert first == pytest.approx(40)  # two running trials 60 s into a 100 s trial
    assert later == pytest.approx(10)


def test_the_eta_follows_a_running_trials_epochs(tmp_path: Path) -> None:
    view, (a, *_), _, _, clock = _setup(tmp_path, "[relu]", epochs=10)
    with view:
        view.on_trial_start(0, [], a)
        assert view.eta_seconds() is None  # nothing to go by yet
        clock.now += 20
        view.on_trial_result(0, [], a, {"epoch": 1})
        clock.now += 20
        view.on_trial_result(0, [], a, {"epoch": 2})  # 20 s an epoch, 8 to go
        assert view.eta_seconds() == pytest.approx(160)


def test_batch_mode_logs_epochs_at_a_bounded_rate_and_says_a_trial_resumed(
    tmp_path: Path,
) -> None:
    view, (a, b, _), ids, out, clock = _setup(tmp_path, epochs=10, epoch_every=60.0)
    with view:
        view.on_trial_start(0, [], a)
        for epoch in range(1, 11):  # 10 s epochs: a line at 1, 7 and the last
            clock.now += 10
            view.on_trial_result(0, [], a, {"epoch": epoch, "holdout_pgd_acc": 0.25})
        view.on_trial_start(0, [], b)
        view.on_trial_result(0, [], b, {"epoch": 4})  # went on from epoch 3's checkpoint
    lines = _lines(out)
    epochs = [line for line in lines if line.startswith(f"epoch   {ids[0]}")]
    assert [line.split()[2] for line in epochs] == ["1/10", "7/10", "10/10"]
    assert epochs[0].endswith("holdout pgd 25.0")
    assert f"resumed {ids[1]} from its checkpoint (epoch 3)" in lines
    assert not any(line.startswith(f"resumed {ids[0]}") for line in lines)


def test_a_retried_trial_says_where_it_resumed(tmp_path: Path) -> None:
    view, (a, *_), ids, out, _ = _setup(tmp_path, "[relu]", epochs=5)
    with view:
        view.on_trial_start(0, [], a)
        view.on_trial_result(0, [], a, {"epoch": 1})
        view.on_trial_result(0, [], a, {"epoch": 2})
        view.on_trial_recover(0, [], a)
        view.on_trial_start(0, [], a)
        view.on_trial_result(0, [], a, {"epoch": 3})
    assert f"resumed {ids[0]} from its checkpoint (epoch 2)" in _lines(out)


def _render(view: SweepProgress, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(view.render())
    return out.getvalue()


def test_the_live_view_shows_running_epochs_and_whole_trial_ids(tmp_path: Path) -> None:
    view, (a, b, c), ids, _, _ = _setup(tmp_path, epochs=10, plain=False, enabled=False)
    view.on_trial_start(0, [], a)
    view.on_trial_result(0, [], a, {"epoch": 3})
    view.on_trial_start(0, [], b)
    view.on_trial_result(0, [], b, {"status": "ok", "clean_acc": 0.9, "pgd_acc": 0.4,
                                    "cw_acc": 0.3, "aa_acc": 0.2})  # fmt: skip
    view.on_trial_complete(0, [], b)
    text = _render(view)
    assert "3/10" in text
    assert ids[0] in text and ids[1] in text  # not cut to '175...' at 80 columns


def test_the_live_view_ranks_like_status(tmp_path: Path) -> None:
    """`sweeper status` ranks by the strongest attack measured (AA when there is one)."""
    view, (a, b, _), ids, _, _ = _setup(tmp_path, enabled=False)
    for trial, cw, aa in ((a, 0.5, 0.1), (b, 0.3, 0.2)):
        view.on_trial_start(0, [], trial)
        view.on_trial_result(0, [], trial, {"status": "ok", "cw_acc": cw, "aa_acc": aa})
        view.on_trial_complete(0, [], trial)
    assert view.ranked_by() == "aa_acc"
    text = _render(view, 120)
    assert "best so far (by aa_acc)" in text
    assert text.index(ids[1]) < text.index(ids[0])


def test_the_live_view_renders_at_a_bounded_rate_and_misses_no_event(tmp_path: Path) -> None:
    """Issue 19: a render per Tune event ranks every finished trial each time (quadratic over
    a long run); events closer than the redraw interval wait for the next step."""
    view, (a, b, c), _, _, clock = _setup(tmp_path, plain=False)
    renders = []
    with view:
        view.render = lambda: renders.append(len(view.finished)) or ""  # type: ignore[method-assign]
        for trial in (a, b, c):  # three trials end within one redraw interval
            view.on_trial_start(0, [], trial)
            view.on_trial_result(0, [], trial, {"status": "ok", "cw_acc": 0.3})
            view.on_trial_complete(0, [], trial)
        assert len(renders) <= 1
        view.on_step_end(0, [])  # still within the interval: nothing new
        clock.now += 1
        view.on_step_end(0, [])  # the next step draws what the skipped events changed
        assert renders[-1] == 3
        clock.now += 1
        count = len(renders)
        view.on_step_end(0, [])  # nothing happened since: no render
        assert len(renders) == count
