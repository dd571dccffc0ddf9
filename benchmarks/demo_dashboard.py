"""The demo watched through the dashboard's own output for a long session: what `mqinspect top` shows, held
against what the demo's processes did. Issue 13's proof that the dashboard's numbers stay right while the
CommitLog rolls every few seconds.

The demo's workload (mqinspect.demo: a broker process with 64 MiB segments rolling every ~6 s, warm-up,
retention, one consumer process per send path) runs for --duration seconds while `mqinspect top STORE --format
jsonl` (every probe loaded, one frame a second) writes its frames. The dashboard starts before the consumers
and the consumers stop before its last frames, so every byte a consumer counted was sent while it watched.
Then, from the frames alone:

  send paths  per path, the broker's bytes summed over the frames, against the bytes its consumer received
              (the records: the pull server's protocol headers are not in them) and the pull server's count
  +cache      per CommitLog segment created and written during the session, over the frames up to the first
              in which it holds the write position (its warm-up), the pages the dashboard's `+cache` added
              less those its `-cache` removed, against the pages cachestat found cached in that frame: a new
              segment starts with none cached, so every page then cached was added and shown. `+cache` counts
              insertions: a page reclaimed (here by DAMON) during the warm-up and touched again is added twice
              and removed once, so `+cache` alone may exceed the segment's pages; with nothing reclaimed the
              warm-up adds exactly its pages.
  dirtied     per such segment whose warm-up had cached all its pages before it took the write position, the
              pages the dashboard showed dirtied over the frames before that one, against its pages: the
              warm-up writes each page of the new file once
  wrote       per frame, the CommitLog segment marked as holding the write position: every segment before
              it shows its full size, every one after it 0 (the preallocated next segment), and it is the
              segment `mqinspect store stat` names as the log's end at the end of the session

    .venv/bin/python benchmarks/demo_dashboard.py                  # 10 minutes, the issue's check
    .venv/bin/python benchmarks/demo_dashboard.py --duration 60    # a shorter look

Needs root (or CAP_BPF+CAP_PERFMON), bcc and kernel headers for the probes. Exits 0 when every check holds
(paths within --tolerance), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mqinspect.demo.settings import DemoSettings  # noqa: E402
from mqinspect.demo.workload import DemoWorkload  # noqa: E402

PATH_KEYS = {
    "read+write": ("read_write_bytes", "read_write"),
    "mmap+write": ("mmap_write_bytes", "mmap_write"),
    "sendfile": ("sendfile_bytes", "sendfile"),
    "splice": ("splice_bytes", "splice"),
}
FRAME_WAIT_S = 60.0


@dataclass(frozen=True)
class WarmUp:
    """One new segment over its warm-up's frames: `+cache` and `-cache` summed, and cachestat's cached pages
    and the segment's pages in the last of them."""

    added_pages: int | None
    deleted_pages: int | None
    cached_pages: int | None
    pages: int | None
    dirtied_pages: int | None = None  # over the frames before the one in which it holds the write position
    cached_before_written: int | None = None  # cachestat's cached pages in the last of those frames

    @property
    def shown_exactly(self) -> bool:
        """Every page cached at the end was shown added (and not removed since)."""
        if self.added_pages is None or self.deleted_pages is None or self.cached_pages is None:
            return False
        return self.added_pages - self.deleted_pages == self.cached_pages

    @property
    def warmed_before_written(self) -> bool:
        """The warm-up had cached every page before the producer wrote into the segment."""
        return self.pages is not None and self.cached_before_written == self.pages

    @property
    def dirtied_exactly(self) -> bool:
        """The warm-up writes each page of the new file once: every page was shown dirtied once."""
        return self.dirtied_pages == self.pages


@dataclass(frozen=True)
class Frames:
    frames: list[dict]

    def broker_bytes(self, broker: int) -> dict[str, int]:
        moved = dict.fromkeys(PATH_KEYS, 0)
        for frame in self.frames:
            for row in frame["sendpaths"]["processes"]:
                if row["pid"] == broker:
                    for path, (key, _consumer) in PATH_KEYS.items():
                        moved[path] += row[key]
        return moved

    def warm_up_pages(self, names: set[str]) -> dict[str, WarmUp]:
        """{segment: its WarmUp, from its first frame to the first in which it holds the write position}: what
        the warm-up brought in before the producer wrote into it. A segment the frames never saw written (the
        next one at the end) is left out."""
        counts: dict[str, list[int | None]] = defaultdict(lambda: [0, 0])
        dirtied: dict[str, int | None] = defaultdict(int)
        last: dict[str, dict] = {}
        before_written: dict[str, dict] = {}
        written: set[str] = set()
        for frame in self.frames:
            for segment in commitlog_segments(frame):
                name = segment["name"]
                if name not in names or name in written:
                    continue
                last[name] = segment
                for place, key in enumerate(("added_pages", "deleted_pages")):
                    counts[name][place] = _summed(counts[name][place], segment[key])
                if segment["holds_write_position"]:
                    written.add(name)
                else:
                    before_written[name] = segment
                    dirtied[name] = _summed(dirtied[name], segment["dirtied_pages"])
        return {
            name: WarmUp(
                *counts[name],
                last[name]["cached_pages"],
                last[name]["pages"],
                dirtied[name],
                before_written.get(name, {}).get("cached_pages"),
            )
            for name in written
        }

    def write_position_problems(self) -> list[str]:
        """One line per frame whose CommitLog segments do not show the write position as the rule says."""
        return [problem for problem in map(_write_position_problem, self.frames) if problem]

    def write_position(self) -> tuple[str, int] | None:
        """The last frame's (segment file name, wrote position) of the segment holding the write position."""
        holder = [s for s in commitlog_segments(self.frames[-1]) if s["holds_write_position"]]
        return (Path(holder[0]["name"]).name, holder[0]["wrote_position_bytes"]) if holder else None


def _write_position_problem(frame: dict) -> str | None:
    commitlog = commitlog_segments(frame)
    holders = [index for index, segment in enumerate(commitlog) if segment["holds_write_position"]]
    if len(holders) != 1:
        return f"frame {frame['sequence']}: {len(holders)} segments hold the write position"
    for index, segment in enumerate(commitlog):
        wrote, size = segment["wrote_position_bytes"], segment["size_bytes"]
        right = (
            wrote == size if index < holders[0] else wrote == 0 if index > holders[0] else 0 < wrote <= size
        )
        if not right:
            return f"frame {frame['sequence']}: {segment['name']} wrote {wrote}"
    return None


def _summed(total: int | None, value: int | None) -> int | None:
    return None if total is None or value is None else total + value


def commitlog_segments(frame: dict) -> list[dict]:
    return [segment for segment in frame["store"]["segments"] if segment["kind"] == "commitlog"]


def stopped_store(store: Path) -> tuple[dict, dict]:
    frame, stat = (
        subprocess.run(
            [sys.executable, "-m", "mqinspect", *arguments, "-f", "json"], capture_output=True, text=True
        )
        for arguments in (("top", str(store), "--once", "--no-ebpf"), ("store", "stat", str(store)))
    )
    return json.loads(frame.stdout), json.loads(stat.stdout)


def mqinspect(*arguments: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mqinspect", *arguments], **popen)


def wait_for_frames(path: Path, count: int) -> None:
    deadline = time.monotonic() + FRAME_WAIT_S
    while _line_count(path) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"demo_dashboard: the dashboard wrote no frame in {FRAME_WAIT_S:.0f} s")
        time.sleep(0.2)


def _line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@dataclass(frozen=True)
class Watched:
    frames: Frames
    broker: int
    received: dict[str, int]  # per consumer path: the bytes of the records it got
    served: dict[str, int]  # per consumer path: the pull server's own count
    stopped: tuple[dict, dict]  # once the broker stopped: one `top --once` frame and `store stat`
    created: set[str]  # CommitLog segments that appeared while the dashboard watched


def watch(duration_s: float, directory: Path, frames_path: Path) -> Watched:
    workload = DemoWorkload(DemoSettings(), directory)
    try:
        workload.start_broker()
        (broker,) = workload.pids
        commitlog = workload.store_dir / "commitlog"
        with frames_path.open("wb") as sink:
            top = mqinspect(
                "top", str(workload.store_dir), "--format", "jsonl", "--interval", "1", stdout=sink
            )
            try:
                wait_for_frames(frames_path, 2)  # the probes are attached and a first rate was taken
                first_segments = {f"commitlog/{name.name}" for name in commitlog.iterdir()}
                workload.start_consumers()
                time.sleep(duration_s)
                workload.stop_consumers()
                wait_for_frames(frames_path, _line_count(frames_path) + 2)  # the last sends are in a frame
            finally:
                top.send_signal(signal.SIGINT)
                top.wait(timeout=60)
        outcome = workload.stop()
        stopped = stopped_store(workload.store_dir)
    finally:
        workload.close()
    frames = Frames([json.loads(line) for line in frames_path.read_text().splitlines() if line.strip()])
    seen = {
        s["name"] for frame in frames.frames for s in frame["store"]["segments"] if s["kind"] == "commitlog"
    }
    return Watched(
        frames,
        broker,
        received={consumer.path.value: consumer.bytes_received for consumer in outcome.consumers},
        served={item.path.value: item.bytes_sent for item in outcome.broker.served},
        stopped=stopped,
        created=seen - first_segments,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds watched (default 600)")
    parser.add_argument(
        "--tolerance", type=float, default=0.01, help="allowed path difference (default 0.01)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--frames", type=Path, default=None, help="keep the dashboard's frames in this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mqinspect-demo-dashboard-") as scratch:
        directory = args.dir or Path(scratch) / "demo"
        watched = watch(args.duration, directory, args.frames or Path(scratch) / "frames.jsonl")
    frames, created = watched.frames, watched.created
    ok = True
    print(f"frames: {len(frames.frames)}; CommitLog segments created while watched: {len(created)}")
    print(f"{'path':<11} {'dashboard bytes':>16} {'consumer bytes':>16} {'server bytes':>16} {'diff %':>9}")
    for path, moved in frames.broker_bytes(watched.broker).items():
        consumer = PATH_KEYS[path][1]
        received, served = watched.received.get(consumer, 0), watched.served.get(consumer, 0)
        difference = None if not received else 100 * (moved - received) / received
        ok &= difference is not None and abs(difference) <= 100 * args.tolerance
        shown = "-" if difference is None else f"{difference:+.4f}"
        print(f"{path:<11} {moved:>16,} {received:>16,} {served:>16,} {shown:>9}")
    warm_ups = frames.warm_up_pages(created)
    exact = [name for name, warm_up in warm_ups.items() if warm_up.shown_exactly]
    whole = sum(warm_up.added_pages == warm_up.pages for warm_up in warm_ups.values())
    print(
        f"+cache: {len(exact)} of {len(warm_ups)} new segments written while watched: +cache - -cache over "
        f"the warm-up = the pages cachestat saw cached ({whole} with +cache = the segment's pages, the rest "
        f"had pages reclaimed and added again)"
    )
    for name, warm_up in sorted(warm_ups.items()):
        if not warm_up.shown_exactly or warm_up.added_pages != warm_up.pages:
            print(
                f"  {name}: +cache {warm_up.added_pages} -cache {warm_up.deleted_pages}, cached "
                f"{warm_up.cached_pages} of {warm_up.pages} pages"
            )
    ok &= bool(warm_ups) and len(exact) == len(warm_ups)
    warmed = {name: warm_up for name, warm_up in warm_ups.items() if warm_up.warmed_before_written}
    dirtied_exactly = [name for name, warm_up in warmed.items() if warm_up.dirtied_exactly]
    print(
        f"dirtied: {len(dirtied_exactly)} of {len(warmed)} new segments warmed before the producer wrote "
        f"into them: dirtied over the warm-up = the segment's pages ({len(warm_ups) - len(warmed)} still "
        f"warming when they took the write position, not counted)"
    )
    for name, warm_up in sorted(warmed.items()):
        if not warm_up.dirtied_exactly:
            print(f"  {name}: dirtied {warm_up.dirtied_pages} of {warm_up.pages} pages")
    ok &= bool(warmed) and len(dirtied_exactly) == len(warmed)
    problems = frames.write_position_problems()
    frame, stat = watched.stopped
    shown, end = Frames([frame]).write_position(), stat["commitlog"]["end"]
    agree = shown == (Path(end["segment"]).name, end["physical_offset"] - int(Path(end["segment"]).name))
    print(
        f"wrote: {len(frames.frames) - len(problems)} of {len(frames.frames)} frames with the position on "
        f"one segment, full before it, 0 after it; once the broker stopped, the dashboard shows {shown}, "
        f"store stat ends the log in {Path(end['segment']).name} at {end['physical_offset']:,}"
    )
    for problem in problems[:10]:
        print(f"  {problem}")
    ok &= not problems and agree
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
