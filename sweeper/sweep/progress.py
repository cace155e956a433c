"""A live view of a running sweep (done / running / failed / pending, best rows, ETA).

A Ray Tune callback in the driver: it sees every trial start, report and end, and
renders with rich on stderr so stdout stays free for `--json`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ray import tune
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from sweeper.sweep.plan import Plan

SHOWN = ("clean_acc", "pgd_acc", "cw_acc", "aa_acc")


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


class SweepProgress(tune.Callback):
    """Counts and best rows of the sweep, refreshed as Tune reports."""

    def __init__(self, plan: Plan, *, metric: str, enabled: bool = True, top: int = 5) -> None:
        self.total = plan.budget
        self.metric = metric
        self.top = top
        self.enabled = enabled
        self.running: set[str] = set()
        self.finished: dict[str, dict[str, Any]] = {}  # tune trial id -> final metrics
        self.started_at = time.monotonic()
        self.durations: list[float] = []
        self._starts: dict[str, float] = {}
        self._live: Live | None = None

    # --- context: the live display -------------------------------------------------------
    def __enter__(self) -> SweepProgress:
        if self.enabled:
            console = Console(stderr=True)
            self._live = Live(self.render(), console=console, refresh_per_second=2,
                              transient=not console.is_terminal)  # fmt: skip
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(None, None, None)
            self._live = None

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    # --- Tune callback -------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        self._starts.setdefault(trial.trial_id, time.monotonic())
        self._refresh()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:  # fmt: skip
        if "status" in result:  # the final report carries the row's status
            self.finished[trial.trial_id] = result
        self._refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished.setdefault(trial.trial_id, {"status": "failed", "trial_id": "?"})
        self._end(trial)

    def _end(self, trial: Any) -> None:
        self.running.discard(trial.trial_id)
        start = self._starts.pop(trial.trial_id, None)
        if start is not None:
            self.durations.append(time.monotonic() - start)
        self._refresh()

    # --- rendering -----------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        failed = sum(1 for r in self.finished.values() if r.get("status") == "failed")
        done = len(self.finished) - failed
        pending = max(0, self.total - len(self.finished) - len(self.running))
        return {"done": done, "failed": failed, "running": len(self.running), "pending": pending}

    def eta_seconds(self) -> float | None:
        """Mean trial time x trials left / trials running at once."""
        if not self.durations:
            return None
        left = self.total - len(self.finished)
        parallel = max(1, len(self.running))
        return sum(self.durations) / len(self.durations) * left / parallel

    def render(self) -> Group:
        c = self.counts()
        elapsed = time.monotonic() - self.started_at
        eta = self.eta_seconds()
        head = Text.assemble(
            ("done ", "bold"), (str(c["done"]), "green"), ("  running ", "bold"),
            (str(c["running"]), "cyan"), ("  failed ", "bold"), (str(c["failed"]), "red"),
            ("  pending ", "bold"), str(c["pending"]), f"  of {self.total}",
            f"   elapsed {elapsed:,.0f}s",
            f"   ETA {eta:,.0f}s" if eta is not None else "   ETA -",
        )  # fmt: skip
        ok = [r for r in self.finished.values() if r.get("status") == "ok"]
        ok.sort(key=lambda r: r.get(self.metric) or 0.0, reverse=True)
        if not ok:
            return Group(head)
        table = Table(title=f"best so far (by {self.metric})", title_justify="left")
        table.add_column("trial_id")
        for name in SHOWN:
            table.add_column(name.removesuffix("_acc"), justify="right")
        for r in ok[: self.top]:
            table.add_row(str(r.get("trial_id", "")), *(_pct(r.get(m)) for m in SHOWN))
        return Group(head, table)
