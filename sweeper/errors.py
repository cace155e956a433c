"""One base error for everything a user can cause; the CLI turns it into one line and exit 2."""

from __future__ import annotations

import errno
import os
import re


class SweeperError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none): what a
    one-line report of a library's multi-line error shows."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class ConfigError(SweeperError):
    """Invalid configuration: names the file (when there is one) and the key path."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        self.detail = message
        where = ": ".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class DataError(SweeperError):
    """A dataset is missing or damaged; the message says where it was expected."""


class StorageError(SweeperError):
    """A write failed for a reason no retry fixes (disk full, read-only, quota): the run
    stops at once, with exit code 2, keeping every row already written."""


# Disk full, read-only, over quota, file too large: retrying the write cannot succeed
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG})
_ERRNO_IN_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)  # pyarrow's, torch's messages


def _storage_errno(err: BaseException) -> int | None:
    """The storage errno of `err` or of an error it was raised from (torch wraps them)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        code = getattr(err, "errno", None) if isinstance(err, OSError) else None
        if code is None:
            found = _ERRNO_IN_TEXT.search(str(err))
            code = int(found.group(1)) if found else None
        if code in STORAGE_ERRNOS:
            return code
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return None


def storage_error(err: BaseException, path: str) -> StorageError | None:
    """One line naming the path and the errno when `err` is a storage fault, else None."""
    if isinstance(err, StorageError):
        return err
    code = _storage_errno(err)
    if code is None:
        return None
    name = errno.errorcode.get(code, "?")
    return StorageError(
        f"{path}: cannot write: {os.strerror(code)} ({name}, errno {code}); free space or "
        "make the store writable, then run the same command again"
    )


class TrialFailed(SweeperError):
    """A trial stopped for a reason worth recording (divergence), not a bug."""


def from_validation_error(err: object, *, file: str | None = None, prefix: str = "") -> ConfigError:
    """Fold every problem of a pydantic ValidationError into one ConfigError line."""
    problems = []
    first_key = None
    for e in err.errors():  # type: ignore[attr-defined]
        key = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        first_key = first_key or key
        msg = e["msg"].removeprefix("Value error, ")
        problems.append(f"{key}: {msg}" if key else msg)
    return ConfigError("; ".join(problems), file=file)
