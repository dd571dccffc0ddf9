"""`mqinspect export`: the stores' page-cache residency, offsets and lags, and the kernel's dirty memory
against its thresholds, served to Prometheus."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mqinspect.errors import BadInput, ExitStatus
from mqinspect.export.collector import export_registry
from mqinspect.export.server import DEFAULT_LISTEN, parse_listen, serve_until_stopped, tls_for
from mqinspect.signals import Terminated, signals_interrupt
from store.errors import StoreError
from store.inspection.formats import detect_format


def export(
    stores: list[Path] = typer.Argument(
        ...,
        help="Store roots (each the directory that holds commitlog/).",
        show_default=False,
        metavar="STORE_DIR...",
    ),
    listen: str = typer.Option(
        DEFAULT_LISTEN,
        "--listen",
        help="HOST:PORT to serve on. Loopback by default; any other address needs --tls-cert and --tls-key. "
        "5558 is outside Prometheus's default port allocations (9100 and up) and beside RocketMQ's "
        "exporter (5557).",
    ),
    per_segment: bool = typer.Option(
        False, "--per-segment", help="Residency of each segment file too (one series per file: many series)."
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate to serve HTTPS with."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    once: bool = typer.Option(
        False, "--once", help="Print one scrape in Prometheus's text format to stdout and exit (no server)."
    ),
    ebpf: bool = typer.Option(
        False,
        "--ebpf",
        help="Also count, with eBPF probes on the processes that hold each store: page faults on its files, "
        "page-cache additions and removals, dirtied and written bytes, bytes sent per send path and their "
        "CPU copies, dirty-throttle pauses. Needs root (or CAP_BPF and CAP_PERFMON); compiling takes "
        "seconds.",
    ),
) -> int:
    """Serve Prometheus metrics of the stores: residency (cached, dirty, writeback, locked bytes) per kind
    and topic-queue, the CommitLog's offsets and its dispatch and flush lags, and the kernel's dirty and
    writeback bytes against its background and throttle thresholds.

    Each scrape measures anew (nothing is cached between scrapes), in the Prometheus text format or
    OpenMetrics, as the scraper's Accept header asks. A figure that cannot be measured is left out and named
    with its reason in mqinspect_unavailable_info, never exported as 0. The store paths come only from this
    command line; a request cannot name another.

    With --ebpf the counters (_total) count from the exporter's start, drained at each scrape; the probes
    detach when it stops, on SIGTERM and Ctrl-C too.

    Exit status: 0 when SIGTERM stops it, 130 on Ctrl-C; 2 for a path that is not a store, a bad --listen,
    or an address beyond loopback without TLS; 3 when --ebpf cannot trace here (no root, no bcc)."""
    roots = [_store_root(path) for path in stores]
    address = None if once else parse_listen(listen)
    tls = None if address is None else tls_for(address, tls_cert, tls_key)
    counters = None
    try:
        # SIGTERM before serving (the probes compile for seconds) stops the server as SIGTERM while serving
        # does: exit 0, the probes detached (serve_until_stopped takes the signal itself). A --once scrape
        # cut short is interrupted (130).
        with signals_interrupt():
            counters = _started_probes(roots, per_segment) if ebpf else None
            registry = export_registry(roots, per_segment=per_segment, ebpf=counters)
            if address is None:
                from prometheus_client import generate_latest

                sys.stdout.buffer.write(generate_latest(registry))
                return ExitStatus.OK
            return serve_until_stopped(registry, address, tls)
    except Terminated:
        if address is None:
            raise
        return ExitStatus.OK
    finally:
        if counters is not None:
            counters.close()


def _started_probes(roots: list[Path], per_segment: bool):
    """The stores' probe sessions, compiled and attached before the exporter listens (an interruption while
    they compile leaves nothing attached: EbpfCounters.start closes what it started)."""
    from mqinspect.export.ebpf import EbpfCounters, require_ebpf

    require_ebpf()
    print("mqinspect: compiling the eBPF probes (some seconds)", file=sys.stderr, flush=True)
    counters = EbpfCounters.for_stores(roots, per_segment=per_segment)
    counters.start()
    return counters


def _store_root(path: Path) -> Path:
    """The store as given, checked now: a path that is no store is bad input, not a scrape that fails."""
    try:
        detect_format(path)
    except StoreError as error:
        raise BadInput(str(error)) from None
    return path.absolute()


def register(app: typer.Typer) -> None:
    app.command("export", rich_help_panel="Store")(export)
