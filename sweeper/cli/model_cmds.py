"""`sweeper model` (describe a preset or an arch YAML) and `sweeper scale` (RobustScaling)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from sweeper.errors import ConfigError, from_validation_error


def _load_arch(name_or_file: str) -> Any:
    """An ArchSpec from a preset name or a YAML file of ArchSpec fields (optionally `preset:`)."""
    from pydantic import ValidationError

    from sweeper.models import PRESETS, resolve_arch

    path = Path(name_or_file)
    is_file = path.suffix in (".yaml", ".yml") or path.exists()
    if not is_file:
        if name_or_file not in PRESETS:
            raise ConfigError(
                f"not a preset or a file: {name_or_file!r}; presets: {', '.join(sorted(PRESETS))}"
            )
        return resolve_arch(name_or_file)
    import yaml

    file = str(path)
    if not path.is_file():
        raise ConfigError("no such file", file=file)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read the file ({err.strerror})", file=file) from None
    except UnicodeDecodeError:
        raise ConfigError("expected UTF-8 text", file=file) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"malformed YAML: {' '.join(str(err).split())}", file=file) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of ArchSpec fields", file=file)
    preset = data.get("preset")
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
        raise ConfigError(
            f"unknown preset {preset!r}; choose from: {', '.join(sorted(PRESETS))}",
            file=file,
            key="preset",
        )
    try:
        return resolve_arch(data)
    except ValidationError as err:
        raise from_validation_error(err, file=file) from None
    except (ValueError, TypeError, OverflowError) as err:  # a validator of the models package
        raise ConfigError(f"invalid: {str(err).splitlines()[0]}", file=file) from None


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "/".join(_fmt(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def model(
    name_or_file: str = typer.Argument(
        ..., help="A preset name or a YAML file of ArchSpec fields."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: params, macs and the spec."),
) -> None:
    """Describe a network: its spec, parameter count and MACs of one 32x32 image."""
    from sweeper.models import count_macs, count_params

    spec = _load_arch(name_or_file)
    try:
        params, macs = count_params(spec), count_macs(spec)
    except (ValueError, OverflowError, RuntimeError) as err:  # e.g. a width too big to build
        raise ConfigError(f"cannot count the network: {str(err).splitlines()[0]}",
                          file=name_or_file) from None  # fmt: skip
    if as_json:
        out = {
            "name": name_or_file,
            "params": params,
            "macs": macs,
            "spec": spec.model_dump(mode="json"),
        }
        print(json.dumps(out, indent=2))
        return
    rows = [(k, _fmt(v)) for k, v in spec.model_dump().items()]
    rows += [
        ("params", f"{params / 1e6:.2f}M ({params:,})"),
        ("MACs", f"{macs / 1e9:.2f}G ({macs:,}, one 32x32 image)"),
    ]
    _print_table(name_or_file, rows)


def scale(
    target_gmacs: float = typer.Option(..., "--target-gmacs", help="MACs budget, in GMACs."),
    depth_share: float = typer.Option(0.7, "--depth-share", help="sum(D) / (sum(D) + sum(W))."),
    block: str = typer.Option("basic", "--block", help="Block name (basic, robust, ...)."),
    match_budget: bool = typer.Option(
        False,
        "--match-budget",
        help="Scale the widths by one fractional factor onto the budget (as compound.yaml).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: depths, widths, macs."),
) -> None:
    """RobustScaling: depths and widening factors that land on a MACs budget."""
    from pydantic import ValidationError

    from sweeper.models import count_macs, count_params, robust_scaling

    _check_scale_options(target_gmacs, depth_share, block)
    try:
        spec = robust_scaling(
            target_gmacs, depth_share=depth_share, block=block, match_budget=match_budget
        )
        macs, params = count_macs(spec), count_params(spec)
    except ValidationError as err:
        raise from_validation_error(err) from None
    except (ValueError, OverflowError, RuntimeError) as err:  # too big to build and count
        raise ConfigError(f"cannot build the network: {str(err).splitlines()[0]}",
                          key="--target-gmacs") from None  # fmt: skip
    depths, widths = list(spec.depths), [_num(w) for w in spec.widths]
    share = sum(depths) / (sum(depths) + sum(widths))
    if as_json:
        print(
            json.dumps(
                {
                    "block": block,
                    "target_gmacs": target_gmacs,
                    "depths": depths,
                    "widths": widths,
                    "macs": macs,
                    "params": params,
                    "depth_share": round(share, 4),
                }
            )
        )
        return
    _print_table(
        f"RobustScaling at {target_gmacs:g} GMACs",
        [
            ("block", block),
            ("depths", _fmt(depths)),
            ("widths", _fmt(widths)),
            ("depth share", f"{share:.3f} (wanted {depth_share:g})"),
            ("MACs", f"{macs / 1e9:.2f}G ({macs:,})"),
            ("params", f"{params / 1e6:.2f}M"),
        ],
    )


def _check_scale_options(target_gmacs: float, depth_share: float, block: str) -> None:
    """`sweeper scale`'s options, each bad one a ConfigError naming it."""
    from sweeper.models import BLOCKS

    if not math.isfinite(target_gmacs) or target_gmacs <= 0:
        raise ConfigError(f"must be positive and finite, got {target_gmacs}", key="--target-gmacs")
    if not 0 < depth_share < 1:
        raise ConfigError(f"must be in (0, 1), got {depth_share}", key="--depth-share")
    if block not in BLOCKS:
        raise ConfigError(
            f"unknown block {block!r}; choose from: {', '.join(BLOCKS)}", key="--block"
        )


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("model")(model)
    app.command("scale")(scale)
