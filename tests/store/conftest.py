"""Fixtures for the store tests: `make_store` builds RocketMQ-format stores with `store_builder`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# store_builder is a helper module beside the tests, not a package: make it importable in any import mode.
sys.path.insert(0, str(Path(__file__).parent))

from store_builder import StoreBuilder


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., StoreBuilder]:
    """A StoreBuilder for a new store under tmp_path (call it again for another one)."""
    made = []

    def make(**options) -> StoreBuilder:
        made.append(None)
        return StoreBuilder(tmp_path / f"store{len(made)}", **options)

    return make
