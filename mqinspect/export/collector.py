"""The prometheus_client collector behind `mqinspect export`: it measures when it is scraped.

A scrape is a measurement, not a cache of one: each collect() reads the store and /proc again. Scrapes that
arrive together (two Prometheus servers) are measured one after the other, so two measurements of the same
files never race each other for the CPU.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from mqinspect.export.families import scrape_families
from mqinspect.export.measure import Scrape, measure_scrape

if TYPE_CHECKING:
    from mqinspect.export.ebpf import EbpfCounters


class ExportCollector(Collector):
    def __init__(self, roots: Sequence[Path], *, per_segment: bool = False, ebpf: EbpfCounters | None = None):
        self.roots = tuple(Path(root) for root in roots)  # the command line's paths, and only those
        self.per_segment = per_segment
        self.ebpf = ebpf
        self._one_at_a_time = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        with self._one_at_a_time:
            if self.ebpf is None:
                scrape = measure_scrape(self.roots, per_segment=self.per_segment)
            else:
                scrape = self._measure_with_probes(self.ebpf)
        return list(scrape_families(scrape))

    def _measure_with_probes(self, ebpf: EbpfCounters) -> Scrape:
        """The probes drained first (they list each store as they do), then the stores measured from those
        listings, then the counters' series made to match the files measured."""
        started = time.perf_counter()
        ebpf.drain()
        scrape = measure_scrape(self.roots, per_segment=self.per_segment, list_files=ebpf.list_files)
        return replace(scrape, ebpf=ebpf.measurement(scrape.stores), duration_s=time.perf_counter() - started)

    def describe(self) -> Iterable[Metric]:
        return ()  # registering must not measure: the families are known only by measuring


def export_registry(
    roots: Sequence[Path], *, per_segment: bool = False, ebpf: EbpfCounters | None = None
) -> CollectorRegistry:
    """A registry with the export collector alone (not prometheus_client's process and platform ones)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExportCollector(roots, per_segment=per_segment, ebpf=ebpf))
    return registry
