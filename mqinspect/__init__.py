"""mqinspect: inspect and observe memory-mapped message-log stores on Linux."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # Looked up only when asked for (`mqinspect --version`): importlib.metadata costs every command ~10 ms.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mqinspect")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
