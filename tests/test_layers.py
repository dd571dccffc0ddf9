"""Every import in the product (mqinspect/, probes/, store/), those inside functions too, goes down the floors
listed in mqinspect/__init__.py's docstring, and no imports form a cycle.

The floors are read from the docstring, so the list a newcomer reads is the list that is enforced. The
checker is tested on small trees of its own first, so that a pass on the product is not a pass of a checker
that sees nothing.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mqinspect

REPO = Path(__file__).resolve().parents[1]
TREE_ROOTS = ("mqinspect", "probes", "store")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the deepest one of the tree the statement names)
    line: int

    def __str__(self) -> str:
        return f"{self.source} (line {self.line}) imports {self.target}"


def floors_from_docstring(docstring: str) -> list[tuple[str, tuple[str, ...]]]:
    """[(floor, its units)] from the top, read from the docstring's indented block: `name unit unit ...`,
    a line indented further carrying on the floor above it."""
    floors: list[tuple[str, list[str]]] = []
    for line in docstring.splitlines():
        if not line.startswith("    ") or not line.strip():
            continue
        words = line.split()
        if line[4] == " ":
            floors[-1][1].extend(words)
        else:
            floors.append((words[0], words[1:]))
    return [(name, tuple(units)) for name, units in floors]


def modules_of(repo: Path, roots: tuple[str, ...]) -> dict[str, Path]:
    """{dotted module name: its file} for every .py file under the roots (a package by its __init__)."""
    modules = {}
    for root in roots:
        for path in sorted((repo / root).rglob("*.py")):
            parts = path.relative_to(repo).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """The imports of one module that name a module of the tree, wherever they are in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    seen = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            # `from package import module` imports the module; `from module import name` the module
            named = [f"{base}.{alias.name}" for alias in node.names] if base else []
        else:
            continue
        for dotted in named:
            target = _deepest_module(dotted, modules)
            if target is not None and target != name and (target, node.lineno) not in seen:
                seen.add((target, node.lineno))
                yield Import(name, target, node.lineno)


def _absolute(module: str | None, level: int, package: str) -> str:
    if level == 0:
        return module or ""
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    return f"{base}.{module}" if module else base


def _deepest_module(dotted: str, modules: dict[str, Path]) -> str | None:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def unit_of(module: str, units: dict[str, int]) -> str | None:
    """The unit a module belongs to: the longest unit name that is the module or a package above it. A top
    package whose parts are on floors of their own (mqinspect) names its __init__ alone, so that a new
    subpackage is on no floor until it is given one."""
    found = [unit for unit in units if module == unit or module.startswith(unit + ".")]
    best = max(found, key=len, default=None)
    split = best is not None and "." not in best and any(unit.startswith(best + ".") for unit in units)
    return None if split and module != best else best


def floor_violations(
    floors: list[tuple[str, tuple[str, ...]]], modules: dict[str, Path]
) -> tuple[list[str], list[str]]:
    """(modules on no floor, imports that go up a floor or across to another unit of the same floor)."""
    level = {unit: index for index, (_name, units) in enumerate(floors) for unit in units}
    names = [name for name, _units in floors]
    unplaced = [module for module in modules if unit_of(module, level) is None]
    wrong = []
    for module, path in modules.items():
        source = unit_of(module, level)
        if source is None:
            continue
        for edge in imports_of(module, path, modules):
            target = unit_of(edge.target, level)
            if target is None or target == source or level[target] > level[source]:
                continue
            way = "up to" if level[target] < level[source] else "across"
            wrong.append(f"{edge}: {way} floor {names[level[target]]} from floor {names[level[source]]}")
    return unplaced, wrong


def import_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Every set of modules that import each other, directly or around a loop (Tarjan's strongly connected
    components of more than one module)."""
    graph = {
        module: sorted({edge.target for edge in imports_of(module, path, modules)})
        for module, path in modules.items()
    }
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in on_stack:
                lowest[module] = min(lowest[module], index[target])
        if lowest[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return sorted(cycles)


# --- the checker on trees of its own


def write_tree(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return modules_of(root, ("app", "lib"))


FLOORS_DOC = """Floors:

    top     app.cli
    middle  app.render
    data    app.sampling app.labs
    base    app app.errors
            app.render.units
    lib     lib
"""


def test_the_floors_are_read_from_the_docstring_with_continuation_lines():
    assert floors_from_docstring(FLOORS_DOC) == [
        ("top", ("app.cli",)),
        ("middle", ("app.render",)),
        ("data", ("app.sampling", "app.labs")),
        ("base", ("app", "app.errors", "app.render.units")),
        ("lib", ("lib",)),
    ]


def test_the_checker_finds_imports_up_and_across_floors_also_inside_functions(tmp_path):
    modules = write_tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/errors.py": "import lib.core\n",
            "app/cli/__init__.py": "",
            "app/cli/main.py": "from app.render import table\nfrom app.sampling.reader import read\n",
            "app/render/__init__.py": "",
            "app/render/table.py": "from .units import size, count\nfrom app.sampling import reader\n",
            "app/render/units.py": "",
            "app/sampling/__init__.py": "",
            "app/sampling/reader.py": (
                "def read():\n    from app.render.table import draw, fill\n    from ..labs import lab\n"
            ),
            "app/labs/__init__.py": "",
            "app/labs/lab.py": "from . import helper\nfrom app.errors import Oops\n",
            "app/labs/helper.py": "",
            "app/stray/__init__.py": "",
            "lib/__init__.py": "",
            "lib/core.py": "from app.errors import Oops\n",
        },
    )
    unplaced, wrong = floor_violations(floors_from_docstring(FLOORS_DOC), modules)
    assert unplaced == ["app.stray"]
    assert wrong == [
        "app.sampling.reader (line 2) imports app.render.table: up to floor middle from floor data",
        "app.sampling.reader (line 3) imports app.labs.lab: across floor data from floor data",
        "lib.core (line 1) imports app.errors: up to floor base from floor lib",
    ]


def test_the_checker_finds_cycles_made_by_imports_inside_functions(tmp_path):
    modules = write_tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/a.py": "import app.b\n",
            "app/b.py": "def later():\n    from app import c\n",
            "app/c.py": "from app.a import thing\n",
            "app/d.py": "import app.a\n",
            "lib/__init__.py": "",
        },
    )
    assert import_cycles(modules) == [["app.a", "app.b", "app.c"]]


# --- the product


def test_no_import_runs_back_up_a_floor():
    floors = floors_from_docstring(mqinspect.__doc__ or "")
    assert [name for name, _units in floors][-2:] == ["probes", "store"], "the docstring lost its floors"
    unplaced, wrong = floor_violations(floors, modules_of(REPO, TREE_ROOTS))
    assert unplaced == [], "modules on no floor: add them to the floors in mqinspect/__init__.py"
    assert wrong == []


def test_no_imports_form_a_cycle():
    cycles = import_cycles(modules_of(REPO, TREE_ROOTS))
    assert cycles == []
