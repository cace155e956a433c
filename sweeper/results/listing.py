"""Listings and deletes that never leave the folder they start in: symbolic links are
skipped, never followed.

A link placed under a sweep folder (to another sweep's rows, to someone's run folder) would
make readers count rows that are not the sweep's and clean-up delete files that are not
sweeper's. pyarrow's LocalFileSystem follows links, so local listings use `os.scandir`
without following them; on other filesystems (object stores have no links) entries whose
path is not below the folder asked for are dropped. Each link found is logged once.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow.fs as pafs

log = logging.getLogger(__name__)
_warned: set[str] = set()


@dataclass(frozen=True)
class Entry:
    """One file or folder found in a listing."""

    path: str
    base_name: str
    is_dir: bool
    mtime_ns: int | None = None
    size: int | None = None


def warn_link(path: str) -> None:
    """Say once per process that a link was skipped."""
    if path not in _warned:
        _warned.add(path)
        log.warning("%s is a symbolic link: skipped (sweeper never follows links out of a "
                    "results folder)", path)  # fmt: skip


def linked(fs: pafs.FileSystem, root: str, path: str) -> bool:
    """Whether `path`, or a folder between `root` and it, is a symbolic link (local only;
    `root` itself may be one: the user chose it)."""
    if not isinstance(fs, pafs.LocalFileSystem) or not path.startswith(root.rstrip("/") + "/"):
        return False
    current = root.rstrip("/")
    for part in path[len(current) + 1 :].split("/"):
        current = f"{current}/{part}"
        if os.path.islink(current):
            warn_link(current)
            return True
    return False


def entries(fs: pafs.FileSystem, path: str, *, recursive: bool = False,
            skip: Callable[[str], bool] | None = None) -> list[Entry]:  # fmt: skip
    """Files and folders in `path` (none when it does not exist), links left out; `skip(name)`
    leaves out an entry and, for a folder, everything in it. Raises OSError."""
    if isinstance(fs, pafs.LocalFileSystem):  # `path` itself may be a link: the caller's pick
        return _local(path, recursive, skip)
    prefix = path.rstrip("/") + "/"
    selector = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
    found = []
    for info in fs.get_file_info(selector):
        inner = info.path[len(prefix) :] if info.path.startswith(prefix) else None
        if inner is None or ".." in inner.split("/"):
            warn_link(info.path)  # a key outside the folder asked for: never ours
            continue
        if skip is not None and any(skip(part) for part in inner.split("/")):
            continue
        if info.type in (pafs.FileType.File, pafs.FileType.Directory):
            found.append(Entry(info.path, info.base_name, info.type == pafs.FileType.Directory,
                               info.mtime_ns, info.size))  # fmt: skip
    return found


def _local(path: str, recursive: bool, skip: Callable[[str], bool] | None) -> list[Entry]:
    try:
        scan = os.scandir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    with scan:
        for item in scan:
            if skip is not None and skip(item.name):
                continue
            if item.is_symlink():
                warn_link(item.path)
                continue
            is_dir = item.is_dir(follow_symlinks=False)
            if not is_dir and not item.is_file(follow_symlinks=False):
                continue  # a socket, a fifo: nothing sweeper writes
            stat = item.stat(follow_symlinks=False)
            found.append(Entry(item.path, item.name, is_dir, stat.st_mtime_ns, stat.st_size))
            if is_dir and recursive:
                found += _local(item.path, True, skip)
    return found


def delete_dir(fs: pafs.FileSystem, root: str, path: str) -> bool:
    """Delete the folder `path` below `root` unless it, or a folder on the way to it, is a
    link; links inside it are removed as links, their targets left alone. True if deleted."""
    if linked(fs, root, path):
        return False
    if isinstance(fs, pafs.LocalFileSystem):
        if not os.path.isdir(path):
            return False
        shutil.rmtree(path)  # unlinks links found inside, never descends into them
        return True
    fs.delete_dir(path)
    return True
