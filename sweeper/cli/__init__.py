"""The `sweeper` command. Each command group lives in its own module and registers here."""

from __future__ import annotations

import functools
import sys

import typer

from sweeper.errors import SweeperError, from_validation_error

app = typer.Typer(
    name="sweeper",
    help="Adversarial-robustness architecture sweeps on Ray Tune.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from sweeper import __version__

        print(f"sweeper {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: bool = typer.Option(False, "--version", callback=_print_version,
                                      is_eager=True, help="Print the version and exit."),
) -> None:
    """Adversarial-robustness architecture sweeps on Ray Tune."""


@app.command()
def version(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
) -> None:
    """Print the sweeper and torch versions."""
    import json

    import torch

    from sweeper import __version__

    if as_json:
        print(json.dumps({"sweeper": __version__, "torch": torch.__version__}))
        return
    print(f"sweeper {__version__}, torch {torch.__version__}")


@functools.cache
def _register() -> None:
    from sweeper.cli import (
        analysis_cmds,
        economics_cmds,
        model_cmds,
        perf_cmds,
        store_cmds,
        studies_cmds,
        sweep_cmds,
        threat_cmds,
        trial_cmds,
    )

    for module in (model_cmds, trial_cmds, sweep_cmds, store_cmds, studies_cmds, analysis_cmds,
                   perf_cmds, economics_cmds, threat_cmds):  # fmt: skip
        module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line on stderr and return exit code 2."""
    from pydantic import ValidationError

    _register()
    try:
        code = app(args=argv, standalone_mode=False)  # a command's typer.Exit(n) returns n
    except SweeperError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValidationError as err:
        print(f"error: {from_validation_error(err)}", file=sys.stderr)
        return 2
    except typer.Exit as err:
        return err.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except BaseException as err:  # SIGTERM before a run's trials (sweeper.sweep.signals)
        from sweeper.sweep.signals import TERMINATED_EXIT, Terminated

        if not isinstance(err, Terminated):
            raise
        print("interrupted (SIGTERM) before any trial started; run the same command again",
              file=sys.stderr)  # fmt: skip
        return TERMINATED_EXIT
    except typer.TyperException as err:  # usage errors: click's message, exit code 2
        show = getattr(err, "show", None)
        if show is None:
            raise
        show()
        return int(getattr(err, "exit_code", 2))
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
