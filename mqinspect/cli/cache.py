"""`mqinspect cache`: page-cache residency of files, of a directory tree, or of the files a process uses;
optionally evict, touch or lock them (as vmtouch -e, -t, -l do).

This module orchestrates: it picks the files (paths, a recursive walk, or `--pid`), applies the action,
measures each file and hands the rows one at a time to a writer in `mqinspect.render.cache`, so output
streams. Error rows (a missing path, a directory without --recursive, a device, permission denied) are
reported with the others and make the exit status 1. When no PATH exists at all there is nothing to report
on: that is bad input, one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import sys
from collections import Counter
from collections.abc import Iterable, Iterator

import click
import typer

from mqinspect.cli.options import OutputFormat, format_option
from mqinspect.errors import BadInput, ExitStatus
from mqinspect.render.cache import (
    ACTION_COLUMNS,
    COUNTED_FIELDS,
    ActionOutcome,
    CacheItem,
    CacheRow,
    CacheTotals,
    write_cache_csv,
    write_cache_json,
    write_cache_table,
)
from mqinspect.render.console import stderr_console, stdout_console
from mqinspect.render.units import human_bytes
from mqinspect.render.words import counted
from probes.process_files import ProcessFile, ProcessFiles, read_process_files
from probes.procfs import ProcessGone
from probes.residency.actions import LockedFile, MemoryLockRefused, evict, lock, touch
from probes.residency.mincore import PAGE_SIZE
from probes.residency.scan import (
    FileResidency,
    RangeResidency,
    ResidencyError,
    ResidencyUnavailable,
    file_residency,
    scan_paths,
)

# Without --chunks the table still draws a heat strip: this many chunks per file.
TABLE_HEAT_CHUNKS = 20
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_LOCKED_FILES_LISTED = 10
CACHE_PRIVILEGE_FIX = "run as root (sudo mqinspect cache ...) or as the owner of the files"
_REFUSED_ERRNOS = {errno.EACCES, errno.EPERM}
# What an action did that needs only read access, said where its effect cannot be measured.
_APPLIED_UNMEASURED = {
    "evict": "the kernel accepted POSIX_FADV_DONTNEED, which needs only read access, so clean pages of this "
    "file may have been dropped; how many cannot be measured: ",
    "touch": "the file was read into the page cache (MADV_POPULATE_READ needs only read access); how many "
    "pages that brought in cannot be measured: ",
}


@dataclasses.dataclass(frozen=True)
class _Request:
    """What to measure of each file, and which action to apply first."""

    chunks: int | None
    page_map: bool
    action: str | None
    sync: bool


@dataclasses.dataclass(frozen=True)
class _Held:
    """A lock taken by --lock, and the path it is reported under."""

    display_path: str
    handle: LockedFile


@dataclasses.dataclass(frozen=True)
class _Target:
    """A file to act on and measure: `display_path` is how it is reported, `open_path` how it is reached."""

    display_path: str
    open_path: str
    process_file: ProcessFile | None = None


# --------------------------------------------------------------------------------------- the command


def cache(
    paths: list[str] = typer.Argument(
        None, help="Files or directories to measure (not with --pid).", show_default=False
    ),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Measure every file under a directory."),
    chunks: int = typer.Option(
        None,
        "--chunks",
        min=1,
        help=f"Split each file into N chunks (cached and dirty share each); the table's heat strip uses "
        f"{TABLE_HEAT_CHUNKS} when not given.",
    ),
    page_map: bool = typer.Option(
        False,
        "--map",
        help="Add the exact per-page map from mincore (vmtouch -v chart / resident page runs).",
    ),
    evict_pages: bool = typer.Option(
        False, "--evict", help="Drop the files' pages from the page cache (posix_fadvise DONTNEED)."
    ),
    sync: bool = typer.Option(False, "--sync", help="With --evict: fsync first, so dirty pages can go too."),
    touch_pages: bool = typer.Option(
        False, "--touch", help="Read every page of the files into the page cache."
    ),
    lock_pages: bool = typer.Option(
        False, "--lock", help="Read the files in and mlock them until Ctrl-C or SIGTERM (like vmtouch -l)."
    ),
    pid: int = typer.Option(
        None, "--pid", "-p", min=1, help="Measure the files process PID has mapped or open, instead of paths."
    ),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSON, OutputFormat.CSV),
) -> int:
    """Page-cache residency per file: size, pages, cached, dirty, writeback, evicted and recently evicted
    pages, with a heat strip per file (cached / dirty / absent per chunk) and a totals line.

    Numbers come from cachestat(2), or from mincore(2) where cachestat is refused; a number that could not be
    measured is shown as unavailable with the reason, never guessed. --evict, --touch and --lock change the
    page cache and say so on stderr.

    JSON is one document, streamed: schema, page_size_bytes, action, process, files (one object per file),
    errors (path, reason, errno) and totals; --map adds page_map, the runs of resident pages as
    (first_page, end_page) pairs, end exclusive. CSV is one row per file or error.

    Exit status: 0 when every file was measured; 3 when none was, each for lack of privilege (permission
    denied, or cachestat and mincore both refuse a file the caller may read but not write: run as root or as
    the files' owner); 1 when some path failed otherwise, or some files were measured and others not; 2 for
    bad usage or a --pid that does not exist. An action (--evict, --touch) is applied even where its effect
    cannot be measured, and says so.
    """
    action = _chosen_action(evict_pages, touch_pages, lock_pages, sync)
    _check_targets(paths, pid, recursive)
    _check_some_path_exists(paths or [])
    request = _Request(
        chunks=chunks or (TABLE_HEAT_CHUNKS if output == OutputFormat.TABLE else None),
        page_map=page_map,
        action=action,
        sync=sync,
    )
    process = _process(pid) if pid is not None else None
    _announce(action, sync)
    held: list[_Held] = []
    tally = CacheTally(action)
    try:
        items = tally.counted(_measured(paths or [], recursive, process, request, held))
        _write(items, tally, output, request, process, chunks_asked=chunks is not None)
        if action == "lock":
            _hold_until_signalled(held)
    finally:
        for lock_held in held:
            lock_held.handle.release()
    status = tally.exit_status()
    if status == ExitStatus.MISSING_CAPABILITY:
        stderr_console().print(
            f"mqinspect: no file could be measured by this user: {CACHE_PRIVILEGE_FIX}", style="yellow"
        )
    return status


def _chosen_action(evict_pages: bool, touch_pages: bool, lock_pages: bool, sync: bool) -> str | None:
    chosen = [
        name
        for name, wanted in (("evict", evict_pages), ("touch", touch_pages), ("lock", lock_pages))
        if wanted
    ]
    if len(chosen) > 1:
        raise click.UsageError(f"--{chosen[0]} and --{chosen[1]} cannot be combined: choose one action")
    if sync and chosen != ["evict"]:
        raise click.UsageError("--sync goes with --evict")
    return chosen[0] if chosen else None


def _check_targets(paths: list[str] | None, pid: int | None, recursive: bool) -> None:
    if pid is not None and paths:
        raise click.UsageError("give PATHs or --pid, not both: --pid measures the files of the process")
    if pid is not None and recursive:
        raise click.UsageError("--recursive walks PATHs; it does not apply to --pid")
    if pid is None and not paths:
        raise click.UsageError("give at least one PATH, or --pid PID")


def _check_some_path_exists(paths: list[str]) -> None:
    if paths and not any(map(_exists, paths)):
        raise BadInput(f"no such file or directory: {', '.join(paths)}")


def _exists(path: str) -> bool:
    """Only "does not exist" is False: a path that cannot be looked at (permission) is there, and its error
    row says why it could not be measured."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True


def _process(pid: int) -> ProcessFiles:
    try:
        return read_process_files(pid)
    except ProcessGone as gone:
        raise BadInput(str(gone)) from gone


def _announce(action: str | None, sync: bool) -> None:
    """Say on stderr what an action changes: each one alters system state, not just this report."""
    messages = {
        "evict": "fsync, then drop every page of these files from the page cache (POSIX_FADV_DONTNEED)"
        if sync
        else "dropping the clean pages of these files from the page cache (POSIX_FADV_DONTNEED); dirty "
        "pages stay until written back (add --sync to flush them first)",
        "touch": "reading every page of these files into the page cache",
        "lock": "reading these files into the page cache and locking them there (mlock) until Ctrl-C or "
        "SIGTERM",
    }
    if action:
        stderr_console().print(f"mqinspect: {messages[action]}", style="dim")


def _write(
    items: Iterable[CacheItem],
    tally: CacheTally,
    output: str,
    request: _Request,
    process: ProcessFiles | None,
    *,
    chunks_asked: bool,
) -> None:
    if output == OutputFormat.JSON:
        write_cache_json(
            items,
            tally.totals,
            sys.stdout,
            include_chunks=chunks_asked,
            include_map=request.page_map,
            process=process,
            action=request.action,
        )
    elif output == OutputFormat.CSV:
        write_cache_csv(
            items,
            sys.stdout,
            include_chunks=chunks_asked,
            include_map=request.page_map,
            process_mode=process is not None,
            action=request.action,
        )
    else:
        write_cache_table(
            items,
            tally.totals,
            stdout_console(),
            heat_width=request.chunks or TABLE_HEAT_CHUNKS,
            show_map=request.page_map,
            process=process,
            action=request.action,
        )


# --------------------------------------------------------------------------------------- measuring


def _measured(
    paths: list[str],
    recursive: bool,
    process: ProcessFiles | None,
    request: _Request,
    held: list[_Held],
) -> Iterator[CacheItem]:
    """One row per file, produced only when the writer asks for it: that is what makes output stream."""
    if process is not None:
        for process_file in process.files:
            yield _row(_Target(process_file.path, process_file.open_path, process_file), request, held)
        return
    if request.action is None:
        # scan_paths measures as it walks: one pass, one measurement per file.
        for found in scan_paths(paths, recursive=recursive, chunks=request.chunks, page_map=request.page_map):
            yield _in_cli_terms(found) if isinstance(found, ResidencyError) else CacheRow(found)
        return
    # With an action the walk only finds the files (its cheap cachestat counts are dropped); each file is
    # then acted on and measured afresh, so its row shows the state the action left.
    for found in scan_paths(paths, recursive=recursive):
        if isinstance(found, ResidencyError):
            yield _in_cli_terms(found)
        else:
            yield _row(_Target(found.path, found.path), request, held)


def _in_cli_terms(error: ResidencyError) -> ResidencyError:
    # scan_paths names its parameter (recursive=True); a command-line user needs the option's name.
    if error.errno == errno.EISDIR:
        return dataclasses.replace(
            error, reason="is a directory; add --recursive to measure the files under it"
        )
    return error


def _row(target: _Target, request: _Request, held: list[_Held]) -> CacheItem:
    try:
        outcome = _act(target, request, held)
        measured = file_residency(target.open_path, chunks=request.chunks, page_map=request.page_map)
    except ResidencyUnavailable as refused:
        return dataclasses.replace(refused.error, path=target.display_path)
    except MemoryLockRefused as refused:
        return ResidencyError(target.display_path, f"{refused} (fix: {refused.fix})", errno.ENOMEM)
    except OSError as error:
        return ResidencyError(target.display_path, error.strerror or str(error), error.errno)
    return CacheRow(dataclasses.replace(measured, path=target.display_path), target.process_file, outcome)


def _act(target: _Target, request: _Request, held: list[_Held]) -> ActionOutcome | None:
    path = target.open_path
    if request.action == "evict":
        evicted = evict(path, sync=request.sync)
        return ActionOutcome(
            "evict",
            {"pages_evicted": evicted.pages_evicted, "pages_stayed_resident": evicted.pages_stayed_resident},
            {"synced": evicted.synced},
            _unmeasured_counts("evict", evicted.after, ("pages_evicted", "pages_stayed_resident")),
        )
    if request.action == "touch":
        touched = touch(path)
        return ActionOutcome(
            "touch",
            {"pages_brought_in": touched.pages_brought_in},
            {"method": touched.method},
            _unmeasured_counts("touch", touched.after, ("pages_brought_in",)),
        )
    if request.action == "lock":
        locked = lock(path)
        held.append(_Held(target.display_path, locked))
        return ActionOutcome("lock", {"locked_pages": locked.pages if locked.locked else 0})
    return None


def _unmeasured_counts(action: str, after: RangeResidency, names: tuple[str, ...]) -> dict[str, str]:
    """Why the action's counts are None: the residency after it could not be measured. The action itself
    was applied, which the reason says, so that "unavailable" does not read as "nothing happened"."""
    reason = after.unmeasured.get("cached_pages")
    if after.cached_pages is not None or not reason:
        return {}
    return dict.fromkeys(names, _APPLIED_UNMEASURED[action] + reason)


# --------------------------------------------------------------------------------------- totals


class CacheTally:
    """Sums the rows as they pass to the writer, for the totals line drawn after the last one."""

    def __init__(self, action: str | None):
        self.action = action
        self.files = 0
        self.errors = 0
        self.unmeasured = 0  # files whose residency the caller's privileges could not measure
        self.refused = 0  # errors and unmeasured files that more privileges would have measured
        self.size_bytes = 0
        self.pages = 0
        self._sums: Counter[str] = Counter()
        self._measured: Counter[str] = Counter()
        self._pages_with_cached_count = 0

    def counted(self, items: Iterable[CacheItem]) -> Iterator[CacheItem]:
        for item in items:
            self._add(item)
            yield item

    def _add(self, item: CacheItem) -> None:
        if isinstance(item, ResidencyError):
            self.errors += 1
            self.refused += item.errno in _REFUSED_ERRNOS
            return
        residency: FileResidency = item.residency
        self.files += 1
        if residency.cached_pages is None:  # only a caller mincore would lie to gets no count at all
            self.unmeasured += 1
            self.refused += 1
        self.size_bytes += residency.size_bytes
        self.pages += residency.pages
        if residency.cached_pages is not None:
            self._pages_with_cached_count += residency.pages
        self._add_counts({name: getattr(residency, name) for name in COUNTED_FIELDS})
        if item.action:
            self._add_counts(item.action.pages)

    def _add_counts(self, counts: dict[str, int | None]) -> None:
        for name, value in counts.items():
            if value is not None:
                self._sums[name] += value
                self._measured[name] += 1

    def _total(self, name: str, notes: dict[str, str]) -> int | None:
        measured = self._measured[name]
        if measured < self.files:
            notes[name] = (
                "no file could measure it"
                if measured == 0
                else f"sum over the {measured} of {self.files} files that could measure it"
            )
        return self._sums[name] if measured or not self.files else None

    def exit_status(self) -> ExitStatus:
        """0 when every file was measured; 3 when nothing was, each for lack of privilege; 1 otherwise."""
        failed = self.errors + self.unmeasured
        if not failed:
            return ExitStatus.OK
        if self.refused == failed and self.files == self.unmeasured:
            return ExitStatus.MISSING_CAPABILITY
        return ExitStatus.FINDINGS

    def totals(self) -> CacheTotals:
        notes: dict[str, str] = {}
        counts = {name: self._total(name, notes) for name in COUNTED_FIELDS}
        cached = counts["cached_pages"]
        action = None
        if self.action:
            counts_of_action = {name: self._total(name, notes) for name in ACTION_COLUMNS[self.action]}
            action = ActionOutcome(self.action, counts_of_action)
        return CacheTotals(
            files=self.files,
            errors=self.errors,
            size_bytes=self.size_bytes,
            pages=self.pages,
            cached_percent=100 * cached / self._pages_with_cached_count
            if cached is not None and self._pages_with_cached_count
            else None,
            **counts,
            action=action,
            notes=notes,
        )


# --------------------------------------------------------------------------------------- --lock


def _hold_until_signalled(held: list[_Held]) -> None:
    """Keep the locks until Ctrl-C or SIGTERM (then return, so the command exits normally)."""
    locked = [lock_held for lock_held in held if lock_held.handle.locked]
    if not locked:
        stderr_console().print("mqinspect: nothing to hold: no page was locked", style="yellow")
        return
    pages = sum(lock_held.handle.pages for lock_held in locked)
    # Block the signals before saying how to send them: one sent at once must not reach the default handler.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        _say_what_is_locked(locked)
        signal.sigwait(_STOP_SIGNALS)
        while signal.sigtimedwait(_STOP_SIGNALS, 0):  # a second signal (both keys pressed) is spent here
            pass
    finally:
        for lock_held in held:
            lock_held.handle.release()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    stderr_console().print(f"mqinspect: released the lock on {pages} pages", style="dim")


def _say_what_is_locked(locked: list[_Held]) -> None:
    console = stderr_console()
    for lock_held in locked[:_LOCKED_FILES_LISTED]:
        console.print(
            f"mqinspect: locked {lock_held.handle.pages} pages of {lock_held.display_path}", style="dim"
        )
    if len(locked) > _LOCKED_FILES_LISTED:
        console.print(f"mqinspect: ... and {len(locked) - _LOCKED_FILES_LISTED} more files", style="dim")
    pages = sum(lock_held.handle.pages for lock_held in locked)
    console.print(
        f"mqinspect: locked {pages} pages ({human_bytes(pages * PAGE_SIZE)}) of "
        f"{counted(len(locked), 'file')} in the page cache. Ctrl-C to release",
        style="bold",
    )


def register(app: typer.Typer) -> None:
    app.command("cache", rich_help_panel="Page cache")(cache)
