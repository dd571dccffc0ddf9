"""mqinspect: inspect and observe memory-mapped message-log stores on Linux."""

# The one place the version is written: pyproject.toml reads it from here (setuptools dynamic metadata), so
# `mqinspect --version` needs no importlib.metadata, which costs every start-up ~15 ms.
__version__ = "0.1.0"
