"""Several probes in one BPF program: one function per tracepoint that does every attached probe's work.

The dashboard runs four probes. Each as a program of its own, a page fault ran seven programs (one per probe
per tracepoint), and each probe kept its own copy of the scope (the traced pids, the store's files) with a
follower of its own listing the store every interval. Combined, a tracepoint runs one program, whose function
calls each probe's handler in turn; the scope's maps (programs/scope.h, programs/store_files.h) exist once,
and so does the StoreFollower.

The combined program is made from the probes' own sources, unchanged on disk (`combined_source`):
- the shared headers (SHARED_HEADERS) come once, at the top, with the session's scope defines;
- each probe's text (with the headers that are its own, halves.h and lost.h, inlined) has every name it
  defines prefixed with the probe's: maps (mqi_totals of pagecache is mqi_pagecache_totals), structs, enums,
  functions and defines (its -D parameters too: PAGECACHE_MAX_FOLIOS), so that two probes' mqi_totals or
  struct file_key do not collide;
- each probe's tracepoint function becomes a static inline handler, and one function per tracepoint
  (`mqi_<event>`, first in the text: bcc defines a tracepoint's argument struct at the first function that
  takes it) calls the handlers of every probe attached there.

User space is unchanged: each probe reads its maps through a `ProbeProgram`, which translates its map names
to the combined program's. `CombinedProbe` is a Probe (probes/ebpf/session.py) whose snapshot is a dict of
the probes' snapshots by name; `TraceSession(CombinedProbe(...))` loads, attaches and detaches the one
program on every way out, as for a single probe.

Names a probe's text may not define (they would be renamed where the shared headers mean them): any name of
the shared headers. A compile error is traced to the probe whose part of the text it is in (PartFailed), so a
caller can leave that probe out and combine the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes.ebpf.loader import (
    _LOCAL_INCLUDE,
    PROGRAMS_DIR,
    TRACEFS,
    Attachment,
    IntSetMap,
    LoadedProgram,
    Parameters,
    ProgramSpec,
)
from probes.ebpf.tracepoints import tracepoint_format_path
from probes.errors import ProbeError

# Included once per combined program, before the probes' parts: the scope every probe shares.
SHARED_HEADERS = ("scope.h", "store_files.h")
# The defines the shared headers read; a combined program gets each once (see `_shared_defines`).
_SHARED_DEFINES = {
    "COMBINED_PROGRAM": "same",
    "FILTER_ANY_INODES": "same",
    "FILTER_TGIDS": "same",
    "IGNORE_TGID": "same",
    "MAX_TGIDS": "max",
    "MAX_THREADS": "max",
    "MAX_INODES": "max",
    "MAX_STORE_DIRS": "max",
    "FOLLOW_CREATION": "same",
    "HAVE_EXT4_ALLOC": "same",
    "HAVE_EXT4_FREE": "same",
    "FOLLOW_CHILDREN": "same",
    "HAVE_NEWTASK": "same",
    "HAVE_PROCESS_EXIT": "same",
    "EXIT_HAS_GROUP_DEAD": "same",
}
# What a probe's text defines at its top level (the names `_part_renames` prefixes).
_STRUCT = re.compile(r"\b(?:struct|enum)\s+(\w+)\s*\{")
_ENUMERATORS = re.compile(r"\benum\s+\w+\s*\{([^}]*)\}")
_MAP = re.compile(r"\bBPF_(?:HASH|ARRAY|PERCPU_ARRAY|PERCPU_HASH|LRU_HASH)\(\s*(\w+)")
_TABLE = re.compile(r"\bBPF_F?_?TABLE\(\s*\"[^\"]*\"\s*,[^,]+,[^,]+,\s*(\w+)")
_STATIC_FUNCTION = re.compile(r"^static\s+__always_inline\s+[\w\s\*]*?\b(\w+)\s*\(", re.MULTILINE)
_DEFINE = re.compile(r"^#define\s+(\w+)", re.MULTILINE)
# A tracepoint function of a probe, as every program writes one: `int mqi_NAME(TYPE *ARG)` and `{` below.
_HANDLER = re.compile(r"^int (mqi_\w+)\(((?:struct \w+|void)) \*(\w+)\)\n\{\n", re.MULTILINE)
# A struct's body, and the members it declares (`u64 name;`, `char comm[16];`, `u32 bits : 4;`).
_STRUCT_BODY = re.compile(r"\b(?:struct|union)\s+\w*\s*\{([^{}]*)\}")
_MEMBER = re.compile(r"(\w+)\s*(?:\[[^\]]*\])?\s*(?::\s*\w+\s*)?;")
_ERROR_LINE = re.compile(r"main\.c:(\d+):\d+: error")


class PartFailed(ProbeError):
    """The combined program did not compile because of one probe's part: `probe` names it."""

    def __init__(self, probe: str, detail: str):
        super().__init__(f"the {probe} probe's part of the combined program failed to compile: {detail}")
        self.probe = probe


@dataclass(frozen=True)
class ProbePart:
    """One probe of a combined program: its name, program and defines."""

    name: str
    spec: ProgramSpec
    parameters: Parameters

    def own_text(self) -> str:
        """The probe's source with the headers that are its own inlined and the shared ones left out."""

        def included(match: re.Match[str]) -> str:
            return "" if match[1] in SHARED_HEADERS else (PROGRAMS_DIR / match[1]).read_text()

        return _LOCAL_INCLUDE.sub(included, self.spec.source_path.read_text())


def _part_renames(part: ProbePart, text: str, shared: frozenset[str]) -> dict[str, str]:
    """Every name `text` defines (and every define of its parameters), prefixed with the probe's name."""
    defined = set(_tags(text)) | set(_ordinary_names(text))
    defined |= {name for name, _value in part.parameters.defines}
    clashing = (defined & shared) - {name for name, _value in part.parameters.defines}
    if clashing:
        raise ValueError(f"{part.spec.source_name} defines names of the shared headers: {sorted(clashing)}")
    # a member is renamed nowhere (see _rename): a name that is also a member would be renamed only in part
    members = set(_members(text)) & (defined - set(_tags(text)))
    if members:
        raise ValueError(f"{part.spec.source_name} names members as it names others: {sorted(members)}")
    return {name: _prefixed(part.name, name) for name in defined}


def _tags(text: str) -> list[str]:
    return _STRUCT.findall(text)


def _ordinary_names(text: str) -> set[str]:
    """The maps, functions, defines and enumerators `text` defines."""
    names = set(_MAP.findall(text)) | set(_TABLE.findall(text)) | set(_STATIC_FUNCTION.findall(text))
    names |= set(_DEFINE.findall(text)) | {handler for handler, _type, _arg in _HANDLER.findall(text)}
    for enumerators in _ENUMERATORS.findall(text):
        names |= {name.split("=")[0].strip() for name in enumerators.split(",") if name.strip()}
    return names


def _members(text: str) -> set[str]:
    return {member for body in _STRUCT_BODY.findall(text) for member in _MEMBER.findall(body)}


def _prefixed(probe: str, name: str) -> str:
    if name.startswith("mqi_"):
        return f"mqi_{probe}_{name[4:]}"
    return f"{probe.upper()}_{name}" if name.isupper() else f"{probe}_{name}"


def _rename(text: str, renames: Mapping[str, str], tags: Iterable[str]) -> str:
    """`text` with each name of `renames` replaced: a struct or enum tag only after its keyword, any other
    name where it is not a member (after `.` or `->`): members keep their names, which user space reads."""
    tags = set(tags)
    if tags:
        tagged = re.compile(r"\b(struct|enum)(\s+)(" + _alternatives(tags) + r")\b")
        text = tagged.sub(lambda match: match[1] + match[2] + renames[match[3]], text)
    ordinary = renames.keys() - tags
    if ordinary:
        names = re.compile(r"(?<!\.)(?<!->)\b(" + _alternatives(ordinary) + r")\b")
        text = names.sub(lambda match: renames[match[1]], text)
    return text


def _alternatives(names: Iterable[str]) -> str:
    return "|".join(sorted(map(re.escape, names), key=len, reverse=True))


def _as_handlers(text: str) -> str:
    """Each tracepoint function made a static inline handler taking the tracepoint's record untyped (the
    dispatchers, first in the text, declare it so before the record's struct exists)."""

    def handler(match: re.Match[str]) -> str:
        name, kind, argument = match[1], match[2], match[3]
        if kind == "void":
            return f"static __always_inline int {name}(void *{argument})\n{{\n"
        typed = f"    {kind} *{argument} = mqi_record;\n"
        return f"static __always_inline int {name}(void *mqi_record)\n{{\n{typed}"

    return _HANDLER.sub(handler, text)


def _shared_defines(parts: Sequence[ProbePart]) -> dict[str, int]:
    values: dict[str, int] = {}
    for part in parts:
        for name, value in part.parameters.defines:
            how = _SHARED_DEFINES.get(name)
            if how is None:
                continue
            if name in values and how == "same" and values[name] != value:
                raise ValueError(f"the probes disagree on {name} ({values[name]} and {value}): not one scope")
            values[name] = max(values.get(name, value), value) if how == "max" else value
    return values


def tracepoint_present(tracepoint: str, tracefs: Path = TRACEFS) -> bool:
    """Whether this kernel has `tracepoint`; where tracefs cannot be read (not root: --print-bpf) it counts
    as present, which is what a privileged run on a kernel that has it compiles."""
    try:
        return tracepoint_format_path(tracefs, tracepoint).exists()
    except PermissionError:
        return True


def dispatcher_name(tracepoint: str, taken: Iterable[str] = ()) -> str:
    """The combined program's function for `tracepoint`: mqi_<event>, or mqi_<category>_<event> when two
    categories have an event of that name."""
    category, event = tracepoint.split(":", 1)
    name = f"mqi_{event}"
    return f"mqi_{category}_{event}" if name in set(taken) else name


@dataclass(frozen=True)
class CombinedSource:
    """The combined program's text, what it attaches, and where each probe's part is."""

    text: str
    attachments: tuple[Attachment, ...]
    renames: dict[str, dict[str, str]]  # per probe: its names -> the combined program's
    lines: dict[str, tuple[int, int]] = field(default_factory=dict)  # per probe: first and last line

    def probe_at_line(self, line: int) -> str | None:
        for name, (first, last) in self.lines.items():
            if first <= line <= last:
                return name
        return None


def combined_source(parts: Sequence[ProbePart], present: Any = tracepoint_present) -> CombinedSource:
    """The one program of `parts`: see the module docstring. `present(tracepoint)` says which tracepoints
    this kernel has: only those get a function (a handler guarded by a HAVE_ define is compiled only then)."""
    shared_text = "".join((PROGRAMS_DIR / header).read_text() for header in _shared_headers(parts))
    shared_names = frozenset(_defined_names(shared_text)) | frozenset(_SHARED_DEFINES)
    texts, renames, calls = [], {}, {}
    required: dict[str, bool] = {}
    for part in parts:
        own = part.own_text()
        renames[part.name] = _part_renames(part, own, shared_names)
        texts.append((part.name, _as_handlers(_rename(own, renames[part.name], _tags(own)))))
        for attachment in part.spec.attachments:
            tracepoint = attachment.tracepoint
            required[tracepoint] = required.get(tracepoint, False) or attachment.required
            if not present(attachment.tracepoint):
                continue
            handler = renames[part.name].get(attachment.function, attachment.function)
            called = calls.setdefault(attachment.tracepoint, [])
            if handler not in called:  # the shared headers' handlers (store_files.h) run once per event
                called.append(handler)
    shared_text = _as_handlers(shared_text)
    groups = _groups(calls)
    functions = {tp: function for function, tracepoints in groups.items() for tp in tracepoints}
    for tracepoint in required.keys() - functions.keys():  # absent here: never compiled nor attached
        functions[tracepoint] = dispatcher_name(tracepoint)
    head = _dispatchers(calls, groups)
    text = head + shared_text
    lines = {}
    for name, own in texts:
        first = text.count("\n") + 1
        text += f"\n/* ---- the {name} probe ---- */\n" + own
        lines[name] = (first, text.count("\n"))
    attachments = tuple(Attachment(tp, functions[tp], required[tp]) for tp in required)
    return CombinedSource(text, attachments, renames, lines)


def _shared_headers(parts: Sequence[ProbePart]) -> list[str]:
    texts = (part.spec.source_path.read_text() for part in parts)
    included = {header for text in texts for header in _LOCAL_INCLUDE.findall(text)}
    return [header for header in SHARED_HEADERS if header in included]


def _defined_names(text: str) -> Iterator[str]:
    for pattern in (_STRUCT, _MAP, _TABLE, _STATIC_FUNCTION, _DEFINE):
        yield from pattern.findall(text)
    for handler, _kind, _arg in _HANDLER.findall(text):
        yield handler


def _groups(calls: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The tracepoints that call the same handlers, in order, under one function each: mqi_<event> for one
    tracepoint, mqi_<the events' common start> for several (sendpath's 13 syscall exits share one, as in its
    own program): each is compiled and verified once, and each tracepoint still runs one program."""
    by_handlers: dict[tuple[str, ...], list[str]] = {}
    for tracepoint, called in calls.items():
        by_handlers.setdefault(tuple(called), []).append(tracepoint)
    groups: dict[str, list[str]] = {}
    for tracepoints in by_handlers.values():
        if len(tracepoints) == 1:
            name = dispatcher_name(tracepoints[0], groups)
        else:
            events = [tracepoint.split(":", 1)[1] for tracepoint in tracepoints]
            name = "mqi_" + (_common_start(events).rstrip("_") or "shared")
        unique, number = name, 1
        while unique in groups:
            number += 1
            unique = f"{name}_{number}"
        groups[unique] = tracepoints
    return groups


def _common_start(names: Sequence[str]) -> str:
    """The characters every one of `names` starts with."""
    shortest = min(names, key=len)
    for position, character in enumerate(shortest):
        if any(name[position] != character for name in names):
            return shortest[:position]
    return shortest


def _dispatchers(calls: Mapping[str, Sequence[str]], groups: Mapping[str, Sequence[str]]) -> str:
    handlers = sorted({handler for called in calls.values() for handler in called})
    lines = [
        "/* One function per tracepoint (or per tracepoints that call the same handlers), calling each",
        "   probe's handler (defined below) in turn, after forgetting the answers the previous event's",
        "   handlers shared (programs/scope.h). */",
        "static __always_inline void new_event(void);",
        *(f"static __always_inline int {handler}(void *mqi_record);" for handler in handlers),
        "",
    ]
    for function, tracepoints in groups.items():
        category, event = tracepoints[0].split(":", 1)
        if len(tracepoints) > 1:
            lines.append(f"/* attached to {', '.join(tracepoints)} */")
        lines.append(f"int {function}(struct tracepoint__{category}__{event} *args)")
        lines += ["{", "    new_event();"]
        lines += [f"    {handler}(args);" for handler in calls[tracepoints[0]]]
        lines += ["    return 0;", "}", ""]
    return "\n".join(lines) + "\n"


def combined_parameters(parts: Sequence[ProbePart]) -> Parameters:
    """The shared headers' defines once (with COMBINED_PROGRAM, and FILTER_ANY_INODES when a probe filters
    the store's files: programs/scope.h), then each probe's own, prefixed as in its part of the text."""
    filters_inodes = any(
        value for part in parts for name, value in part.parameters.defines if name == "FILTER_INODES"
    )
    defines = {"COMBINED_PROGRAM": 1, "FILTER_ANY_INODES": int(filters_inodes), **_shared_defines(parts)}
    for part in parts:
        defines |= {_prefixed(part.name, name): value for name, value in part.parameters.defines}
    return Parameters.of(**defines)


class CombinedSpec(ProgramSpec):
    """A ProgramSpec whose text is generated (combined_source), not a file of programs/."""

    def __init__(self, source: CombinedSource, name: str):
        super().__init__(name, source.attachments)
        object.__setattr__(self, "combined", source)

    def source_text(self) -> str:
        return self.combined.text


class ProbeProgram:
    """One probe's view of a combined LoadedProgram: its map names translated to the combined program's, and
    the tracepoints of its own that are attached or missing."""

    def __init__(self, program: LoadedProgram, renames: Mapping[str, str], spec: ProgramSpec):
        self._program = program
        self._renames = renames
        own = {attachment.tracepoint for attachment in spec.attachments}
        self.attached = tuple(tp for tp in program.attached if tp in own)
        self.skipped = tuple(tp for tp in program.skipped if tp in own)

    @property
    def closed(self) -> bool:
        return self._program.closed

    def name(self, map_name: str) -> str:
        return self._renames.get(map_name, map_name)

    def table(self, name: str) -> Any:
        return self._program.table(self.name(name))

    def read(self, name: str) -> list[tuple[Any, Any]]:
        return self._program.read(self.name(name))

    def drain(self, name: str) -> Iterator[tuple[Any, Any]]:
        return self._program.drain(self.name(name))

    def put(self, name: str, key: tuple[int, ...], value: tuple[int, ...] = ()) -> None:
        self._program.put(self.name(name), key, value)

    def try_put(self, name: str, key: tuple[int, ...], value: tuple[int, ...] = ()) -> bool:
        return self._program.try_put(self.name(name), key, value)

    def get(self, name: str, key: tuple[int, ...]) -> Any | None:
        return self._program.get(self.name(name), key)

    def delete(self, name: str, key: tuple[int, ...]) -> None:
        self._program.delete(self.name(name), key)

    def take(self, name: str, key: tuple[int, ...]) -> Any | None:
        return self._program.take(self.name(name), key)


def merged_sets(probes: Iterable[Any]) -> tuple[IntSetMap, ...]:
    """The probes' sets (all of the shared headers' maps: mqi_tgids, the store's files) once each, with the
    members of every probe that fills them."""
    members: dict[str, dict[tuple[int, ...], None]] = {}
    for probe in probes:
        for int_set in probe.sets():
            members.setdefault(int_set.name, {}).update(dict.fromkeys(int_set.members))
    return tuple(IntSetMap(name, tuple(keys)) for name, keys in members.items())


# --- the session's probe ----------------------------------------------------------------------------------

# What a probe's collect() may raise when its maps or /proc cannot be read: that probe is dropped, the others
# go on.
READ_ERRORS = (ProbeError, OSError, RuntimeError, ValueError, KeyError)


class SharedFollower:
    """One StoreFollower for every probe of a combined program (they share its maps): the store is listed
    and the kernel's sets brought up to date once per interval, by the first probe that follows it; the
    others get that interval's files. Each may still list afresh once for a file newer than the listing."""

    def __init__(self, follower: Any):
        self._follower = follower
        self._followed: tuple[dict, dict] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._follower, name)

    def new_interval(self) -> None:
        self._followed = None

    def follow(self, program: Any) -> tuple[Mapping, Mapping]:
        """The interval's files now and new ones (StoreFollower.follow's, not to be changed)."""
        if self._followed is None:
            self._followed = self._follower.follow(program)
        else:
            self._follower.allow_relisting()
        return self._followed


def missing_required(spec: ProgramSpec, present: Any = tracepoint_present) -> tuple[str, ...]:
    """The tracepoints `spec` cannot do without that this kernel lacks."""
    return tuple(a.tracepoint for a in spec.attachments if a.required and not present(a.tracepoint))


class CombinedProbe:
    """Several probes as one Probe of a TraceSession: one program (combined_source), one scope. Its snapshot
    is {probe name: that probe's snapshot}. A probe whose reading fails is dropped (`dropped` says why) and
    the others go on; its handlers stay attached until the session closes."""

    def __init__(self, probes: Sequence[Any]):
        if not probes:
            raise ValueError("a combined program needs at least one probe")
        self.probes = {probe.name: probe for probe in probes}
        if len(self.probes) != len(probes):
            raise ValueError("each probe may be combined once")
        self.name = "+".join(self.probes)
        self._followers = _share_follower(probes)
        self.parts = [ProbePart(probe.name, probe.program, probe.parameters()) for probe in probes]
        self.source = combined_source(self.parts)
        self.program = CombinedSpec(self.source, f"the combined program of {', '.join(self.probes)}")
        self._parameters = combined_parameters(self.parts)
        self.processes = probes[0].processes
        self.views: dict[str, ProbeProgram] = {}
        self.dropped: dict[str, str] = {}

    def parameters(self) -> Parameters:
        return self._parameters

    def sets(self) -> tuple[IntSetMap, ...]:
        return merged_sets(self.probes.values())

    def subject(self) -> str:
        return "; ".join(probe.subject() for probe in self.probes.values())

    def start(self, program: LoadedProgram) -> None:
        for name, probe in self.probes.items():
            self.views[name] = ProbeProgram(program, self.source.renames[name], probe.program)
            probe.start(self.views[name])

    def collect(self, program: LoadedProgram, interval_s: float) -> dict[str, Any]:
        for follower in self._followers:
            follower.new_interval()
        snapshots = {}
        for name, probe in self.probes.items():
            if name in self.dropped:
                continue
            try:
                snapshots[name] = probe.collect(self.views[name], interval_s)
            except READ_ERRORS as error:
                self.dropped[name] = f"reading the probe failed: {error}"
        return snapshots

    def combine(self, summary: dict[str, Any] | None, snapshot: dict[str, Any]) -> dict[str, Any]:
        combined = dict(summary or {})
        for name, part in snapshot.items():
            combined[name] = self.probes[name].combine(combined.get(name), part)
        return combined

    def failed_probe(self, error: BaseException) -> str | None:
        """The probe whose part of the text a compile error points to (clang's main.c:LINE), if one does."""
        for line in _ERROR_LINE.findall(str(error)):
            probe = self.source.probe_at_line(int(line))
            if probe is not None:
                return probe
        return None


def _share_follower(probes: Sequence[Any]) -> list[SharedFollower]:
    """The probes that follow the store's files given one follower (the first one's)."""
    following = [probe for probe in probes if getattr(probe, "follower", None) is not None]
    if not following:
        return []
    shared = SharedFollower(following[0].follower)
    for probe in following:
        probe.follower = shared
    return [shared]
