"""The package's imports run one way, down the data flow: no module imports (even lazily,
inside a function) a module that imports it back. Imports under `if TYPE_CHECKING:` are
annotations only and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sweeper"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.AST) -> list[ast.AST]:
    """Import nodes outside `if TYPE_CHECKING:` blocks."""
    found: list[ast.AST] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    graph[name].add(target if target in files else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names)
        # a package's __init__ is imported by its modules implicitly: not an edge worth a cycle
        graph[name] = {t for t in graph[name] if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return out


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "sweeper.sweep.runner" in graph and "sweeper.models.spec" in graph
    assert cycles(graph) == []


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_below_the_sweep_stage_imports_ray() -> None:
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if name.startswith(("sweeper.sweep", "sweeper.cli")):
            continue
        for node in _runtime_imports(ast.parse(path.read_text())):
            mods = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
            )
            assert not any(m == "ray" or m.startswith("ray.") for m in mods), name



# Floors, lowest first: a module may import its own floor or a lower one, never a higher one.
# A module's floor is that of the longest prefix naming it; a new top-level module must be
# given one here.
FLOORS: list[tuple[str, ...]] = [
    ("sweeper", "sweeper.errors", "sweeper.schema", "sweeper.provenance", "sweeper.distributed"),
    ("sweeper.models",),
    ("sweeper.config",),
    ("sweeper.space", "sweeper.data"),
    ("sweeper.attacks", "sweeper.results", "sweeper.corruptions"),
    ("sweeper.training", "sweeper.economics"),
    ("sweeper.analysis", "sweeper.trial", "sweeper.perf"),
    ("sweeper.reevaluate",),
    ("sweeper.sweep",),
    ("sweeper.api",),
    ("sweeper.cli",),
    ("sweeper.__main__",),
]


def floor_of(module: str) -> int:
    best, floor = -1, -1
    for i, prefixes in enumerate(FLOORS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, floor = len(p), i
    return floor


def with_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Importing `a.b.c` runs `a/b/__init__` first: an edge to every package above the
    target that the importer is not itself inside."""
    out = {name: set(targets) for name, targets in graph.items()}
    for name, targets in graph.items():
        for target in targets:
            parts = target.split(".")
            for n in range(1, len(parts)):
                package = ".".join(parts[:n])
                if package in graph and not name.startswith(package + "."):
                    out[name].add(package)
    return out


def reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_every_module_has_a_floor_and_imports_none_above_it() -> None:
    graph = with_package_inits(import_graph())
    assert [m for m in graph if floor_of(m) == 0 and not any(m == p for p in FLOORS[0])] == []
    upward = [f"{a} -> {b}" for a, ts in graph.items() for b in ts if floor_of(b) > floor_of(a)]
    assert upward == []
    assert cycles(graph) == []


def test_scheduling_reaches_no_analysis() -> None:
    """sweep/ decides what runs next; what it needs of study economics (the adaptive order,
    matching) must not pull in the analysis package, not even through a package's face."""
    graph = with_package_inits(import_graph())
    for name in graph:
        if name.startswith("sweeper.sweep"):
            assert not [t for t in reach(graph, name) if t.startswith("sweeper.analysis")], name
        if name.startswith("sweeper.economics"):
            assert not [t for t in reach(graph, name) if t.startswith("sweeper.analysis")], name


def test_perf_and_economics_are_packages_of_their_own() -> None:
    graph = import_graph()
    for gone in ("sweeper.perf", "sweeper.calibrate", "sweeper.scaling", "sweeper.results.match"):
        assert not (PACKAGE.parent / (gone.replace(".", "/") + ".py")).exists(), gone
    assert {"sweeper.perf.timing", "sweeper.perf.calibrate", "sweeper.economics.adaptive"} <= set(
        graph
    )


MAX_LINES = 60


def _docstring_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
        first.value.value, str
    ):
        return first.end_lineno - first.lineno + 1  # type: ignore[operator]
    return 0


def long_functions(source: str, limit: int = MAX_LINES) -> list[tuple[int, str, int]]:
    """(line, name, length) of every function or method, nested ones included, longer than
    `limit` and without a reason: a comment starting `# long:` on its `def` line or the line
    just above it (above the decorators, when it has any, or just above the `def`)."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = node.end_lineno - node.lineno + 1 - _docstring_lines(node)  # type: ignore[operator]
        if length <= limit:
            continue
        top = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        near = {lines[node.lineno - 1], lines[top - 2] if top >= 2 else "",
                lines[node.lineno - 2] if node.lineno >= 2 else ""}  # fmt: skip
        if any("# long:" in line and line.split("# long:", 1)[1].strip() for line in near):
            continue
        found.append((node.lineno, node.name, length))
    return found


def test_no_function_is_longer_than_60_lines_without_a_reason() -> None:
    """A function's length: its lines from the `def` line to its last line (nested functions
    count in their parent too), less its docstring. Over 60 lines, it needs a comment
    `# long: <why>` on the `def` line or the line just above it (or above its decorators):
    split it into named steps unless splitting would hurt reading."""
    over = [
        f"{path.relative_to(PACKAGE.parent)}:{line} {name} ({length} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, name, length in long_functions(path.read_text())
    ]
    assert over == []


def test_the_length_rule_counts_and_excuses_as_it_says() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(59))
    doc = '    """A docstring\n    of three\n    lines."""\n'
    assert long_functions(f"def f():\n{doc}{body}") == []  # 60 lines without the docstring
    assert long_functions(f"def f():\n{body}    x = 1\n") == [(1, "f", 61)]
    assert long_functions(f"# long: a table of options\ndef f():\n{body}    x = 1\n") == []
    assert long_functions(f"def f():  # long: one switch\n{body}    x = 1\n") == []
    assert long_functions(f"# long: above the decorator\n@d\ndef f():\n{body}    x = 1\n") == []
    assert long_functions(f"# long:\ndef f():\n{body}    x = 1\n") == [(2, "f", 61)]  # no reason
    nested = "class C:\n    def m(self):\n" + body.replace("    ", "        ") + "        y = 1\n"
    assert long_functions(nested) == [(2, "m", 61)]


def test_every_lane_entry_in_conftest_names_a_test_that_exists() -> None:
    """RAY_TESTS and SLOW_TESTS match by name: an entry left behind by a renamed test would
    silently put its successor in the quick lane."""
    from conftest import RAY_TESTS, SLOW_TESTS

    tests = Path(__file__).parent
    for entry in sorted(RAY_TESTS | SLOW_TESTS):
        file, _, prefix = entry.partition("::")
        assert (tests / file).is_file(), f"{entry}: no such test file"
        if prefix:
            names = {n.name for n in ast.walk(ast.parse((tests / file).read_text()))
                     if isinstance(n, ast.FunctionDef)}  # fmt: skip
            base = prefix.split("[")[0]
            assert any(n.startswith(base) for n in names), f"{entry}: no test of that name"
