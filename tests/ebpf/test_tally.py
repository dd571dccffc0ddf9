"""One tally for every probe (probes/ebpf/tally.py): counts by name and by (part, key), a count not counted
yet is 0 and is not made by being read, a count of 0 that was counted stays (a syscall with no calls is still
a row), and no probe keeps a tally class of its own."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

from probes.ebpf.tally import Tally

EBPF = Path(__file__).resolve().parents[2] / "probes" / "ebpf"


def test_counts_add_up_by_name_and_by_part():
    tally = Tally()
    tally["faults"] += 3
    tally.add(faults=2, write_faults=1)
    tally.add({("slot", 12): 4, ("slot", 3): 1})
    tally.add_fields(SimpleNamespace(faults=5, major_faults=1, other=99), ("faults", "major_faults"))
    assert tally.named(("faults", "write_faults", "major_faults", "populate_faults")) == {
        "faults": 10,
        "write_faults": 1,
        "major_faults": 1,
        "populate_faults": 0,
    }
    assert tally.part("slot") == {12: 4, 3: 1}  # in the order first counted
    whole = Tally.of_fields(SimpleNamespace(faults=1), ("faults",))
    whole.add(tally)
    assert whole["faults"] == 11 and whole.part("slot") == {12: 4, 3: 1}


def test_reading_a_count_does_not_make_it_but_counting_zero_does():
    tally = Tally()
    assert tally["calls"] == 0 and "calls" not in tally
    tally.add({("calls", "fsync"): 0})
    assert ("calls", "fsync") in tally and tally.part("calls") == {"fsync": 0}


def test_no_probe_keeps_a_tally_class_of_its_own():
    """A tally class is a mutable dataclass of counts that start at 0; the probes' modules had five
    (_Counts, _SyscallTally, _PageCounts, _RangeTally with _OutsideTally, _FileTally)."""
    own = [
        f"{path.name}: {node.name}"
        for path in sorted(EBPF.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and _mutable_dataclass(node) and _counts_from_zero(node)
    ]
    assert own == []


def _mutable_dataclass(node: ast.ClassDef) -> bool:
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Name) and decorator.id == "dataclass":
            return True
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "dataclass":
            return not any(k.arg == "frozen" and getattr(k.value, "value", False) for k in decorator.keywords)
    return False


def _counts_from_zero(node: ast.ClassDef) -> bool:
    return any(
        isinstance(field, ast.AnnAssign) and isinstance(field.value, ast.Constant) and field.value.value == 0
        for field in node.body
    )
