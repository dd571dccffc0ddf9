"""`mqinspect cache`: page-cache residency of files, of a directory tree, or of the files a process uses;
optionally evict, touch or lock them (as vmtouch -e, -t, -l do).

This module parses the options, asks `probes.residency.report` for the rows (it picks the files, applies
the action and measures each file, one row at a time) and hands them to a writer in
`mqinspect.render.cache`, so output streams; it holds --lock's locks until a signal and picks the exit
status. Error rows (a missing path, a directory without --recursive, a device, permission denied) are
reported with the others and make the exit status 1. When no PATH exists at all there is nothing to report
on: that is bad input, one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click
import typer

from mqinspect.cli.options import OutputFormat, ShortFormsCommand, format_option
from mqinspect.errors import BadInput, ExitStatus
from mqinspect.render.cache import write_cache_csv, write_cache_json, write_cache_table
from mqinspect.render.console import stderr_console, stdout_console
from mqinspect.render.units import human_bytes
from mqinspect.render.words import counted
from probes.residency.mincore import PAGE_SIZE
from probes.residency.report import CacheItem, CacheRequest, CacheTally, HeldLock, cache_rows
from probes.residency.scan import ResidencyError

if TYPE_CHECKING:  # read only for --pid: a scan of paths does not import it
    from probes.process_files import ProcessFiles

# Without --chunks the table still draws a heat strip: this many chunks per file.
TABLE_HEAT_CHUNKS = 20
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_LOCKED_FILES_LISTED = 10
CACHE_PRIVILEGE_FIX = "run as root (sudo mqinspect cache ...) or as the owner of the files"


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
    request = CacheRequest(
        chunks=chunks or (TABLE_HEAT_CHUNKS if output == OutputFormat.TABLE else None),
        page_map=page_map,
        action=action,
        sync=sync,
    )
    process = _process(pid) if pid is not None else None
    _announce(action, sync)
    held: list[HeldLock] = []
    tally = CacheTally(action)
    try:
        rows = cache_rows(paths or [], request, recursive=recursive, process=process, held=held)
        items = tally.counted(map(_in_cli_terms, rows))
        _write(items, tally, output, request, process, chunks_asked=chunks is not None)
        if action == "lock":
            _hold_until_signalled(held)
    finally:
        for lock_held in held:
            lock_held.handle.release()
    status = _exit_status(tally)
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
    # Imported here: only --pid reads a process's files, and the /proc readers would slow every start-up.
    from probes.process_files import read_process_files
    from probes.procfs import ProcessGone

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
    request: CacheRequest,
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


def _in_cli_terms(item: CacheItem) -> CacheItem:
    # scan_paths names its parameter (recursive=True); a command-line user needs the option's name.
    if isinstance(item, ResidencyError) and item.errno == errno.EISDIR:
        return dataclasses.replace(
            item, reason="is a directory; add --recursive to measure the files under it"
        )
    return item


def _exit_status(tally: CacheTally) -> ExitStatus:
    """0 when every file was measured; 3 when nothing was, each for lack of privilege; 1 otherwise."""
    if tally.all_measured:
        return ExitStatus.OK
    return ExitStatus.MISSING_CAPABILITY if tally.only_privilege_missing else ExitStatus.FINDINGS


# --------------------------------------------------------------------------------------- --lock


def _hold_until_signalled(held: list[HeldLock]) -> None:
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


def _say_what_is_locked(locked: list[HeldLock]) -> None:
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
    app.command("cache", rich_help_panel="Page cache", cls=ShortFormsCommand)(cache)  # fincore's -J
