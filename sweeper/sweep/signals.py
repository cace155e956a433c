"""SIGTERM, what SLURM sends at scancel, at the time limit and on preemption, handled as
Ctrl+C: Tune stops the running trials (each keeps its last epoch's checkpoint), the run
writes its summary and "interrupted" line, the lease is released, and the exit code is 143
(128 + SIGTERM; Ctrl+C gives 130).

Ray's driver installs a SIGTERM handler of its own (`sys.exit`, and its core worker's crash
dump), so the handler is (re)installed once Ray runs. Under SLURM the Ray nodes get the same
SIGTERM at the same moment and may be gone before Tune has stopped: if the run has not ended
`GRACE_S` seconds after the signal (SLURM's KillWait is 30 s), a watchdog prints the
interrupted line, releases the lease and exits 143 without waiting for Ray.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

TERMINATED_EXIT = 128 + signal.SIGTERM  # 143
GRACE_S = float(os.environ.get("SWEEPER_TERM_GRACE_S", 20))


class Terminated(BaseException):
    """SIGTERM arrived where no Tune run was there to stop: unwind (releasing the lease) and
    exit 143. A BaseException, so no `except Exception` of a trial or library swallows it."""


class Termination:
    """Whether SIGTERM arrived, and what to do about it; see `handle_sigterm`."""

    def __init__(self, on_give_up: Callable[[Termination], None], grace: float = GRACE_S
                 ) -> None:  # fmt: skip
        self.received = False
        self.done = False  # set when the run ended on its own: the watchdog only exits
        self.plan: Any = None  # the run's plan and SweepProgress, once there (for the line)
        self.progress: Any = None
        self._on_give_up = on_give_up
        self._grace = grace

    def install(self) -> None:
        """(Re)install the handler; only the main thread may (elsewhere: left as it is)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:
            return  # a second SIGTERM (srun forwards, SLURM repeats): the first one stands
        self.received = True
        threading.Thread(target=self._watchdog, name="sigterm-watchdog", daemon=True).start()
        tune_stop = signal.getsignal(signal.SIGUSR1)  # Tune's "stop the run" while it runs
        if callable(tune_stop) and getattr(tune_stop, "__name__", "") != "_handle":
            tune_stop(signal.SIGUSR1, frame)
            return
        raise Terminated

    def _watchdog(self) -> None:
        threading.Event().wait(self._grace)
        if not self.done:
            try:
                self._on_give_up(self)
            finally:
                sys.stderr.flush()
                os._exit(TERMINATED_EXIT)


def interrupted_line(unfinished: int, signal_name: str | None = None) -> str:
    """The last line of an interrupted run (Ctrl+C: no signal named; SIGTERM: named)."""
    how = f" ({signal_name})" if signal_name else ""
    return (f"interrupted{how}: {unfinished} trial(s) left unfinished; run the same command "
            "again to finish them")


@contextmanager
def handle_sigterm(on_give_up: Callable[[Termination], None]) -> Iterator[Termination]:
    """SIGTERM handled as described above while the block runs; the previous handler after.
    `on_give_up` runs in the watchdog before it exits the process (print, release)."""
    term = Termination(on_give_up)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    term.install()
    try:
        yield term
    finally:
        term.done = True
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)
