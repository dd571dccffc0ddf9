"""What the demo tests ask /proc about the demo's processes."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    """True while the pid exists and is not a zombie (the demo reaps its children; init reaps orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
