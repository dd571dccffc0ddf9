"""What every column, glyph and figure of the dashboard's panels means, in what unit, and where it comes from:
the legend the help screen (?) shows for the focused panel. The panels' own source lines (top.SOURCES) and
glyphs (cells.HEAT_GLYPHS, top.WROTE_MARK, ...) are the ones drawn, so the legend cannot drift from them;
tests check that every column a panel draws has an entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mqinspect.render.cells import ABSENT_GLYPH, HEAT_GLYPHS, NONE
from mqinspect.render.mem import GAUGE_WIDTH
from mqinspect.render.top import CONSUMER_MARK, FLUSHED_MARK, READER_MARK, SOURCES, SPARK_GLYPHS, WROTE_MARK
from mqinspect.render.units import UNAVAILABLE

# Where the figures come from, named once (the panels' full source lines are top.SOURCES).
CACHESTAT = "cachestat(2) (mincore(2) where refused)"
FAULTS_PROBE = "faults probe (exceptions:page_fault_user, filemap:mm_filemap_fault)"
PAGECACHE_PROBE = "pagecache probe (filemap:mm_filemap_add_to_page_cache)"
SENDPATH_PROBE = "sendpath probe (syscalls tracepoints)"
PROC_STAT = "/proc/PID/stat"
PROC_IO = "/proc/PID/io"
SOCK_DIAG = "sock_diag tcp_info of the process's sockets"
PER_INTERVAL = "counted over the last interval"
LOOKUPS_PROBE = "pagecache probe (filemap:mm_filemap_get_pages, mm_filemap_add_to_page_cache)"


@dataclass(frozen=True)
class Entry:
    """One column, glyph or figure: what it shows, in what unit, and its source."""

    name: str
    meaning: str
    source: str = ""


def hit_entries(whose: str) -> tuple[Entry, ...]:
    """The hits, misses and hit% columns of the segments and processes tables."""
    read = f"pages {whose} read path (read, pread, sendfile, splice; not mmap) looked up, {PER_INTERVAL}"
    return (
        Entry("hits", f"{read}, found in the page cache", LOOKUPS_PROBE),
        Entry("misses", f"{read}, brought in by the read", LOOKUPS_PROBE),
        Entry("hit%", "hits of hits + misses (%, one decimal, never rounded up to 100)", LOOKUPS_PROBE),
    )


@dataclass(frozen=True)
class PanelLegend:
    title: str
    columns: tuple[Entry, ...] = ()  # a table's columns, or the figures of a panel without one
    glyphs: tuple[Entry, ...] = ()
    sources: tuple[str, ...] = ()  # keys of top.SOURCES


SORT_GLYPHS = (
    Entry("▼", "the column the rows are sorted by, biggest first"),
    Entry("▲", "the column the rows are sorted by, smallest first"),
)
HEAT_GLYPH_ENTRIES = (
    *(
        Entry(
            glyph,
            f"a chunk of which {'all' if floor == 1 else f'at least {floor:.0%}'} of the pages are cached",
        )
        if floor
        else Entry(glyph, "a chunk with some pages cached (less than a quarter)")
        for floor, glyph in HEAT_GLYPHS
    ),
    Entry(ABSENT_GLYPH, "a chunk with no page cached"),
    Entry("green", "colour of a chunk whose cached pages are all clean"),
    Entry("red", "colour of a chunk that holds dirty pages (written, not yet on disk)"),
    Entry("magenta", "colour of a chunk with pages under writeback (being written to disk)"),
    Entry(WROTE_MARK, "the write position: the end of the last record (data in the file)"),
    Entry(FLUSHED_MARK, "the flush position: checkpoint masterFlushedOffset (data on disk)"),
)
EARLIER_ROWS = Entry(
    "dim",
    "heat, cached, dirty and writeback of a row measured in an earlier interval. Rows on screen are measured "
    "every interval; on a big store the others by turns, each at least every 30 intervals (JSON: "
    "residency_time_unix_s). A heat strip is measured for rows on screen, and kept while cachestat's counts "
    "of the file (cached, dirty, writeback, evicted) stay the same; a row whose counts moved off screen has "
    "none until it is shown",
    CACHESTAT,
)
NOT_MEASURED = (
    Entry(NONE, "not measured, the reason is given under the table or in the status of the probes"),
    Entry(UNAVAILABLE, "not measured: the reason and the fix follow"),
)

LEGENDS: dict[str, PanelLegend] = {
    "segments": PanelLegend(
        "Segments",
        (
            Entry("segment", "the file, kind/name; bold: the one being written", "the store's directory"),
            Entry("heat", "one cell per chunk of the file, glyphs below", CACHESTAT),
            Entry("cached", "share of the file's pages in the page cache, floored (%)", CACHESTAT),
            Entry("dirty", "bytes of its dirty pages (IEC: KiB, MiB)", CACHESTAT),
            Entry("writeback", "bytes of its pages being written to disk", CACHESTAT),
            Entry(
                "locked",
                "bytes of it locked in memory by the processes mapping it",
                "/proc/PID/smaps (mappings with VmFlags lo)",
            ),
            Entry(
                "wrote",
                "bytes written to the file: its write position, a full one's size",
                "the store's records",
            ),
            Entry("faults", f"page faults on its pages, {PER_INTERVAL} (a count)", FAULTS_PROBE),
            Entry("major", f"faults that waited for a read from disk, {PER_INTERVAL}", FAULTS_PROBE),
            Entry(
                "+cache", f"bytes of its pages that entered the page cache, {PER_INTERVAL}", PAGECACHE_PROBE
            ),
            *hit_entries("of it the"),
        ),
        (*HEAT_GLYPH_ENTRIES, EARLIER_ROWS, *SORT_GLYPHS, *NOT_MEASURED),
        ("segments", "segment_events"),
    ),
    "memory": PanelLegend(
        "Memory",
        (
            Entry("cached", "bytes of file pages in the page cache, all files", "/proc/meminfo Cached"),
            Entry(
                "dirty, writeback", "bytes of dirty pages, and of pages being written to disk", "/proc/vmstat"
            ),
            Entry(
                "background at",
                "dirty bytes past which the kernel starts writing back",
                "/proc/sys/vm/dirty_*",
            ),
            Entry("limit", "dirty bytes past which writers are paused (throttled)", "/proc/sys/vm/dirty_*"),
            Entry("regime", "where dirty memory stands between those thresholds", "the figures above"),
            Entry("written to disk, read", "bytes per second paged out and in, all devices", "/proc/vmstat"),
            Entry(
                "PSI some, full",
                "share of time some or all tasks stalled on memory or I/O (%)",
                "/proc/pressure",
            ),
            Entry(
                "dirtied, written back",
                "bytes per second of pages dirtied and written back",
                "writeback probe",
            ),
            Entry(
                "throttled writers",
                "processes paused in balance_dirty_pages this interval",
                "writeback probe",
            ),
        ),
        (
            Entry(
                f"[{'█' * 3}{'·' * 3}]",
                f"dirty + writeback on a bar of {GAUGE_WIDTH} cells ending at the limit",
            ),
            Entry("b, f", "the background threshold and the freerun ceiling on the bar"),
            Entry("green, yellow, red", "below the background threshold, writing back, throttling writers"),
            *NOT_MEASURED,
        ),
        ("memory", "throttling"),
    ),
    "faults": PanelLegend(
        "Faults",
        (
            Entry("pid, command", "a watched process", PROC_STAT),
            Entry(
                "history",
                "its minor faults per second over the last intervals, scaled to the highest",
                PROC_STAT,
            ),
            Entry(
                "minor, major",
                "faults per second served from memory, and from disk",
                f"{PROC_STAT} minflt, majflt",
            ),
            Entry("traced", "its faults per second on the store's files", FAULTS_PROBE),
            Entry(
                "faults per segment", f"faults on each segment's pages, {PER_INTERVAL} (major)", FAULTS_PROBE
            ),
        ),
        (Entry(SPARK_GLYPHS, "one glyph per interval, from none to the highest rate shown"), *NOT_MEASURED),
        ("faults",),
    ),
    "sendpaths": PanelLegend(
        "Send paths",
        (
            Entry("pid", "a process that wrote to a socket", SENDPATH_PROBE),
            Entry("command", "its command name", SENDPATH_PROBE),
            Entry(
                "total", "bytes per second it delivered to sockets: the sum of the next five", SENDPATH_PROBE
            ),
            Entry(
                "read+write", "bytes/s written to a socket from a buffer a file read filled", SENDPATH_PROBE
            ),
            Entry("mmap+write", "bytes/s written to a socket from a mapping of a file", SENDPATH_PROBE),
            Entry("sendfile", "bytes/s sent with sendfile(2) into a socket (no CPU copy)", SENDPATH_PROBE),
            Entry("splice", "bytes/s spliced into a socket from a pipe (no CPU copy)", SENDPATH_PROBE),
            Entry("other", "bytes/s of socket writes of no send path: headers, requests", SENDPATH_PROBE),
            Entry("copies/B", "CPU copies between user and kernel memory per byte delivered", SENDPATH_PROBE),
        ),
        (*SORT_GLYPHS, *NOT_MEASURED),
        ("sendpaths",),
    ),
    "processes": PanelLegend(
        "Processes",
        (
            Entry("pid", "the process id", "/proc"),
            Entry("command", "its command name", PROC_STAT),
            Entry(
                "found",
                "why it is watched: maps or fd (holds a store file), lock, --pid",
                "/proc/PID/maps, fd",
            ),
            Entry("minflt/s", "minor page faults per second (served from memory)", f"{PROC_STAT} minflt"),
            Entry("majflt/s", "major page faults per second (read from disk)", f"{PROC_STAT} majflt"),
            Entry("tcp in/s", "TCP bytes per second received on its sockets", SOCK_DIAG),
            Entry("tcp out/s", "TCP bytes per second sent and acknowledged", SOCK_DIAG),
            Entry(
                "rchar/s", "bytes per second of read(2)-family calls, files and sockets", f"{PROC_IO} rchar"
            ),
            Entry("wchar/s", "bytes per second of write(2)-family calls, sendfile too", f"{PROC_IO} wchar"),
            Entry("rss", "resident memory, bytes", "/proc/PID/status VmRSS"),
            Entry("locked", "memory locked with mlock, bytes", "/proc/PID/status VmLck"),
            *hit_entries("its"),
        ),
        (*SORT_GLYPHS, *NOT_MEASURED),
        ("processes",),
    ),
    "consumers": PanelLegend(
        "Consumers",
        (
            Entry("group", "a consumer group with a committed offset", "config/consumerOffset.json"),
            Entry("queue", "topic/queue id the offset is for", "config/consumerOffset.json"),
            Entry("committed", "the queue offset of the next message it reads", "config/consumerOffset.json"),
            Entry("lag msgs", "messages in the queue after the committed one", "the queue's ConsumeQueue"),
            Entry(
                "lag bytes",
                "CommitLog bytes from the committed message to the end of the queue's last record "
                "(other queues' records between them included)",
                "ConsumeQueue entries",
            ),
            Entry("at CommitLog offset", "the committed message's physical offset", "its ConsumeQueue entry"),
            Entry("consumer", "a socket store bytes were sent to: the consumer's address", SENDPATH_PROBE),
            Entry("path", "the send path of those bytes", SENDPATH_PROBE),
            Entry("sent/s", "bytes per second sent to it", SENDPATH_PROBE),
            Entry("read at", "the CommitLog offset its latest send reached", SENDPATH_PROBE),
            Entry(
                "cold",
                f"pages the sends to it (or their reads) added to the page cache, {PER_INTERVAL}",
                SENDPATH_PROBE,
            ),
            Entry("cached, read from", "the segments it was sent from, with their cached share", CACHESTAT),
        ),
        (
            Entry(CONSUMER_MARK, "on a heat strip: a consumer group's committed position"),
            Entry(READER_MARK, "on a heat strip: where a connected consumer's latest send reached"),
            *NOT_MEASURED,
        ),
        ("consumers",),
    ),
}


def legend_view(panel_id: str) -> RenderableType:
    """The legend of one panel: its columns (or figures), its glyphs, then its full source lines."""
    legend = LEGENDS[panel_id]
    parts: list[RenderableType] = [Text(f"{legend.title}: columns and figures", style="bold")]
    parts.append(_entries_table(legend.columns, with_source=True))
    if legend.glyphs:
        parts.append(Text("glyphs and marks", style="bold"))
        parts.append(_entries_table(legend.glyphs, with_source=False))
    parts += [Text(f"source: {SOURCES[key]}", style="dim cyan") for key in legend.sources]
    return Group(*parts)


def _entries_table(entries: tuple[Entry, ...], *, with_source: bool) -> Table:
    table = Table(box=None, pad_edge=False, show_header=False, padding=(0, 2, 0, 0), expand=False)
    table.add_column(no_wrap=True, style="bold")
    table.add_column(ratio=3, overflow="fold")
    if with_source:
        table.add_column(ratio=2, style="dim", overflow="fold")
    for entry in entries:
        table.add_row(entry.name, entry.meaning, *((entry.source,) if with_source else ()))
    return table
