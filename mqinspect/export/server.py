"""Where `mqinspect export` listens, and how it stops.

It binds to loopback unless told otherwise (prometheus_client binds every address by default), and beyond
loopback only with TLS: the metrics name a host's topics and how busy each one is. The default port, 5558,
is outside the range of Prometheus's default port allocations (9100 and up, every port of 9100-9999 taken),
as Prometheus's guide to writing exporters advises for an exporter not on that list, and beside the port
RocketMQ's own exporter listens on (5557), so a broker's two exporters sit together in a firewall rule.

SIGTERM (a service manager stopping it) ends it with status 0, Ctrl-C with 130, after the server has
answered the scrape in progress and closed its socket.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from mqinspect.errors import BadInput, ExitStatus

DEFAULT_PORT = 5558
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def is_loopback(self) -> bool:
        """Whether every address the host resolves to is a loopback address (127.0.0.0/8, ::1)."""
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            pass
        try:
            resolved = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise BadInput(f"--listen {self.host}: cannot resolve the host ({error.strerror})") from None
        return all(ipaddress.ip_address(entry[4][0].split("%")[0]).is_loopback for entry in resolved)


def parse_listen(text: str) -> ListenAddress:
    """HOST:PORT, [IPV6]:PORT; an empty host is every address."""
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BadInput(
            f"--listen {text}: expected HOST:PORT (127.0.0.1:{DEFAULT_PORT}, [::1]:{DEFAULT_PORT})"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return ListenAddress(host or "0.0.0.0", int(port))


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path


def tls_for(address: ListenAddress, cert: Path | None, key: Path | None) -> Tls | None:
    """The TLS files to serve with: required beyond loopback, both or neither."""
    if (cert is None) != (key is None):
        raise BadInput("--tls-cert and --tls-key go together: give both, or neither")
    if cert is not None and key is not None:
        return Tls(cert, key)
    if not address.is_loopback():
        raise BadInput(
            f"--listen {address.url_host}:{address.port} reaches beyond this host: serve it with --tls-cert "
            "and --tls-key, or listen on loopback (127.0.0.1) behind a TLS proxy"
        )
    return None


def serve_until_stopped(
    registry: CollectorRegistry,
    address: ListenAddress,
    tls: Tls | None,
    announce: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> int:
    """Serve `registry` until SIGTERM (exit status 0) or Ctrl-C (130)."""
    # Blocked before the server's thread starts, so it inherits the mask and only sigwait() takes them.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        server, thread = _start(registry, address, tls)
        try:
            scheme = "https" if tls else "http"
            announce(
                f"mqinspect: serving metrics at {scheme}://{address.url_host}:{server.server_port}/metrics "
                "(Prometheus text and OpenMetrics); Ctrl-C or SIGTERM stops"
            )
            received = signal.sigwait(_STOP_SIGNALS)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return ExitStatus.OK if received == signal.SIGTERM else ExitStatus.INTERRUPTED


def _start(registry: CollectorRegistry, address: ListenAddress, tls: Tls | None):
    where = f"{address.url_host}:{address.port}"
    try:
        return start_http_server(
            address.port,
            addr=address.host,
            registry=registry,
            certfile=str(tls.cert) if tls else None,
            keyfile=str(tls.key) if tls else None,
        )
    except ssl.SSLError as error:
        raise BadInput(f"--tls-cert/--tls-key: not a usable certificate and key ({error.reason})") from None
    except OSError as error:
        # A taken port, an address not on this host, a certificate file that cannot be read.
        file = f"{error.filename}: " if error.filename else ""
        raise BadInput(f"cannot listen on {where}: {file}{error.strerror}") from None
