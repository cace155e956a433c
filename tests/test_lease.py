"""One driver per sweep: the lease file in the results store (sweeper.results.lease)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from helpers import dead_pid

from sweeper.results import Lease, LeaseHeld


def _write_holder(sweep: Path, generation: int, **fields: object) -> None:
    holder = {"host": socket.gethostname(), "pid": 1, "started_at": "2026-01-01 00:00:00 UTC",
              "renewed_at": time.time(), "ttl": 60.0, "token": "theirs", **fields}  # fmt: skip
    lease = sweep.parent / "_state" / sweep.name / "_lease"  # in the sweep's state folder
    lease.mkdir(parents=True, exist_ok=True)
    (lease / f"{generation}.json").write_text(json.dumps(holder))


def test_a_second_driver_is_refused_with_the_first_ones_name(tmp_path: Path) -> None:
    first = Lease(str(tmp_path / "s")).acquire()
    with pytest.raises(LeaseHeld) as refused:
        Lease(str(tmp_path / "s")).acquire()
    message = str(refused.value)
    assert f"host {socket.gethostname()}" in message and f"pid {first.holder.pid}" in message
    assert "started " in message and "\n" not in message
    first.release()
    assert Lease(str(tmp_path / "s")).acquire().generation == 1  # free again


def test_a_lease_whose_driver_died_is_taken_over_at_once(tmp_path: Path) -> None:
    _write_holder(tmp_path / "s", 3, pid=dead_pid())
    lease = Lease(str(tmp_path / "s")).acquire()
    assert lease.generation == 4
    assert sorted(p.name for p in (tmp_path / "_state" / "s" / "_lease").iterdir()) == ["4.json"]


def test_a_lease_not_renewed_within_its_ttl_is_taken_over(tmp_path: Path) -> None:
    _write_holder(tmp_path / "s", 1, host="another-node", renewed_at=time.time() - 61)
    assert Lease(str(tmp_path / "s")).acquire().generation == 2
    _write_holder(tmp_path / "t", 1, host="another-node", renewed_at=time.time() - 30)
    with pytest.raises(LeaseHeld, match="host another-node, pid 1"):
        Lease(str(tmp_path / "t")).acquire()


def test_of_drivers_racing_for_a_free_sweep_exactly_one_wins(tmp_path: Path) -> None:
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def race() -> None:
        start.wait()
        try:
            Lease(str(tmp_path / "s")).acquire()
            outcomes.append("won")
        except LeaseHeld:
            outcomes.append("refused")

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["won"]


def test_the_holder_renews_and_notices_when_it_was_taken_over(tmp_path: Path) -> None:
    held = tmp_path / "_state" / "s" / "_lease"  # the sweep's state folder
    with Lease(str(tmp_path / "s"), ttl=0.4) as lease:
        first = json.loads((held / "1.json").read_text())["renewed_at"]
        deadline = time.monotonic() + 60
        while json.loads((held / "1.json").read_text())["renewed_at"] == first:
            assert time.monotonic() < deadline, "never renewed"
            time.sleep(0.05)
        with pytest.raises(LeaseHeld):  # renewed: still fresh for another driver
            Lease(str(tmp_path / "s")).acquire()
        _write_holder(tmp_path / "s", 2, host="another-node")  # it stalled; B took over
        assert not lease.renew() and lease.lost
        assert lease.taken_by is not None and lease.taken_by.host == "another-node"
    assert (held / "2.json").exists()  # leaving never removes B's lease
