"""The running kernel's version, for the features that came with one."""

from __future__ import annotations

import platform
import re


def kernel_version(release: str | None = None) -> tuple[int, int, int]:
    """(major, minor, patch) of a release string such as "6.18.44-fc-v669" (the running kernel's by default);
    missing numbers are 0, and a string that does not start with a number is (0, 0, 0)."""
    numbers = [int(part) for part in re.findall(r"\d+", (release or platform.release()).split("-")[0])[:3]]
    return tuple([*numbers, 0, 0, 0][:3])  # type: ignore[return-value]
