"""What the nodes see of a sweep's files: the shared-storage check on a real two-node Ray
cluster (loopback, `ray start`), and trial scratch folders that killed runs cannot pile up."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import dead_pid, marked_env, tiny_space

from sweeper import results
from sweeper.sweep.storage import clean_scratch, make_scratch, scratch_root


def test_scratch_folders_of_dead_processes_are_removed_at_the_next_start() -> None:
    root = scratch_root()
    root.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace(".", "_")
    dead = root / f"0123456789abcdef.{host}.{dead_pid()}.x1"
    foreign = root / f"0123456789abcdef.another-node.{dead_pid()}.x2"
    for folder in (dead, foreign):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "last.pt").write_bytes(b"x")
    try:
        mine = Path(make_scratch("fedcba9876543210"))  # a trial starting on this node
        assert mine.parent == root
        assert mine.name.startswith(f"fedcba9876543210.{host}.{os.getpid()}.")
        assert not dead.exists() and foreign.exists()  # another host's folder is not ours
        assert mine not in clean_scratch(root) and mine.exists()  # a live process keeps its own
    finally:
        for folder in (dead, foreign, mine):
            shutil.rmtree(folder, ignore_errors=True)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True)  # fmt: skip
    return probe.returncode == 0


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert proc.poll() is None, path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} in {path}"
        time.sleep(0.2)


@pytest.mark.skipif(not _can_unshare(), reason="needs mount namespaces (unshare --mount)")
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="cleans up its processes via /proc")
def test_a_node_that_does_not_see_the_results_store_is_one_error(tmp_path: Path) -> None:
    """A head and a worker node (`ray start`, loopback); the worker's mount namespace hides the
    folder that holds one results store, as a node-local disk would. A sweep there stops
    before any trial with exit 2 naming the node and path; on a store both see, it runs."""
    from test_data import write_cifar10

    ray = Path(sys.executable).with_name("ray")
    space = tmp_path / "two.yaml"
    space.write_text(tiny_space("two"))
    hidden, shared = tmp_path / "node-local", tmp_path / "shared"
    hidden.mkdir()
    port, *agent = _free_ports(9)
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats", "--block"]

    def ports(first: int) -> list[str]:  # two nodes on one machine: unusual, distinct ports
        names = ("dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export",
                 "runtime-env-agent")  # fmt: skip
        return [f"--{name}-port={agent[first + i]}" for i, name in enumerate(names)]

    head_cmd = [str(ray), "start", "--head", f"--port={port}", "--include-dashboard=false",
                *ports(0), *common]  # fmt: skip
    node_cmd = " ".join([str(ray), "start", f"--address=127.0.0.1:{port}", *ports(4), *common])
    worker_cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                  f"mount -t tmpfs tmpfs {hidden} && exec {node_cmd}"]  # fmt: skip
    logs = tmp_path / "head.log", tmp_path / "worker.log"
    with marked_env() as env:
        env["RAY_AUTH_MODE"] = "disabled"
        started = []
        try:
            for cmd, log in zip((head_cmd, worker_cmd), logs):
                started.append(subprocess.Popen(cmd, env=env, stdout=log.open("w"),
                                                stderr=subprocess.STDOUT,
                                                start_new_session=True))  # fmt: skip
                _wait_for(log, "Ray runtime started", started[-1], timeout=300)
            address = ["--address", f"127.0.0.1:{port}"]
            run = [sys.executable, "-m", "sweeper", "run", str(space), *address]
            refused = subprocess.run([*run, "--results", str(hidden / "r")], env=env,
                                     capture_output=True, text=True, timeout=600)  # fmt: skip
            fine = subprocess.run([*run, "--results", str(shared / "r")], env=env,
                                  capture_output=True, text=True, timeout=600)  # fmt: skip
            # CIFAR that the driver sees and the worker node does not
            write_cifar10(hidden / "data", per_batch=4)
            cifar = tmp_path / "cifar.yaml"
            cifar.write_text(tiny_space("cifar").replace("dataset: synthetic, image_size: 8",
                                                         "dataset: cifar10"))  # fmt: skip
            no_data = subprocess.run([*run[:4], str(cifar), *address, "--results",
                                      str(shared / "r")], env={**env, "SWEEPER_DATA": str(
                                      hidden / "data")}, capture_output=True, text=True,
                                     timeout=600)  # fmt: skip
        finally:  # stop the cluster by process group (never `ray stop`: not only ours)
            for proc in started:
                os.killpg(proc.pid, signal.SIGKILL)
    assert refused.returncode == 2, refused.stderr[-3000:]
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: {hidden / 'r' / 'two'}: node ") and "Traceback" not in line
    assert "writes results where this driver cannot see them" in line
    assert f"its probe {hidden / 'r' / '_state' / 'two' / '_ray' / '_probe'}/" in line
    assert not list((hidden / "r" / "two").glob("*.parquet"))  # no trial started
    assert fine.returncode == 0, fine.stderr[-3000:]
    assert len(pd.read_parquet(shared / "r" / "two")) == 1  # its one trial, compacted
    assert no_data.returncode == 2, no_data.stderr[-3000:]
    [line] = no_data.stderr.strip().splitlines()
    assert line.startswith("error: node ") and "Traceback" not in line, line
    assert f": cifar10: no {hidden / 'data'}/cifar-10-batches-py/; expected " in line, line
    assert results.read(str(shared / "r" / "cifar")).empty  # no trial started
