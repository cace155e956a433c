"""One base error for everything a user can cause; the CLI turns it into one line and exit 2."""

from __future__ import annotations


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
