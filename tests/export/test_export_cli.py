"""`mqinspect export` as an operator runs it: loopback by default, TLS beyond it, Prometheus text or
OpenMetrics by the Accept header, paths from the command line only, SIGTERM and Ctrl-C, residency against
fincore, and what a user without root gets (gaps with reasons, never 0)."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import urllib.error
from pathlib import Path

import pytest
from exporter import SMALL_STORE, running_exporter, sample_values
from prometheus_client import generate_latest
from support import (
    expire_all_but_the_last_segment,
    fincore_pages,
    mqinspect_as_nobody,
    one_error_line,
    run_mqinspect,
    store_nobody_can_read,
)

from mqinspect.errors import ExitStatus
from mqinspect.export.collector import export_registry
from mqinspect.export.server import DEFAULT_PORT
from store.inspection.formats import store_files
from store.message_store import MessageStore
from store.workload import ProduceSpec, produce

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
RESIDENCY = ("cached", "dirty", "writeback", "locked")


@pytest.fixture(scope="module")
def store():
    with store_nobody_can_read() as root:
        yield root


def test_scrapes_are_prometheus_text_or_openmetrics_as_the_scraper_asks(store):
    with running_exporter(store, "--listen", "127.0.0.1:0") as exporter:
        plain_type, plain = exporter.get()
        open_type, openmetrics = exporter.get(accept=OPENMETRICS)
    assert plain_type.startswith("text/plain; version=0.0.4")
    assert "# EOF" not in plain and "# UNIT" not in plain
    assert open_type.startswith("application/openmetrics-text; version=1.0.0")
    assert openmetrics.rstrip().endswith("# EOF")
    assert "# UNIT mqinspect_store_cached_bytes bytes" in openmetrics
    assert "# TYPE mqinspect_kernel_dirtied_bytes counter" in openmetrics
    assert "mqinspect_kernel_dirtied_bytes_total " in openmetrics


def test_a_request_cannot_name_another_path(store):
    """The store comes from the command line; whatever a request's path or query says, it measures that."""
    with running_exporter(store, "--listen", "127.0.0.1:0") as exporter:
        exporter.url = exporter.url.replace("/metrics", "/etc/passwd?store=/etc&path=/root")
        _type, exposition = exporter.get()
    stores = {dict(labels)["store"] for labels in sample_values(exposition, "mqinspect_up")}
    assert stores == {str(store)}
    assert "root:" not in exposition


def test_it_listens_on_loopback_by_default(store):
    with running_exporter(store) as exporter:
        assert exporter.url == f"http://127.0.0.1:{DEFAULT_PORT}/metrics"
        listening = subprocess.run(
            ["ss", "-Hltn", f"sport = :{DEFAULT_PORT}"], capture_output=True, text=True
        )
        assert listening.stdout.split()[3] == f"127.0.0.1:{DEFAULT_PORT}", listening.stdout
        assert exporter.stop() == ExitStatus.OK


@pytest.mark.parametrize(("ending", "status"), [(signal.SIGTERM, ExitStatus.OK), (signal.SIGINT, 130)])
def test_sigterm_ends_it_with_0_and_ctrl_c_with_130_closing_the_port(store, ending, status):
    with running_exporter(store, "--listen", "127.0.0.1:0") as exporter:
        exporter.get()
        port = int(exporter.url.rsplit(":", 1)[1].split("/")[0])
        assert exporter.stop(ending) == status
        assert "Traceback" not in "".join(exporter.stderr_lines) + exporter.process.stderr.read()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["--listen", "0.0.0.0:0"], "--tls-cert and --tls-key"),
        (["--listen", "[::]:0"], "--tls-cert and --tls-key"),
        (["--listen", ":0"], "--tls-cert and --tls-key"),
        (["--listen", "127.0.0.1:0", "--tls-cert", "cert.pem"], "go together"),
        (["--listen", "127.0.0.1"], "expected HOST:PORT"),
        (["--listen", "127.0.0.1:70000"], "expected HOST:PORT"),
    ],
)
def test_bad_listening_is_one_line_and_exit_2(store, arguments, said):
    result = run_mqinspect("export", store, *arguments)
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert said in one_error_line(result)


def test_a_path_that_is_no_store_is_one_line_and_exit_2(tmp_path):
    result = run_mqinspect("export", tmp_path, "--once")
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert str(tmp_path) in one_error_line(result)


def test_beyond_loopback_it_serves_https_with_the_given_certificate(store, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed = ("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost")
    subprocess.run(
        ["openssl", *self_signed, "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
    )
    with running_exporter(store, "--listen", "0.0.0.0:0", "--tls-cert", cert, "--tls-key", key) as exporter:
        assert exporter.url.startswith("https://0.0.0.0:")
        exporter.url = exporter.url.replace("0.0.0.0", "127.0.0.1")
        _type, exposition = exporter.get(context=ssl.create_default_context(cafile=str(cert)))
        assert sample_values(exposition, "mqinspect_up")
        plain = exporter.url.replace("https://", "http://")
        exporter.url = plain
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            exporter.get()
        assert exporter.stop() == ExitStatus.OK


def test_per_segment_residency_equals_fincore_file_by_file(store):
    """A store nobody writes: each CommitLog and ConsumeQueue file's cached bytes are fincore's."""
    result = run_mqinspect("export", store, "--once", "--per-segment")
    assert result.exit_code == 0, result.stderr
    cached = sample_values(result.stdout, "mqinspect_store_cached_bytes")
    by_file = {(dict(labels)["kind"], dict(labels)["segment"]): value for labels, value in cached.items()}
    compared = 0
    for file in store_files(store):
        if file.kind != "index":  # see test_prometheus: fincore does not count a folio not read in yet
            assert by_file[(file.kind, file.path.name)] == fincore_pages(file.path) * 4096, file.label
            compared += 1
    assert compared >= 4
    assert len(by_file) == len(store_files(store))


def test_without_root_what_cannot_be_measured_is_named_with_its_reason_never_0(store):
    """As nobody, cachestat is refused and mincore cannot be trusted on a file nobody may write: cached,
    dirty and writeback bytes are left out and mqinspect_unavailable_info says why; offsets and the kernel's
    figures are still there."""
    result = mqinspect_as_nobody("export", str(store), "--once")
    assert result.returncode == 0, result.stderr
    for field in ("cached", "dirty", "writeback"):
        assert not sample_values(result.stdout, f"mqinspect_store_{field}_bytes"), field
    gaps = {
        dict(labels)["metric"]: dict(labels)["reason"]
        for labels in sample_values(result.stdout, "mqinspect_unavailable_info")
    }
    assert "run as root" in gaps["mqinspect_store_cached_bytes"]
    assert "mincore" in gaps["mqinspect_store_dirty_bytes"]
    assert sample_values(result.stdout, "mqinspect_commitlog_max_offset_bytes")
    assert sample_values(result.stdout, "mqinspect_kernel_dirty_threshold_bytes")
    assert sample_values(result.stdout, "mqinspect_up") == {frozenset({("store", str(store))}): 1.0}


def test_a_store_gone_while_served_is_down_with_the_reason(tmp_path: Path):
    with store_nobody_can_read() as root:
        registry = export_registry([root])
        assert (
            sample_values(generate_latest(registry).decode(), "mqinspect_up")[
                frozenset({("store", str(root))})
            ]
            == 1
        )
    exposition = generate_latest(registry).decode()
    assert sample_values(exposition, "mqinspect_up") == {frozenset({("store", str(root))}): 0.0}
    gaps = sample_values(exposition, "mqinspect_unavailable_info")
    assert any(
        dict(labels)["metric"] == "mqinspect_up" and str(root) in dict(labels)["reason"] for labels in gaps
    )
    assert not sample_values(exposition, "mqinspect_store_cached_bytes")


def test_segments_retention_deletes_leave_the_next_scrape_whole(tmp_path: Path):
    """A broker's retention deletes old CommitLog segments between two scrapes: the next scrape counts the
    files that are left, the CommitLog's new first offset, and fincore's residency of what remains."""
    root = tmp_path / "store"
    with MessageStore(root, SMALL_STORE) as writer:
        produce(writer, ProduceSpec("T", 0, count=3000, body_size_bytes=200, batch=50))
        registry = export_registry([root])
        before = generate_latest(registry).decode()
        min_offset = expire_all_but_the_last_segment(writer)
        after = generate_latest(registry).decode()
        remaining = [file.path for file in store_files(root) if file.kind == "commitlog"]
        resident_bytes = sum(fincore_pages(path) for path in remaining) * 4096
    commitlog = frozenset({("store", str(root)), ("kind", "commitlog"), ("topic", ""), ("queue", "")})
    files_after = sample_values(after, "mqinspect_store_files")[commitlog]
    assert files_after == len(remaining) < sample_values(before, "mqinspect_store_files")[commitlog]
    assert sample_values(after, "mqinspect_store_cached_bytes")[commitlog] == resident_bytes
    store_only = frozenset({("store", str(root))})
    assert sample_values(after, "mqinspect_commitlog_min_offset_bytes") == {store_only: min_offset}
    assert sample_values(after, "mqinspect_up") == {store_only: 1.0}


def test_each_store_of_the_command_line_is_its_own_series(store):
    with store_nobody_can_read(messages=500) as other:
        result = run_mqinspect("export", store, other, "--once")
    assert result.exit_code == 0, result.stderr
    up = sample_values(result.stdout, "mqinspect_up")
    assert up == {frozenset({("store", str(store))}): 1.0, frozenset({("store", str(other))}): 1.0}
    max_offsets = sample_values(result.stdout, "mqinspect_commitlog_max_offset_bytes")
    assert len(set(max_offsets.values())) == 2
