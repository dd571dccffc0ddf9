"""Tables for the store inspection snapshots (`mqinspect store ...`)."""

from __future__ import annotations

from rich.table import Table

from store.inspect import ConsumeQueueView


def consume_queue_table(view: ConsumeQueueView) -> Table:
    table = Table(
        title=f"consume queue {view.topic}/{view.queue_id}: offsets {view.min_offset}..{view.max_offset} "
        f"(max is the next offset to be written)",
        title_justify="left",
    )
    for column in ("queue offset", "physical offset", "size (B)", "tags code"):
        table.add_column(column, justify="right")
    for entry in view.entries:
        table.add_row(
            str(entry.queue_offset), str(entry.physical_offset), str(entry.size_bytes), str(entry.tags_code)
        )
    return table
