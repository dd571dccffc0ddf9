"""mqinspect: inspect and observe memory-mapped message-log stores on Linux."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mqinspect")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
