"""The segment sizes a store was created with, so that it reopens with the same ones.

RocketMQ keeps these in broker.conf, not in the store. mqinspect writes them to `config/mqinspect.json` at
`init` (RocketMQ ignores unknown files in config/), and for any other store infers them from the files:
the CommitLog and ConsumeQueue segment sizes from their lengths, the index geometry from the newest index
file. What cannot be inferred keeps RocketMQ's default.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from store.config import CQ_STORE_UNIT_SIZE, StoreConfig
from store.errors import StoreError
from store.index_file import IndexFile
from store.layout import discover_store

SIZES_FILE = Path("config") / "mqinspect.json"
SIZE_FIELDS = (
    "mapped_file_size_commitlog",
    "consume_queue_entries_per_file",
    "max_hash_slot_num",
    "max_index_num",
)


def save_store_sizes(root: Path, config: StoreConfig) -> Path:
    path = Path(root) / SIZES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: getattr(config, name) for name in SIZE_FIELDS}, indent=2) + "\n")
    return path


def store_config_for(root: Path, base: StoreConfig | None = None) -> StoreConfig:
    """`base` (default: RocketMQ's defaults) with the sizes this store was made with."""
    base = base or StoreConfig()
    saved = _saved_sizes(Path(root))
    sizes = saved if saved is not None else _inferred_sizes(Path(root))
    return dataclasses.replace(base, **sizes)


def _saved_sizes(root: Path) -> dict[str, int] | None:
    path = root / SIZES_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise StoreError(f"{path}: unreadable ({error}); remove it to infer sizes from the files") from error
    if not isinstance(data, dict):
        raise StoreError(f"{path}: not a JSON object of sizes")
    return {
        name: int(data[name]) for name in SIZE_FIELDS if isinstance(data.get(name), int) and data[name] > 0
    }


def _inferred_sizes(root: Path) -> dict[str, int]:
    if not (root / "commitlog").is_dir():
        return {}
    layout = discover_store(root)
    sizes: dict[str, int] = {}
    if layout.commitlog.file_size:
        sizes["mapped_file_size_commitlog"] = layout.commitlog.file_size
    cq_size = next((cq.queue.file_size for cq in layout.consume_queues if cq.queue.file_size), None)
    if cq_size:
        sizes["consume_queue_entries_per_file"] = cq_size // CQ_STORE_UNIT_SIZE
    if layout.index_files:
        with IndexFile.open(layout.index_files[-1], read_only=True) as index:
            sizes["max_hash_slot_num"] = index.geometry.hash_slot_num
            sizes["max_index_num"] = index.geometry.index_num
    return sizes
