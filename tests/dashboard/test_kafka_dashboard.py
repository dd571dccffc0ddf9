"""The Textual dashboard on a frame of a Kafka log directory (sampled from a writer-made one): rows named
by topic-partition, the segments' source in Kafka's words, and the Consumers tab with the partitions' log
end offsets and the groups' lag from __consumer_offsets."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from fakes import T0, FakeFeed
from rich.console import Console
from textual.widgets import Static

from mqinspect.dashboard.app import DashboardApp
from mqinspect.dashboard.row_table import RowTable
from mqinspect.sampling.stream import TopOptions, sample_once
from store.kafka.consumer_offsets import encode_offset_commit
from store.kafka.writer import LogDirWriter, ProducerRecord


def _plain(renderable) -> str:
    console = Console(width=160, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_a_kafka_frame_fills_the_segments_and_the_consumers_with_partitions(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    with LogDirWriter(root) as log_dir:
        for _ in range(30):
            log_dir.partition("orders", 4).append([ProducerRecord(b"k", b"v" * 500)])  # made on first use
        key, value = encode_offset_commit("billing", "orders", 4, 12, commit_timestamp=1_700_000_000_000)
        log_dir.partition("__consumer_offsets", 0).append([ProducerRecord(key, value)])
    snapshot = sample_once(TopOptions(root, interval_s=0.1, ebpf=False))

    async def test():
        app = DashboardApp(feed=FakeFeed(), clock=lambda: T0 + 10)
        async with app.run_test(size=(160, 50)) as pilot:
            app.receive(snapshot)
            await pilot.pause()
            table = app.query_one("#segments", RowTable)
            names = [table.row_plain(row)[0] for row in range(table.row_count)]
            assert "orders-4/00000000000000000000.log" in names
            notes = _plain(app.screen.query_one("#segment-notes", Static).content)
            assert "does not apply to Kafka" in notes
            app.show_lower_tab("consumers")
            await pilot.pause()
            consumers = _plain(app.screen.query_one("#consumers", Static).content)
            assert "orders-4" in consumers and "billing" in consumers
            assert "log start" in consumers and "lag offsets" in consumers  # partitions, then groups

    asyncio.run(test())


def test_the_consumers_panel_lays_out_the_partitions_it_has_lines_for_and_says_how_many_more(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    with LogDirWriter(root) as log_dir:
        for number in range(40):
            log_dir.partition("orders", number).append([ProducerRecord(b"k", b"v" * 100)])
    snapshot = sample_once(TopOptions(root, interval_s=0.1, ebpf=False))

    async def test():
        app = DashboardApp(feed=FakeFeed(), clock=lambda: T0 + 10)
        async with app.run_test(size=(160, 50)) as pilot:
            for _ in range(2):  # the first frame finds the panel not laid out yet: all of them, once
                app.receive(snapshot)
                await pilot.pause()
            panel = app.screen.query_one("#consumers", Static)
            room = panel.content_size.height
            text = _plain(panel.content)
            shown = [number for number in range(40) if f"orders-{number} " in text]
            assert 0 < len(shown) <= room and shown == list(range(len(shown)))  # the first, in order
            assert f"+{40 - room} more partitions" in text

    asyncio.run(test())
