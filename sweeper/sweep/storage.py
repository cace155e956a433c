"""Where a sweep's files live beyond the driver: the results store every node must share, and
each node's scratch folders for the trials it runs.

Workers write their own rows and checkpoints, so on a multi-node cluster a results path that
is local to each node would scatter them over the workers' disks. `check_shared_store` asks a
task on every node to write a probe into the sweep folder and reads each back from the driver
before any trial starts; a node whose probe the driver cannot see is one clear error.

A trial works in a node-local scratch folder (fast for per-epoch `torch.save`; Ray uploads
each checkpoint to the store). A killed worker cannot remove its folder, so folder names
carry the host and pid that made them, and every trial start on a node removes the folders of
processes that no longer exist there: nothing left by killed runs accumulates.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from sweeper import results
from sweeper.errors import SweeperError
from sweeper.results.lease import pid_alive

PROBE_TIMEOUT_S = 180.0  # a loaded node may need a while to start a worker process


def _write_probe(sweep_uri: str, node_id: str, token: str,
                 data: tuple[list, str] | None = None) -> tuple[str, str | None]:  # fmt: skip
    """On one node: write `<state folder>/_ray/_probe/<node_id>-<token>`; return this host's name
    and, when `data` (needs, the driver's default folder) is given, the line saying which
    dataset this node cannot read (None: all there)."""
    fs, base = results.location(results.state_dir(sweep_uri))
    fs.create_dir(f"{base}/_ray/_probe", recursive=True)
    with fs.open_output_stream(f"{base}/_ray/_probe/{node_id}-{token}") as stream:
        stream.write(token.encode())
    return socket.gethostname(), _data_problem(data)


def _data_problem(data: tuple[list, str] | None) -> str | None:
    """The node's view of the sweep's data: the folder a trial here would read (a node's own
    absolute $SWEEPER_DATA wins over the driver's default, as in sweeper.data.adopt_data_dir)."""
    if not data:
        return None
    from sweeper.data import default_data_dir
    from sweeper.errors import DataError
    from sweeper.sweep.preflight import check_data

    needs, default = data
    own = default_data_dir()
    try:
        check_data(needs, str(own) if own.is_absolute() else default)
    except DataError as err:
        return str(err)
    return None


def check_shared_store(sweep_uri: str, *, timeout: float = PROBE_TIMEOUT_S,
                       data: tuple[list, str] | None = None) -> None:  # fmt: skip
    """Raise SweeperError naming the first node that does not see the results store (the
    driver's own view) at `sweep_uri`, or that cannot read the sweep's `data` (see
    `_write_probe`). A single-node cluster needs no check (the driver checked the data)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    fs, base = results.location(results.state_dir(sweep_uri))
    token = uuid.uuid4().hex[:12]
    probe = ray.remote(_write_probe)
    refs = {
        n["NodeID"]: probe.options(
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
        ).remote(sweep_uri, n["NodeID"], token, data)
        for n in nodes
    }
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
    probes = {n["NodeID"]: f"{base}/_ray/_probe/{n['NodeID']}-{token}" for n in nodes}
    try:
        for node in nodes:
            ref = refs[node["NodeID"]]
            answer = ref if ref in ready else None
            _check_node(node, answer, fs, probes[node["NodeID"]], sweep_uri, timeout)
    finally:
        for path in probes.values():
            try:
                fs.delete_file(path)
            except OSError:
                pass  # absent: the node wrote it elsewhere (the error says so)


def _check_node(node: dict[str, Any], answer: Any, fs: Any, probe: str, sweep_uri: str,
                timeout: float) -> None:  # fmt: skip
    import ray

    where = f"node {node.get('NodeManagerAddress', '?')} ({node['NodeID'][:8]})"
    if answer is None:
        raise SweeperError(f"{sweep_uri}: {where} did not answer the shared-storage probe "
                           f"within {timeout:.0f}s")  # fmt: skip
    try:
        host, problem = ray.get(answer)
    except Exception as err:  # noqa: BLE001 - the node's own error, reported on one line
        last = (str(err).strip().splitlines() or [type(err).__name__])[-1][:300]
        raise SweeperError(f"{sweep_uri}: {where} cannot write to the results store: {last}"
                           ) from None  # fmt: skip
    if problem:
        raise SweeperError(f"{where}, host {host}: {problem}")
    if fs.get_file_info(probe).type != pafs.FileType.File:
        raise SweeperError(
            f"{sweep_uri}: {where}, host {host}, writes results where this driver cannot see "
            f"them (its probe {probe} is missing here); every node must mount the results "
            "path at the same place, or use an object-store URI (s3://...)"
        )


def scratch_root() -> Path:
    """This node's area for trial scratch folders (per user: /tmp is shared)."""
    return Path(tempfile.gettempdir()) / f"sweeper-{os.getuid() if hasattr(os, 'getuid') else 0}"


def make_scratch(trial_id: str) -> str:
    """A fresh scratch folder for one trial, after removing those of dead processes."""
    root = scratch_root()
    root.mkdir(parents=True, exist_ok=True)
    clean_scratch(root)
    host = socket.gethostname().replace(".", "_")
    return tempfile.mkdtemp(prefix=f"{trial_id}.{host}.{os.getpid()}.", dir=root)


def clean_scratch(root: Path) -> list[Path]:
    """Remove scratch folders whose process (same host) is gone; return what was removed."""
    host = socket.gethostname().replace(".", "_")
    removed = []
    for entry in root.iterdir():
        parts = entry.name.split(".")
        if len(parts) < 4 or parts[1] != host or not parts[2].isdigit():
            continue  # not ours to judge (another host sharing this folder, or foreign)
        if pid_alive(int(parts[2])):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed
