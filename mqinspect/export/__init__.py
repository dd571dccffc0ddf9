"""`mqinspect export`: the store's page-cache residency, its offsets and lags, and the kernel's dirty memory
against its thresholds, as metrics Prometheus scrapes.

- `measure`: one scrape's measurements, as plain dataclass snapshots (`Scrape`), from the store inspection
  (store.inspection.formats), residency (probes.residency) and /proc readers (probes.procfs). Nothing is
  cached between scrapes: a scrape is a measurement.
- `families`: the snapshots drawn as metric families, one function per source of families
  (`FAMILY_SOURCES`); a new source (eBPF counters) is one more measurement and one more function.
- `collector`: the prometheus_client collector that measures when Prometheus scrapes.
- `server`: where it listens (loopback unless told, TLS beyond it) and how it stops.
"""
