"""Compile, load and attach one BPF program with bcc, and take it down again on every way out.

A probe's kernel side is one file, `programs/<name>.bpf.c`, fixed text. What varies between runs reaches it
in two ways only, both typed so that no caller's string can ever become C:
- `Parameters`: named integers, rendered as `-DNAME=<int>` compiler flags (names are checked against a C
  identifier pattern, values must be `int`);
- `IntSetMap`: hash maps used as sets (pids, inodes) whose keys are filled field by field with integers
  after loading.

bcc is imported only inside `load_program()`: everything else here (and `--print-bpf`) works without bcc,
root or kernel headers. Anything missing for a load is a `CapabilityMissing` whose fix points to
`mqinspect doctor`.

Each probe's ProgramSpec is checked against its registry entry (`program_spec`). Doctor's proof that the
programs load on this machine is in probes/ebpf/smoke.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.ebpf.registry import ProbeEntry
from probes.ebpf.tracepoints import tracepoint_format_path
from probes.errors import CapabilityMissing, ProbeError
from probes.privileges import can_trace, effective_capabilities

PROGRAMS_DIR = Path(__file__).parent / "programs"
TRACEFS = Path("/sys/kernel/tracing")
# Every BPF function of ours starts with this, so `bpftool prog list` shows which programs are mqinspect's.
FUNCTION_PREFIX = "mqi_"
_DEFINE_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,62}")
_MAP_NAME = re.compile(r"mqi_[a-z0-9_]{1,60}")
# A program may include a header of programs/ ("name.h"); it is inlined, so what is compiled is one text, the
# one --print-bpf shows.
_LOCAL_INCLUDE = re.compile(r'^#include "([a-z0-9_]+\.h)"$', re.MULTILINE)


class ParameterError(ValueError):
    """A value offered to a BPF program is not an integer, or a name is not a plain C identifier."""


def checked_int(value: object, what: str) -> int:
    """`value` if it is an int (bool excluded: True is not a pid); ParameterError for anything else."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"{what} must be an integer, not {type(value).__name__} {value!r}")
    return int(value)


@dataclass(frozen=True)
class Parameters:
    """The integer defines a program is compiled with. Build with `Parameters.of(NAME=int, ...)`."""

    defines: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        for name, value in self.defines:
            if not isinstance(name, str) or not _DEFINE_NAME.fullmatch(name):
                raise ParameterError(f"define name {name!r} is not an upper-case C identifier")
            checked_int(value, f"define {name}")

    @classmethod
    def of(cls, **values: int) -> Parameters:
        return cls(tuple((name, checked_int(value, f"define {name}")) for name, value in values.items()))

    def cflags(self) -> list[str]:
        return [f"-D{name}={_c_integer(value)}" for name, value in self.defines]


def _c_integer(value: int) -> str:
    """A C integer literal: decimal digits, suffixed when the value needs a 64-bit (or unsigned) type."""
    value = int(value)
    if value > 2**63 - 1:
        return f"{value}ULL"
    return f"{value}LL" if not -(2**31) <= value < 2**31 else str(value)


@dataclass(frozen=True)
class IntSetMap:
    """A BPF hash map used as a set: each member fills the map's key struct, field by field, with integers.

    For a scalar key (`u32 tgid`) a member is a 1-tuple. Every member gets the value 1.
    """

    name: str
    members: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not _MAP_NAME.fullmatch(self.name):
            raise ParameterError(f"map name {self.name!r} is not one of ours (mqi_...)")
        for member in self.members:
            for position, value in enumerate(member):
                checked_int(value, f"{self.name} key field {position}")

    @classmethod
    def of_ints(cls, name: str, values: Sequence[int]) -> IntSetMap:
        return cls(name, tuple((checked_int(value, f"{name} member"),) for value in values))


@dataclass(frozen=True)
class Attachment:
    """One tracepoint ("category:event") and the BPF function that handles it."""

    tracepoint: str
    function: str
    required: bool = True

    def __post_init__(self) -> None:
        if not self.function.startswith(FUNCTION_PREFIX):
            raise ParameterError(f"BPF function {self.function!r} must start with {FUNCTION_PREFIX}")


@dataclass(frozen=True)
class ProgramSpec:
    """A probe's kernel side: its source file under programs/ and what each function attaches to."""

    source_name: str
    attachments: tuple[Attachment, ...]

    @property
    def source_path(self) -> Path:
        return PROGRAMS_DIR / self.source_name

    def source_text(self) -> str:
        """The source file with the headers of programs/ it includes inlined."""
        return _LOCAL_INCLUDE.sub(
            lambda included: (PROGRAMS_DIR / included[1]).read_text(), self.source_path.read_text()
        )


def program_spec(entry: ProbeEntry, functions: Mapping[str, str]) -> ProgramSpec:
    """The program of the registry's `entry`, each attachment required or optional as the entry says;
    `functions` maps each tracepoint to the BPF function that handles it, and must cover the entry's."""
    if set(entry.tracepoints) != set(functions):
        raise ValueError(
            f"{entry.program} handles {sorted(functions)}, the registry lists {sorted(entry.tracepoints)}"
        )
    return ProgramSpec(
        entry.program,
        tuple(Attachment(tp, functions[tp], tp in entry.required) for tp in functions),
    )


def render_program(spec: ProgramSpec, parameters: Parameters, sets: Sequence[IntSetMap] = ()) -> str:
    """The program exactly as it would be compiled: the defines (the only substitution) as a comment
    header, the map contents it would be given, then the source file unchanged."""
    lines = [
        f"// {spec.source_name}: compiled by bcc with these flags (integer defines only):",
        *(f"//   {flag}" for flag in parameters.cflags()),
    ]
    for int_set in sets:
        shown = ", ".join(_shown_member(member) for member in int_set.members)
        lines.append(f"// map {int_set.name} is filled with: {shown or '(nothing)'}")
    lines.append("// attachments:")
    lines += [
        f"//   {a.tracepoint} -> {a.function}{'' if a.required else ' (optional)'}" for a in spec.attachments
    ]
    return "\n".join(lines) + "\n\n" + spec.source_text()


def _shown_member(member: tuple[int, ...]) -> str:
    return str(member[0]) if len(member) == 1 else "(" + ", ".join(map(str, member)) + ")"


# --- loading ---------------------------------------------------------------------------------------------


class LoadedProgram:
    """A compiled program with its tracepoints attached. `close()` detaches and frees it; it is idempotent."""

    def __init__(self, bpf: Any, attached: tuple[str, ...], skipped: tuple[str, ...]):
        self._bpf = bpf
        self.attached = attached
        self.skipped = skipped  # optional tracepoints this kernel lacks

    @property
    def closed(self) -> bool:
        return self._bpf is None

    def table(self, name: str) -> Any:
        if self._bpf is None:
            raise ProbeError("the BPF program is already closed")
        return self._bpf[name.encode()]

    def read(self, name: str) -> list[tuple[Any, Any]]:
        """Every (key, value) of a map, left in place."""
        return list(self.table(name).items())

    def drain(self, name: str) -> Iterator[tuple[Any, Any]]:
        """Every (key, value) of a map, each removed as it is read (atomically per entry), so an event counted
        after its entry was taken lands in a fresh entry for the next read instead of being lost.

        The map is already empty when this returns (every batch call is made before it); entries are
        converted as the iterator is consumed, so several maps can be emptied within a moment of each other
        before the slow part."""
        batches = _drained_batches(self.table(name), name)
        return ((keys[index], values[index]) for keys, values, count in batches for index in range(count))

    def put(self, name: str, key: tuple[int, ...], value: tuple[int, ...] = ()) -> None:
        """Set map[key] = value, both filled field by field with integers (an empty value is all zeros)."""
        table = self.table(name)
        table[_ctypes_of(table.Key, key, name)] = _ctypes_of(table.Leaf, value, name)

    def try_put(self, name: str, key: tuple[int, ...], value: tuple[int, ...] = ()) -> bool:
        """`put`, or False when the kernel refuses the entry (the map is full)."""
        try:
            self.put(name, key, value)
        except ProbeError:
            raise
        except Exception:  # bcc raises a bare Exception ("Could not update table") with the errno's text
            return False
        return True

    def get(self, name: str, key: tuple[int, ...]) -> Any | None:
        """map[key] (a ctypes value, as bcc gives it), or None when the map has no such key."""
        table = self.table(name)
        try:
            return table[_ctypes_of(table.Key, key, name)]
        except KeyError:
            return None

    def delete(self, name: str, key: tuple[int, ...]) -> None:
        table = self.table(name)
        with contextlib.suppress(KeyError):
            del table[_ctypes_of(table.Key, key, name)]

    def take(self, name: str, key: tuple[int, ...]) -> Any | None:
        """map[key] removed and returned in one step (BPF_MAP_LOOKUP_AND_DELETE_ELEM, hash maps since Linux
        5.14), so that what a program added between a read and the removal is not lost; None if absent."""
        from bcc.libbcc import lib  # loaded: this program was compiled with it

        table = self.table(name)
        ckey, value = _ctypes_of(table.Key, key, name), table.Leaf()
        if lib.bpf_map_lookup_and_delete_elem(table.map_fd, ctypes.byref(ckey), ctypes.byref(value)) != 0:
            return None
        return value

    def close(self) -> None:
        bpf, self._bpf = self._bpf, None
        if bpf is not None:
            bpf.cleanup()


# Entries asked of the kernel per batch call when a map is emptied. bcc's items_lookup_and_delete_batch
# allocates (and zeroes) arrays for the map's max_entries at every call: megabytes per interval for the
# dashboard's maps (131,072 folios), where an interval leaves a few hundred entries.
DRAIN_BATCH_ENTRIES = 512


def _drained_batches(table: Any, name: str) -> list[tuple[Any, Any, int]]:
    """Empty a hash map by BPF_MAP_LOOKUP_AND_DELETE_BATCH calls, the first for DRAIN_BATCH_ENTRIES and each
    next one for twice as many (arrays allocated for about what is taken; each call goes on from the bucket
    the previous one stopped at): the (keys, values, count) of each call."""
    from bcc.libbcc import lib  # loaded: this program was compiled with it

    size = min(DRAIN_BATCH_ENTRIES, table.max_entries)
    batches, position, first = [], ctypes.c_uint32(0), True
    while True:
        keys, values, count = (table.Key * size)(), (table.Leaf * size)(), ctypes.c_uint32(size)
        following = ctypes.c_uint32(0)
        failed = lib.bpf_lookup_and_delete_batch(
            table.map_fd,
            None if first else ctypes.byref(position),
            ctypes.byref(following),
            keys,
            values,
            ctypes.byref(count),
        )
        error = ctypes.get_errno()
        if count.value:
            batches.append((keys, values, count.value))
        if failed and error == errno.ENOENT:  # the last bucket was read
            return batches
        if failed and error == errno.ENOSPC and not count.value and size < table.max_entries:
            size = min(size * 2, table.max_entries)  # one bucket holds more entries than fit: larger arrays
            continue
        if failed:
            raise ProbeError(f"emptying the BPF map {name} failed: {os.strerror(error)}")
        position, first = following, False
        size = min(size * 2, table.max_entries)  # a map this full likely holds more: fewer calls


def _ctypes_of(kind: Any, fields: tuple[int, ...], what: str) -> Any:
    values = [checked_int(value, f"{what} field") for value in fields]
    return kind(*values)


def load_program(spec: ProgramSpec, parameters: Parameters, sets: Sequence[IntSetMap] = ()) -> LoadedProgram:
    """Compile `spec` once with `parameters`, attach every tracepoint this kernel has, fill `sets`.

    Raises CapabilityMissing (privileges, bcc, kernel headers, tracefs, a required tracepoint) with a fix,
    or ProbeError when the program itself fails to compile or load.
    """
    require_bpf_privileges()
    bcc = _import_bcc()
    _require_kernel_headers()
    present, missing = _split_attachments(spec.attachments)
    lacking = [attachment.tracepoint for attachment in missing if attachment.required]
    if lacking:
        raise CapabilityMissing(
            f"this kernel lacks the tracepoint(s) {', '.join(lacking)} that {spec.source_name} needs"
        )
    bpf = _compile(bcc, spec, parameters)
    program = LoadedProgram(bpf, tuple(a.tracepoint for a in present), tuple(a.tracepoint for a in missing))
    try:
        for attachment in present:
            bpf.attach_tracepoint(tp=attachment.tracepoint.encode(), fn_name=attachment.function.encode())
        for int_set in sets:
            for member in int_set.members:
                program.put(int_set.name, member, (1,))
    except BaseException as error:
        program.close()
        if isinstance(error, Exception) and not isinstance(error, ProbeError):
            raise _load_error(spec, str(error)) from error
        raise
    return program


def require_bpf_privileges() -> None:
    if not can_trace(effective_capabilities()):
        raise CapabilityMissing(
            "tracing needs root, or CAP_BPF and CAP_PERFMON",
            fix="run as root (sudo mqinspect ...), or grant the capabilities; `mqinspect doctor` shows how",
        )


def _import_bcc() -> Any:
    try:
        import bcc
    except Exception as error:  # ImportError, or OSError when libbcc itself is missing
        raise CapabilityMissing(f"bcc cannot be imported ({type(error).__name__}: {error})") from None
    return bcc


def _require_kernel_headers() -> None:
    build = Path("/lib/modules") / os.uname().release / "build"
    if not build.exists():
        raise CapabilityMissing(f"no kernel headers at {build}: bcc cannot compile BPF programs")


def _split_attachments(attachments: Sequence[Attachment]) -> tuple[list[Attachment], list[Attachment]]:
    try:
        mounted = (TRACEFS / "events").is_dir()
    except PermissionError:  # CAP_BPF and CAP_PERFMON without root: tracefs is root's alone by default
        raise CapabilityMissing(
            f"tracefs at {TRACEFS} is readable by root only: the tracepoints cannot be found",
            fix="run as root, or let the tracing users' group read it "
            f"(sudo mount -o remount,gid=GROUP,mode=0750 {TRACEFS}); `mqinspect doctor` shows how",
        ) from None
    if not mounted:
        raise CapabilityMissing(f"tracefs is not mounted at {TRACEFS}")
    present = [a for a in attachments if tracepoint_format_path(TRACEFS, a.tracepoint).exists()]
    return present, [a for a in attachments if a not in present]


def _compile(bcc: Any, spec: ProgramSpec, parameters: Parameters) -> Any:
    # libbcc (clang) writes diagnostics straight to fd 2; keep them, and show them only if the compile fails.
    with _captured_fd2() as diagnostics:
        try:
            return bcc.BPF(text=spec.source_text().encode(), cflags=parameters.cflags())
        except Exception as error:
            failure = error
    raise _load_error(spec, _error_lines(diagnostics()) or str(failure)) from failure


def _load_error(spec: ProgramSpec, detail: str) -> ProbeError:
    if "super-user" in detail or "Operation not permitted" in detail:
        return CapabilityMissing(f"the kernel refused {spec.source_name}: {detail}")
    if "kernel headers" in detail:
        return CapabilityMissing(f"{spec.source_name} cannot compile: {detail}")
    return ProbeError(f"{spec.source_name} failed to compile or load: {detail}")


def _error_lines(text: str) -> str:
    errors = [line.strip() for line in text.splitlines() if "error" in line.lower()]
    return "; ".join(errors[:3])


@contextlib.contextmanager
def _captured_fd2() -> Iterator[Any]:
    """Send fd 2 to a scratch file for the duration; yields a function that returns what was written."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as scratch:
        os.dup2(scratch.fileno(), 2)
        captured: list[str] = []
        try:
            yield lambda: "".join(captured)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            scratch.seek(0)
            captured.append(scratch.read().decode("utf-8", errors="replace"))
