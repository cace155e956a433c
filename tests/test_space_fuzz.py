"""Random mutations of the shipped search spaces: the parser and expander answer with a
ConfigError (one line, file named) or a valid expansion - never any other exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweeper.errors import ConfigError
from sweeper.space import expand, load

SPACES = Path(__file__).parents[1] / "search_spaces"
SHIPPED = sorted(p for p in SPACES.glob("*.yaml") if not p.name.startswith("_"))
# spaces cheap enough to expand on every example (no width matching over many archs)
EXPANDED = {"smoke.yaml", "robustresnets.yaml", "activation.yaml", "normalization.yaml"}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.floats(-2, 50), st.just(float("nan")),
    st.sampled_from(["", "relu", "nope", "arch.depths.0", "1e-3", "[", "basic", "7"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["grid", "n", "x", "arch.block",
                                                             "choice", "min"]), inner,
                                            max_size=2)),
    max_leaves=6,
)  # fmt: skip


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "delete", "add", "empty"]))
        if action == "replace":
            parent[path[-1]] = data.draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "empty":
            parent[path[-1]] = type(parent[path[-1]])() if isinstance(
                parent[path[-1]], (list, dict, str)) else None  # fmt: skip
        elif isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["bogus", "n", "grid", "seed", "extends"]))] = (
                data.draw(values))  # fmt: skip
        else:
            parent.append(data.draw(values))
    return doc


def _check(path: Path, text: str, expand_too: bool) -> None:
    try:
        space = load(path)
        if expand_too:
            expand(space)
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message and message.startswith(str(path)), message


def _mutated_document(shipped: Path, data: st.DataObject, tmp_path_factory: Any) -> None:
    doc = yaml.safe_load(shipped.read_text())
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "_protocol.yaml").write_text((SPACES / "_protocol.yaml").read_text())
    mutated = _mutate(doc, data)
    path = folder / shipped.name
    path.write_text(yaml.safe_dump(mutated))
    _check(path, path.read_text(), shipped.name in EXPANDED)


@pytest.mark.parametrize("shipped", SHIPPED, ids=[p.stem for p in SHIPPED])
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_documents(shipped: Path, data: st.DataObject, tmp_path_factory: Any) -> None:
    _mutated_document(shipped, data, tmp_path_factory)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_smoke_documents(data: st.DataObject, tmp_path_factory: Any) -> None:
    """The README's default space, mutated more often: it is the one users edit first."""
    _mutated_document(SPACES / "smoke.yaml", data, tmp_path_factory)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_smoke_text(data: st.DataObject, tmp_path_factory: Any) -> None:
    """Byte-level edits of smoke.yaml: broken YAML must be a ConfigError with a line number."""
    text = (SPACES / "smoke.yaml").read_text()
    pos = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 8))
    insert = data.draw(
        st.sampled_from(
            [
                "",
                ":",
                "- ",
                "[",
                "]",
                "{",
                "\t",
                "  ",
                "\n",
                "&a",
                "*a",
                "!!python/object:os.system",
                "'",
                '"',
                "#",
                "0",
            ]
        )
    )
    mutated = text[:pos] + insert + text[pos + cut :]
    path = tmp_path_factory.mktemp("fuzz") / "smoke.yaml"
    path.write_text(mutated)
    _check(path, mutated, True)
