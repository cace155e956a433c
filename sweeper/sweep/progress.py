"""What a running sweep is doing, on stderr, and what this run's trials came to.

A Ray Tune callback in the driver: it sees every trial start, report, retry and end, and keeps
the run's outcome (which trials finished, which failed and why) for the runner's summary and
exit code. On a terminal it draws a rich live view (counts, ETA, the running trials' epochs,
best rows). When stderr is not a terminal (a batch job's log, `sweeper run ... > log 2>&1`) it
writes plain lines instead, never wrapped, no ANSI codes: one when a trial starts, one when it
ends (its trial_id and metrics, or its one-line error), a trial's epochs (at most one line per
trial every `epoch_every` seconds, so a multi-hour trial is never silent and a fast one never
floods the log), a line when a trial resumed from a checkpoint or had to start over, and a
summary line (done / running / failed / pending, elapsed, ETA) at least every `summary_every`
seconds. stdout stays free for `--json`.
"""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING, Any

from ray import tune
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sweeper.schema import ranking_metric
from sweeper.sweep.plan import trial_config

if TYPE_CHECKING:
    from sweeper.sweep.plan import Plan

SHOWN = ("clean_acc", "pgd_acc", "cw_acc", "aa_acc")
SUMMARY_EVERY_S = 60.0
EPOCH_EVERY_S = 60.0
RENDER_EVERY_S = 0.5  # the live view redraws at 2 Hz: a render per event is wasted work


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def duration(seconds: float) -> str:
    """45s, 12m05s, 3h04m: short enough for a log line."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _error_line(trial: Any) -> str:
    """The last line of a trial's Ray error (the exception itself, not the traceback)."""
    try:
        text = trial.get_error() or ""
    except Exception:  # noqa: BLE001 - the error file may be gone with its node
        text = ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[-1] if lines else "the trial's worker died")[:300]


class SweepProgress(tune.Callback):
    """Counts, outcome and display of one run's trials.

    `metric` is the search's (kept for the record); best rows are ranked the way `sweeper
    status` ranks them (sweeper.schema.RANKING). `clock` is for tests.
    """

    def __init__(self, plan: Plan, *, metric: str, enabled: bool = True, top: int = 5,
                 plain: bool | None = None, summary_every: float = SUMMARY_EVERY_S,
                 epoch_every: float = EPOCH_EVERY_S, stream: IO[str] | None = None,
                 clock: Any = time.monotonic) -> None:  # fmt: skip
        self.plan = plan
        self.total = plan.budget
        self.metric = metric
        self.top = top
        self.enabled = enabled
        self.plain = plain  # None: decided by whether stderr is a terminal
        self.summary_every = summary_every
        self.epoch_every = epoch_every
        self.stream = stream
        self.clock = clock
        self.running: set[str] = set()
        self.finished: dict[str, dict[str, Any]] = {}  # tune trial id -> final metrics
        self.lost: dict[str, tuple[dict[str, Any], str]] = {}  # errored in Ray: params, error
        self.ids: dict[str, str] = {}  # tune trial id -> sweeper trial_id
        self.epochs: dict[str, tuple[int, int | None]] = {}  # tune id -> (epoch, of how many)
        self.started_at = clock()
        self.durations: list[float] = []
        self._starts: dict[str, float] = {}  # first start of each trial
        self._attempts: dict[str, tuple[float, int]] = {}  # this attempt: started, first epoch
        self._epoch_lines: dict[str, float] = {}
        self._of: dict[str, int | None] = {}  # tune id -> epochs the trial trains
        self._warned: set[str] = set()
        self._last_summary = self.started_at
        self._live: Live | None = None
        self._rendered = -RENDER_EVERY_S  # when the live view last got a new render
        self._stale = False  # events since

    # --- context: the display ------------------------------------------------------------
    def __enter__(self) -> SweepProgress:
        if not self.enabled:
            return self
        stream = self.stream or sys.stderr
        if self.plain is None:
            self.plain = not stream.isatty()
        if self.plain:
            self._line(f"{self.plan.space.name}: {self.total} trial(s) to run; "
                       f"rows in {self.plan.sweep_uri}")  # fmt: skip
        else:
            console = Console(file=stream)
            self._live = Live(self.render(), console=console, refresh_per_second=2)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(None, None, None)
            self._live = None
        elif self.enabled and self.plain:
            self._line(self.summary())

    def _refresh(self) -> None:
        """A new render for the live view, at most every RENDER_EVERY_S: a render ranks every
        finished trial, so one per event would make a run's display cost quadratic in its
        trials. What a skipped event changed is drawn at the next step (`on_step_end`)."""
        if self._live is None:
            return
        now = self.clock()
        self._stale = now - self._rendered < RENDER_EVERY_S
        if not self._stale:
            self._rendered = now
            self._live.update(self.render())

    def _line(self, text: str) -> None:
        """One log line, never wrapped (a wrapped error line breaks grep)."""
        if self.enabled and self.plain:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            print(f"{stamp} {text}", file=self.stream or sys.stderr, flush=True)

    def _id(self, trial: Any) -> str:
        """The sweeper trial_id of a Tune trial (Tune's own id while it has none)."""
        if trial.trial_id not in self.ids:
            try:
                config = trial_config(self.plan.space, trial.config or {})
            except Exception:  # noqa: BLE001 - an id for a log line must not end the sweep
                config = None
            self.ids[trial.trial_id] = config.trial_id if config else f"tune-{trial.trial_id}"
            self._of[trial.trial_id] = config.train.trained_epochs if config else None
        return self.ids[trial.trial_id]

    # --- Tune callback -------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        now = self.clock()
        self._attempts[trial.trial_id] = (now, 0)
        if trial.trial_id not in self._starts:
            self._starts[trial.trial_id] = now
            self._line(f"start   {self._id(trial)} ({len(self._starts)} of {self.total})")
        self._refresh()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:  # fmt: skip
        if result.get("warning") and trial.trial_id not in self._warned:
            self._warned.add(trial.trial_id)
            self._line(f"warning {self._id(trial)}: {result['warning']}")
        if "status" in result:  # the final report carries the row's status
            # Tune fills its own `trial_id` into every result: ours comes from the config
            self.finished[trial.trial_id] = {**result, "trial_id": self._id(trial)}
            self._line(self._end_line(trial, result))
        elif isinstance(result.get("epoch"), int):
            self._epoch(trial, result)
        self._refresh()

    def _epoch(self, trial: Any, result: dict[str, Any]) -> None:
        """A trial's epoch report: its place in the live view, a bounded-rate log line, and
        a line when the first epoch of an attempt shows it went on from a checkpoint."""
        epoch, tid, now = int(result["epoch"]), self._id(trial), self.clock()
        of = self._of.get(trial.trial_id)
        self.epochs[trial.trial_id] = (epoch, of)
        started, first = self._attempts.get(trial.trial_id, (now, 0))
        if not first:
            self._attempts[trial.trial_id] = (started, epoch)
            if epoch > 1:  # training starts at the checkpoint's epoch + 1
                self._line(f"resumed {tid} from its checkpoint (epoch {epoch - 1})")
        last = self._epoch_lines.get(trial.trial_id)
        if last is None or now - last >= self.epoch_every or epoch == of:
            self._epoch_lines[trial.trial_id] = now
            numbers = "".join(f"  {name} {_pct(result.get(key))}" for name, key in
                              (("holdout clean", "holdout_clean_acc"),
                               ("holdout pgd", "holdout_pgd_acc")) if key in result)  # fmt: skip
            self._line(f"epoch   {tid} {epoch}/{of or '?'}{numbers}")

    def _end_line(self, trial: Any, result: dict[str, Any]) -> str:
        tid = self._id(trial)
        if result["status"] == "failed":
            return f"failed  {tid}: {result.get('error') or 'see its row'}"
        if result["status"] != "ok":
            return f"skipped {tid}: {result['status']}"
        start = self._starts.get(trial.trial_id)
        took = f"  in {duration(self.clock() - start)}" if start is not None else ""
        metrics = "  ".join(f"{m.removesuffix('_acc')} {_pct(result.get(m))}" for m in SHOWN)
        return f"ok      {tid}  {metrics}{took}"

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._attempts.pop(trial.trial_id, None)
        self._line(f"retry   {self._id(trial)}: {_error_line(trial)} "
                   "(Ray restarts it from its last checkpoint)")  # fmt: skip

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _error_line(trial)
        self.lost[trial.trial_id] = (dict(trial.config or {}), error)
        if trial.trial_id not in self.finished:
            self.finished[trial.trial_id] = {"status": "failed", "trial_id": self._id(trial),
                                             "error": error}  # fmt: skip
            self._line(f"failed  {self._id(trial)}: {error}")
        self._end(trial)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._stale:  # Tune steps at least every 0.1 s
            self._refresh()
        now = self.clock()
        if self.plain and now - self._last_summary >= self.summary_every:
            self._last_summary = now
            self._line(self.summary())

    def _end(self, trial: Any) -> None:
        self.running.discard(trial.trial_id)
        self.epochs.pop(trial.trial_id, None)
        start = self._starts.get(trial.trial_id)
        if start is not None:
            self.durations.append(self.clock() - start)
        self._refresh()

    # --- the outcome ---------------------------------------------------------------------
    def failures(self) -> list[tuple[str, str]]:
        """(trial_id, one-line error) of every trial of this run that failed."""
        return [(str(r["trial_id"]), str(r.get("error") or ""))
                for r in self.finished.values() if r.get("status") == "failed"]  # fmt: skip

    def counts(self) -> dict[str, int]:
        failed = sum(1 for r in self.finished.values() if r.get("status") == "failed")
        done = len(self.finished) - failed
        pending = max(0, self.total - len(self.finished) - len(self.running))
        return {"done": done, "failed": failed, "running": len(self.running), "pending": pending}

    def eta_seconds(self) -> float | None:
        """Time left: what the running trials still need (their own epochs' pace, else the
        mean trial time, less the time they have already spent), then the pending trials'
        mean time spread over the trials running at once."""
        now = self.clock()
        spent = {t: now - self._starts[t] for t in self.running if t in self._starts}
        projected = {t: self._projected(t, s) for t, s in spent.items()}
        known = self.durations or [p for p in projected.values() if p is not None]
        if not known:
            return None
        mean = sum(known) / len(known)
        running_left = [max(0.0, (projected[t] or max(mean, s)) - s) for t, s in spent.items()]
        pending = self.counts()["pending"]
        parallel = max(1, len(self.running))
        spread = (sum(running_left) + pending * mean) / parallel
        return max(spread, max(running_left, default=0.0))

    def _projected(self, tune_id: str, spent: float) -> float | None:
        """A running trial's whole time from its epochs so far (None before its first)."""
        epoch, of = self.epochs.get(tune_id, (0, None))
        started, first = self._attempts.get(tune_id, (0.0, 0))
        done = epoch - first + 1  # epochs of this attempt
        if not of or not first or done <= 0:
            return None
        return spent + (self.clock() - started) / done * max(0, of - epoch)

    # --- rendering -----------------------------------------------------------------------
    def summary(self) -> str:
        """One plain line: the counts, elapsed time and ETA."""
        c = self.counts()
        eta = self.eta_seconds()
        return (f"{self.plan.space.name}: done {c['done']}, running {c['running']}, "
                f"failed {c['failed']}, pending {c['pending']} of {self.total}; "
                f"elapsed {duration(self.clock() - self.started_at)}, "
                f"ETA {duration(eta) if eta is not None else '-'}")  # fmt: skip

    def ranked_by(self) -> str:
        """The metric best rows are ranked by: the strongest attack any finished row has."""
        ok = [r for r in self.finished.values() if r.get("status") == "ok"]
        return ranking_metric({m for r in ok for m in SHOWN if r.get(m) is not None})

    def render(self) -> Group:
        c = self.counts()
        elapsed = self.clock() - self.started_at
        eta = self.eta_seconds()
        head = Text.assemble(
            ("done ", "bold"), (str(c["done"]), "green"), ("  running ", "bold"),
            (str(c["running"]), "cyan"), ("  failed ", "bold"), (str(c["failed"]), "red"),
            ("  pending ", "bold"), str(c["pending"]), f"  of {self.total}",
            f"   elapsed {duration(elapsed)}",
            f"   ETA {duration(eta)}" if eta is not None else "   ETA -",
        )  # fmt: skip
        parts: list[Any] = [head]
        if self.running:
            parts.append(self._running_table())
        ok = [r for r in self.finished.values() if r.get("status") == "ok"]
        metric = self.ranked_by()
        ok.sort(key=lambda r: r.get(metric) or 0.0, reverse=True)
        if ok:
            table = Table(title=f"best so far (by {metric})", title_justify="left")
            id_column(table)
            for name in SHOWN:
                table.add_column(name.removesuffix("_acc"), justify="right")
            for r in ok[: self.top]:
                table.add_row(str(r.get("trial_id", "")), *(_pct(r.get(m)) for m in SHOWN))
            parts.append(table)
        return Group(*parts)

    def _running_table(self) -> Table:
        table = Table(title="running", title_justify="left")
        id_column(table)
        table.add_column("epoch", justify="right")
        table.add_column("for", justify="right")
        now = self.clock()
        for tune_id in sorted(self.running, key=lambda t: self._starts.get(t, 0.0))[: self.top]:
            epoch, of = self.epochs.get(tune_id, (0, self._of.get(tune_id)))
            shown = f"{epoch}/{of or '?'}" if epoch else "-"
            table.add_row(self.ids.get(tune_id, tune_id), shown,
                          duration(now - self._starts.get(tune_id, now)))  # fmt: skip
        return table


def id_column(table: Table, header: str = "trial_id") -> None:
    """A trial_id column that is never cut or wrapped (other columns shrink instead)."""
    table.add_column(header, no_wrap=True, min_width=16)
