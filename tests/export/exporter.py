"""What the export tests share: `mqinspect export` running as a server, a store being written, and fincore
of a store's files by kind (the ground truth residency is checked against)."""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support import REPO

from store.config import StoreConfig
from store.inspection.formats import store_files
from store.message_store import MessageStore
from store.workload import ProduceSpec, produce

SERVING = re.compile(r"serving metrics at (https?://\S+/metrics)")
# Small files so that a few seconds of writing rolls the CommitLog and fills several ConsumeQueue files.
SMALL_STORE = StoreConfig(
    mapped_file_size_commitlog=256 * 1024,
    consume_queue_entries_per_file=1000,
    max_hash_slot_num=64,
    max_index_num=256,
)


@dataclass
class Exporter:
    process: subprocess.Popen
    url: str
    stderr_lines: list[str]

    def get(self, accept: str | None = None, context=None) -> tuple[str, str]:
        """(Content-Type, body) of one scrape."""
        request = urllib.request.Request(self.url, headers={"Accept": accept} if accept else {})
        # No proxy from the environment: the exporter is on this host.
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        with opener.open(request, timeout=10) as response:
            return response.headers["Content-Type"], response.read().decode()

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=10)


@contextlib.contextmanager
def running_exporter(*arguments: object, deadline_s: float = 20) -> Iterator[Exporter]:
    """`mqinspect export ARGUMENTS` in a child process, once it says where it serves."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mqinspect", "export", *map(str, arguments)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    try:
        url = _wait_for_url(lines, seen, process, time.monotonic() + deadline_s)
        exporter = Exporter(process, url, seen)
        yield exporter
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _wait_for_url(
    lines: queue.Queue[str], seen: list[str], process: subprocess.Popen, deadline: float
) -> str:
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            assert process.poll() is None, f"export ended with {process.returncode}: {seen}"
            continue
        seen.append(line)
        found = SERVING.search(line)
        if found:
            return found.group(1)
    raise AssertionError(f"export did not say where it serves: {seen}")


@contextlib.contextmanager
def store_being_written(root: Path, rate_msgs_per_s: float = 1500) -> Iterator[MessageStore]:
    """A MessageStore two producers append to (topic T queue 0, topic U queue 1) until the block ends."""
    stop = threading.Event()
    with MessageStore(root, SMALL_STORE) as store:
        specs = [
            ProduceSpec("T", 0, count=10**9, body_size_bytes=200, batch=10, rate_msgs_per_s=rate_msgs_per_s),
            ProduceSpec("U", 1, count=10**9, body_size_bytes=300, batch=10, rate_msgs_per_s=rate_msgs_per_s),
        ]
        writers = [
            threading.Thread(target=produce, args=(store, spec), kwargs={"should_stop": stop.is_set})
            for spec in specs
        ]
        for writer in writers:
            writer.start()
        try:
            yield store
        finally:
            stop.set()
            for writer in writers:
                writer.join(timeout=30)


def fincore_bytes_by_kind(root: Path) -> dict[str, int]:
    """Resident bytes of the store's files summed per kind, by util-linux fincore (one run for all)."""
    files = store_files(root)
    output = subprocess.run(
        [
            "fincore",
            "--bytes",
            "--noheadings",
            "--raw",
            "--output",
            "RES,FILE",
            *(str(f.path) for f in files),
        ],
        capture_output=True,
        text=True,
    ).stdout  # a file deleted meanwhile is an error line on stderr, and no row
    resident = {}
    for line in output.splitlines():
        size, path = line.split(" ", 1)
        resident[path] = int(size)
    totals: dict[str, int] = {}
    for file in files:
        totals[file.kind] = totals.get(file.kind, 0) + resident.get(str(file.path), 0)
    return totals


def sample_values(exposition: str, name: str) -> dict[frozenset, float]:
    """{labels: value} of the samples of `name` in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name:
                values[frozenset(sample.labels.items())] = sample.value
    return values
