"""The store never hides an acknowledged message: SIGKILL a producer again and again, recover, and check every
message it acknowledged (issue 13 D1); then damage the tail of a store on purpose and check what recovery
makes of it (the torn-tail trials of D2).

Crash loop. Each round starts a producer process on the same store: SYNC flush, four queues, random bodies of
50-4,000 B, a unique KEYS per message, segments of 128 KiB (so the log rolls every ~60 messages, also while a
kill lands) and small index files (they roll too). A message counts as acknowledged only once put_message
returned PUT_OK *and* the producer wrote key, physical offset, queue, queue offset, store time and the
body's SHA-256 to its acknowledgement log (one write(2) per line, which a SIGKILL cannot tear). The parent
kills it at a random moment, sometimes during its own start-up, runs recovery in another process (killing
that one too in some rounds, then recovering again), and checks, for every message acknowledged in every
round so far:
- through its ConsumeQueue: the entry at its queue offset names its physical offset, and the record there
  decodes (CRC checked) to the acknowledged key and body;
- through the index: a query for its key, over its store time, returns its offset;
- `verify` finds nothing, and the next producer's first message lands at the recovered end of the log.
A message not found either way is *lost*; a record served with other bytes than acknowledged, or a
ConsumeQueue entry leading to a record that is not the queue's, is *corrupt served*. The ASYNC variant runs
the same rounds with ASYNC flush, where losing unflushed messages is allowed (and counted; a SIGKILL leaves
the page cache, so none are expected here) and serving corrupt data still is not.

Torn-tail trials. A store written with `__CRC32#` (so that any damaged byte of a record is found) is copied
and damaged once per trial, at random: the last segment cut (zeros from a random position: the tail never
reached the disk), a bit flipped in the last segment's records, a ConsumeQueue cut from a random entry
pointing into the last segment, or a bit flipped in such an entry. Before recovery, `verify` must name the
damaged file and offset (the record's physical offset, or the entry's queue offset); recovery must cut the log
at the first bad record (and nothing after it may be served, through a ConsumeQueue or a query) or rebuild
the damaged queue; afterwards `verify` must find nothing.

    .venv/bin/python benchmarks/crash_loop.py          # 200 SYNC rounds, 20 ASYNC, 100 trials
    .venv/bin/python benchmarks/crash_loop.py --rounds 15 --async-rounds 3 --trials 12   # the suite's

Exit status 1 when a SYNC-acknowledged message is lost, anything corrupt is served, verify finds anything
after a recovery, a producer appends elsewhere than the recovered end, or a trial fails its checks.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from store import codec  # noqa: E402
from store.commitlog import PutStatus  # noqa: E402
from store.commitlog_scan import ScannedRecord, scan_commitlog  # noqa: E402
from store.config import CQ_STORE_UNIT_SIZE, FlushDiskType, StoreConfig  # noqa: E402
from store.consume_queue_format import iter_entries  # noqa: E402
from store.errors import NotAStore  # noqa: E402
from store.index_file import IndexService  # noqa: E402
from store.inspection.rocketmq.verify import verify_store  # noqa: E402
from store.java_checksums import index_key_hash  # noqa: E402
from store.layout import discover_store  # noqa: E402
from store.message_store import MessageStore  # noqa: E402
from store.recovery import ScanScope, plan_recovery  # noqa: E402
from store.safe_read import PreadFile  # noqa: E402
from store.store_sizes import save_store_sizes, store_config_for  # noqa: E402

TOPIC = "CrashLoop"
QUEUES = 4
BODY_BYTES = (50, 4000)
CONFIG = StoreConfig(
    mapped_file_size_commitlog=128 * 1024,
    consume_queue_entries_per_file=512,
    max_hash_slot_num=512,
    max_index_num=2048,
    flush_interval_commitlog_ms=100,
)
KILL_AFTER_S = (0.15, 0.9)  # from the producer's spawn: some kills land in its start-up (and its recovery)
RECOVERY_KILL_AFTER_S = (0.02, 0.5)
RECOVERY_KILL_SHARE = 1 / 3  # rounds whose first recovery is killed too
TRIAL_MESSAGES = 700  # the torn-tail store: ~11 segments of 128 KiB
TRIAL_KINDS = ("log-cut", "log-flip", "queue-cut", "queue-flip")
LATEST_MS = 2**62


# ==========================================================================================================
# The child processes: a producer that acknowledges, and a recovery
# ==========================================================================================================


def produce_forever(root: Path, flush: FlushDiskType, ack_path: Path, prefix: str, seed: int) -> None:
    """Put messages until killed; each acknowledged one gets a line in `ack_path` before it counts."""
    config = dataclasses.replace(store_config_for(root), flush_disk_type=flush)
    store = MessageStore(root, config).start()
    rng = random.Random(seed)
    ack = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for number in range(10**9):
        body = rng.randbytes(rng.randint(*BODY_BYTES))
        key = f"{prefix}-{number}"
        queue_id = number % QUEUES
        result = store.put_message(
            codec.Message(TOPIC, body=body, queue_id=queue_id, properties={codec.PROPERTY_KEYS: key})
        )
        if result.status is PutStatus.PUT_OK:
            line = (
                f"{key} {result.physical_offset} {queue_id} {result.queue_offset} "
                f"{result.store_timestamp_ms} {hashlib.sha256(body).hexdigest()}\n"
            )
            os.write(ack, line.encode())


def recover_and_report(root: Path) -> None:
    """What `mqinspect store recover` does, in a light process: open (recover), shut down, print the end and
    which decisions `store recover --dry-run`, asked just before, made otherwise."""
    config = store_config_for(root)
    try:
        dry_run = plan_recovery(discover_store(root), config, scope=ScanScope.DISPATCHED_TAIL).decisions()
    except NotAStore:  # killed before it made its first file: the dry run says so, recovery creates the store
        dry_run = None
    store = MessageStore(root, config).start()
    plan = store.recovery
    store.shutdown()
    decided = plan.decisions().items()
    differing = [] if dry_run is None else sorted(name for name, value in decided if dry_run[name] != value)
    print(
        json.dumps(
            {"process_offset": plan.process_offset, "scans": plan.scans, "dry_run_differs": differing}
        ),
        flush=True,
    )


# ==========================================================================================================
# The crash loop
# ==========================================================================================================


@dataclass(frozen=True)
class Ack:
    key: str
    physical_offset: int
    queue_id: int
    queue_offset: int
    store_timestamp_ms: int
    body_sha256: str

    @property
    def placed(self) -> tuple[int, int]:
        return self.queue_id, self.queue_offset


@dataclass
class LoopReport:
    """Counts of distinct messages (a message lost in several rounds counts once)."""

    flush: str
    rounds: int = 0
    acknowledged: int = 0
    lost: int = 0  # acknowledged messages missing through the ConsumeQueue, the index, or both
    lost_through_queue: int = 0
    lost_through_index: int = 0
    corrupt_served: int = 0  # messages or entries that served other bytes than acknowledged
    verify_failures: int = 0
    misplaced_appends: int = 0  # a producer whose first message did not land at the recovered end
    recoveries_killed: int = 0
    rescans: int = 0  # recoveries that read the log twice (a lost queue tail before the scan start)
    dry_run_mismatches: int = 0  # recoveries whose dry run (read just before) decided anything otherwise
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def failed(self, losses_allowed: bool) -> bool:
        lost = 0 if losses_allowed else self.lost
        return bool(
            lost
            or self.corrupt_served
            or self.verify_failures
            or self.misplaced_appends
            or self.dry_run_mismatches
        )


@dataclass
class _Damage:
    """What the checks found, by message or entry, across rounds."""

    lost_through_queue: set[str] = field(default_factory=set)
    lost_through_index: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)

    def count_into(self, report: LoopReport) -> None:
        report.lost = len(self.lost_through_queue | self.lost_through_index)
        report.lost_through_queue = len(self.lost_through_queue)
        report.lost_through_index = len(self.lost_through_index)
        report.corrupt_served = len(self.corrupt)


def run_crash_loop(root: Path, rounds: int, flush: FlushDiskType, rng: random.Random) -> LoopReport:
    report = LoopReport(flush=flush.value)
    save_store_sizes(root, CONFIG)
    acked: dict[str, Ack] = {}
    damage = _Damage()
    recovered_end = 0
    began = time.monotonic()
    for number in range(rounds):
        ack_path = root.parent / f"{root.name}-acks-{number}.log"
        new = _produce_until_killed(root, flush, ack_path, f"r{number}", rng)
        _check_first_append(new, recovered_end, report, number)
        acked.update((ack.key, ack) for ack in new)
        recovered_end = _recover(root, rng, report)
        _check_round(root, acked, damage, report, number)
        damage.count_into(report)
        report.rounds += 1
        report.acknowledged = len(acked)
    report.seconds = time.monotonic() - began
    return report


def _produce_until_killed(
    root: Path, flush: FlushDiskType, ack_path: Path, prefix: str, rng: random.Random
) -> list[Ack]:
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "produce",
            str(root),
            flush.value,
            str(ack_path),
            prefix,
            str(rng.getrandbits(32)),
        ]
    )
    time.sleep(rng.uniform(*KILL_AFTER_S))
    child.send_signal(signal.SIGKILL)
    child.wait()
    if child.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the producer ended by itself ({child.returncode}) before it was killed")
    if not ack_path.exists():
        return []
    return [_parse_ack(line) for line in ack_path.read_text().splitlines()]


def _parse_ack(line: str) -> Ack:
    key, offset, queue_id, queue_offset, stored, digest = line.split()
    return Ack(key, int(offset), int(queue_id), int(queue_offset), int(stored), digest)


def _recover(root: Path, rng: random.Random, report: LoopReport) -> int:
    command = [sys.executable, __file__, "recover", str(root)]
    if rng.random() < RECOVERY_KILL_SHARE:
        victim = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(*RECOVERY_KILL_AFTER_S))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        report.recoveries_killed += victim.returncode == -signal.SIGKILL
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    report.rescans += result["scans"] > 1
    if result["dry_run_differs"]:
        report.dry_run_mismatches += 1
        report.problems.append(
            f"recover --dry-run decided {result['dry_run_differs']} otherwise than recovery"
        )
    return result["process_offset"]


def _check_first_append(new: list[Ack], recovered_end: int, report: LoopReport, number: int) -> None:
    """The next producer appends at the recovered end (or at the next segment, when the end's segment has no
    room left for its first message)."""
    if not new:
        return
    first = new[0].physical_offset
    rolled = first % CONFIG.mapped_file_size_commitlog == 0 and first > recovered_end
    if first != recovered_end and not rolled:
        report.misplaced_appends += 1
        report.problems.append(
            f"round {number}: first append at {first}, the recovered end was {recovered_end}"
        )


def _check_round(root: Path, acked: dict[str, Ack], damage: _Damage, report: LoopReport, number: int) -> None:
    """Every acknowledged message, through its ConsumeQueue entry and through the index's hash chains (what a
    query walks); the messages of this round through a query as `store query --key` runs it; every entry a
    consumer could be served; then verify."""
    layout = discover_store(root)
    stored = _records_in_log(layout)
    entries = {
        queue_id: {entry.queue_offset: entry for entry in iter_entries(cq.queue)}
        for queue_id in range(QUEUES)
        if (cq := layout.consume_queue(TOPIC, queue_id)) is not None
    }
    with _IndexChains(root) as index:
        for ack in acked.values():
            entry = entries.get(ack.queue_id, {}).get(ack.queue_offset)
            if entry is None or entry.physical_offset != ack.physical_offset:
                _note(damage.lost_through_queue, ack.key, report, f"{ack.key} not in queue {ack.queue_id}")
            elif stored.get(ack.physical_offset) != (entry.size_bytes, ack.key, ack.body_sha256, *ack.placed):
                _note(damage.corrupt, ack.key, report, f"{ack.key}: other bytes at {ack.physical_offset}")
            found = index.reaches(ack) if not ack.key.startswith(f"r{number}-") else index.query_finds(ack)
            if not found:
                _note(damage.lost_through_index, ack.key, report, f"the index does not lead to {ack.key}")
    for queue_id, queue in entries.items():
        for queue_offset, entry in queue.items():
            record = stored.get(entry.physical_offset)
            if record is None or (record[0], *record[3:]) != (entry.size_bytes, queue_id, queue_offset):
                _note(
                    damage.corrupt, f"{queue_id}/{queue_offset}", report, "an entry leads to a wrong record"
                )
    verified = verify_store(root)
    if not verified.ok:
        report.verify_failures += 1
        report.problems += [f"round {number}: verify: {f.check}: {f.message}" for f in verified.findings]


def _records_in_log(layout) -> dict[int, tuple[int, str | None, str, int, int]]:
    """physical offset -> (size, KEYS, body SHA-256, queue id, queue offset) of every record in the log, read
    once, CRC checked: what any consumer or query can be served."""
    stored = {}
    for event in scan_commitlog(layout.commitlog, check_crc=True):
        if isinstance(event, ScannedRecord):
            record = event.record
            digest = hashlib.sha256(record.body).hexdigest()
            stored[event.physical_offset] = (
                record.total_size,
                record.keys,
                digest,
                record.queue_id,
                record.queue_offset,
            )
    return stored


class _IndexChains:
    """The index read-only: a key found by walking its hash chain in the file covering its record (as a query
    does), or by a query itself."""

    def __init__(self, root: Path):
        self._service = IndexService(root / "index", store_config_for(root))
        self._service.load(read_only=True)
        self._files = self._service.files

    def reaches(self, ack: Ack) -> bool:
        key_hash = index_key_hash(IndexService.build_key(TOPIC, ack.key))
        return any(
            index_file.holds_key(key_hash, ack.physical_offset)
            for index_file in self._files
            if index_file.begin_phy_offset <= ack.physical_offset <= index_file.end_phy_offset
        )

    def query_finds(self, ack: Ack) -> bool:
        # The index keeps store times in whole seconds after its file's first entry (and a file's first entry,
        # measured from the previous file's end, may read later than it was stored): from 1 s before on.
        offsets = self._service.query(TOPIC, ack.key, 64, ack.store_timestamp_ms - 1000, LATEST_MS)
        return ack.physical_offset in offsets

    def __enter__(self) -> _IndexChains:
        return self

    def __exit__(self, *exc_info) -> None:
        self._service.close()


def _note(found: set[str], what: str, report: LoopReport, problem: str) -> None:
    if what not in found:
        found.add(what)
        report.problems.append(problem)


# ==========================================================================================================
# Torn-tail trials
# ==========================================================================================================


@dataclass
class TrialReport:
    trials: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    named_by_verify: int = 0  # verify, before recovery, named the damaged file and offset
    cut_at_first_bad_record: int = 0  # of the log damages
    served_after_cut: int = 0  # entries or query hits reaching records at or past the cut: must stay 0
    queues_rebuilt: int = 0  # of the ConsumeQueue damages: every entry equals the log's again
    verify_clean_after: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def failed(self) -> bool:
        log_damages = self.kinds.get("log-cut", 0) + self.kinds.get("log-flip", 0)
        return (
            self.named_by_verify != self.trials
            or self.cut_at_first_bad_record != log_damages
            or self.served_after_cut
            or self.queues_rebuilt != self.trials - log_damages
            or self.verify_clean_after != self.trials
        )


def run_trials(work: Path, trials: int, rng: random.Random) -> TrialReport:
    report = TrialReport()
    base = work / "trial-base"
    config = dataclasses.replace(CONFIG, enabled_append_prop_crc=True)
    with MessageStore(base, config) as store:
        for number in range(TRIAL_MESSAGES):
            body = rng.randbytes(rng.randint(*BODY_BYTES))
            properties = {codec.PROPERTY_KEYS: f"t-{number}", codec.PROPERTY_TAGS: f"Tag{number % 3}"}
            store.put_message(
                codec.Message(TOPIC, body=body, queue_id=number % QUEUES, properties=properties)
            )
    save_store_sizes(base, config)
    began = time.monotonic()
    for number in range(trials):
        kind = TRIAL_KINDS[number % len(TRIAL_KINDS)]
        root = work / f"trial-{number}"
        shutil.copytree(base, root)
        try:
            _one_trial(root, kind, config, rng, report, number)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        report.trials += 1
        report.kinds[kind] = report.kinds.get(kind, 0) + 1
    report.seconds = time.monotonic() - began
    return report


def _one_trial(
    root: Path, kind: str, config: StoreConfig, rng: random.Random, report: TrialReport, number: int
) -> None:
    commitlog = discover_store(root).commitlog
    records = [event for event in scan_commitlog(commitlog) if isinstance(event, ScannedRecord)]
    last_segment = commitlog.segment_for(records[-1].physical_offset)  # not the empty one made ahead
    tail = [event for event in records if event.physical_offset >= last_segment.file_from_offset]
    if kind.startswith("log"):
        named, first_bad = _damage_log(root, kind, last_segment, tail, rng)
    else:
        named, first_bad = _damage_queue(root, kind, last_segment, rng), None
    found = verify_store(root)
    if any((str(finding.file), finding.offset) == named for finding in found.findings):
        report.named_by_verify += 1
    else:
        report.problems.append(
            f"trial {number} ({kind}): verify did not name {named}: {[f.message for f in found.findings]}"
        )
    with MessageStore(root, config) as store:
        plan = store.recovery
    if first_bad is not None:
        if plan.process_offset == first_bad:
            report.cut_at_first_bad_record += 1
        else:
            report.problems.append(
                f"trial {number} ({kind}): log cut at {plan.process_offset}, the first bad record is at "
                f"{first_bad}"
            )
        report.served_after_cut += _served_at_or_after(root, first_bad, records)
    elif _queues_match_log(root):
        report.queues_rebuilt += 1
    else:
        report.problems.append(f"trial {number} ({kind}): a ConsumeQueue still differs from the log")
    after = verify_store(root)
    if after.ok:
        report.verify_clean_after += 1
    else:
        report.problems.append(
            f"trial {number} ({kind}): verify after recovery: {[f.message for f in after.findings]}"
        )


def _damage_log(root, kind, segment, tail, rng) -> tuple[tuple[str, int], int]:
    """Cut or flip the last segment; return what verify must name and the offset of the first bad record,
    where recovery must cut the log.

    Verify names the record's segment and offset; unless the damage left zeros where the record starts (a cut
    in its first bytes, whose TOTALSIZE begins with zero bytes): that reads as the end of the written data, a
    shorter log, and verify names the ConsumeQueue entry that points past it (file and queue offset)."""
    start = segment.file_from_offset
    written = tail[-1].physical_offset + tail[-1].record.total_size - start
    position = rng.randrange(written)
    starts = {event.physical_offset - start for event in tail}
    if kind == "log-cut" and position in starts:
        position += 1  # inside a record: a cut exactly between two is a clean, shorter log
    if kind == "log-cut":
        with open(segment.path, "r+b") as handle:
            handle.seek(position)
            handle.write(bytes(written - position))
    else:
        _flip_bit(segment.path, position, rng.randrange(8))
    victim = next(event for event in reversed(tail) if event.physical_offset - start <= position)
    with PreadFile(segment.path) as file:
        reads_as_unwritten = not any(
            file.read(victim.physical_offset - start, codec.END_FILE_MIN_BLANK_LENGTH)
        )
    if reads_as_unwritten:
        cq = discover_store(root).consume_queue(TOPIC, victim.record.queue_id)
        entry_file = cq.queue.segment_for(victim.record.queue_offset * CQ_STORE_UNIT_SIZE).path
        return (str(entry_file), victim.record.queue_offset), victim.physical_offset
    return (str(segment.path), victim.physical_offset), victim.physical_offset


def _damage_queue(root, kind, segment, rng) -> tuple[str, int]:
    """Cut or flip one queue's entries that point into the last segment; return (file, queue offset)."""
    cq = discover_store(root).consume_queue(TOPIC, rng.randrange(QUEUES))
    entries = [entry for entry in iter_entries(cq.queue) if entry.physical_offset >= segment.file_from_offset]
    entry = rng.choice(entries)
    cq_segment = cq.queue.segment_for(entry.queue_offset * CQ_STORE_UNIT_SIZE)
    position = entry.queue_offset * CQ_STORE_UNIT_SIZE - cq_segment.file_from_offset
    if kind == "queue-cut":
        with open(cq_segment.path, "r+b") as handle:
            handle.seek(position)
            handle.write(bytes(cq_segment.size_bytes - position))
        for later in cq.queue.segments:
            if later.file_from_offset > cq_segment.file_from_offset:
                later.path.unlink()
    else:
        _flip_bit(cq_segment.path, position + rng.randrange(CQ_STORE_UNIT_SIZE), rng.randrange(8))
    return str(cq_segment.path), entry.queue_offset


def _flip_bit(path: Path, position: int, bit: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(position)
        value = handle.read(1)[0]
        handle.seek(position)
        handle.write(bytes([value ^ (1 << bit)]))


def _served_at_or_after(root: Path, cut: int, records: list[ScannedRecord]) -> int:
    """Entries and query hits that still reach a record at or past the cut."""
    layout = discover_store(root)
    served = sum(
        entry.physical_offset >= cut for cq in layout.consume_queues for entry in iter_entries(cq.queue)
    )
    with IndexService(root / "index", store_config_for(root)) as index:
        index.load(read_only=True)
        for event in records:
            if event.physical_offset >= cut:
                served += event.physical_offset in index.query(TOPIC, event.record.keys, 64, 0, LATEST_MS)
    return served


def _queues_match_log(root: Path) -> bool:
    """Every queue holds exactly one entry per record of its queue, in log order (the log is the truth)."""
    expected: dict[int, list[tuple[int, int, int]]] = {queue_id: [] for queue_id in range(QUEUES)}
    for event in scan_commitlog(discover_store(root).commitlog):
        if isinstance(event, ScannedRecord):
            expected[event.record.queue_id].append(
                (event.physical_offset, event.record.total_size, event.record.tags_code)
            )
    layout = discover_store(root)
    for queue_id, wanted in expected.items():
        cq = layout.consume_queue(TOPIC, queue_id)
        got = [(e.physical_offset, e.size_bytes, e.tags_code) for e in iter_entries(cq.queue)] if cq else []
        if got != wanted:
            return False
    return True


# ==========================================================================================================
# Main
# ==========================================================================================================


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("produce", help="(internal) the producer child")
    child.add_argument("root", type=Path)
    child.add_argument("flush", type=FlushDiskType)
    child.add_argument("ack", type=Path)
    child.add_argument("prefix")
    child.add_argument("seed", type=int)
    recovery = sub.add_parser("recover", help="(internal) the recovery child")
    recovery.add_argument("root", type=Path)
    parser.add_argument("--rounds", type=int, default=200, help="SYNC rounds (default 200)")
    parser.add_argument("--async-rounds", type=int, default=20, help="ASYNC rounds (default 20)")
    parser.add_argument("--trials", type=int, default=100, help="torn-tail trials (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: new each run, printed)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="work directory (default: a new temporary one)"
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    args = parser.parse_args()
    if args.command == "produce":
        produce_forever(args.root, args.flush, args.ack, args.prefix, args.seed)
        return 0
    if args.command == "recover":
        recover_and_report(args.root)
        return 0
    return run_all(args)


def run_all(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    rng = random.Random(seed)
    with _work_directory(args.dir) as work:
        sync = run_crash_loop(work / "sync-store", args.rounds, FlushDiskType.SYNC, rng)
        asynchronous = run_crash_loop(work / "async-store", args.async_rounds, FlushDiskType.ASYNC, rng)
        trials = run_trials(work, args.trials, rng)
    failed = sync.failed(losses_allowed=False) or asynchronous.failed(losses_allowed=True) or trials.failed()
    if args.format == "json":
        print(
            json.dumps(
                {
                    "seed": seed,
                    "sync": dataclasses.asdict(sync),
                    "async": dataclasses.asdict(asynchronous),
                    "trials": dataclasses.asdict(trials),
                    "failed": failed,
                },
                indent=2,
            )
        )
    else:
        _print_table(seed, sync, asynchronous, trials)
    return 1 if failed else 0


@contextlib.contextmanager
def _work_directory(given: Path | None) -> Iterator[Path]:
    """`given` (kept afterwards, to look into), or a temporary directory removed at the end."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="crash-loop-") as path:
        yield Path(path)


def _print_table(seed: int, sync: LoopReport, asynchronous: LoopReport, trials: TrialReport) -> None:
    print(f"seed {seed}")
    for loop, note in ((sync, "none allowed"), (asynchronous, "allowed: unflushed")):
        print(
            f"crash loop ({loop.flush}): rounds {loop.rounds}, acknowledged {loop.acknowledged:,}, "
            f"lost {loop.lost} ({note}; {loop.lost_through_queue} through the ConsumeQueue, "
            f"{loop.lost_through_index} through the index), corrupt served {loop.corrupt_served}, "
            f"verify failures {loop.verify_failures}, appends elsewhere than the recovered end "
            f"{loop.misplaced_appends}, recoveries killed {loop.recoveries_killed}, recoveries that read the "
            f"log twice {loop.rescans}, dry runs that decided otherwise {loop.dry_run_mismatches}, "
            f"{loop.seconds:.0f} s"
        )
    kinds = ", ".join(f"{count} {kind}" for kind, count in trials.kinds.items())
    print(
        f"torn-tail trials: {trials.trials} ({kinds}): damaged file and offset named by verify "
        f"{trials.named_by_verify}, log cut at the first bad record {trials.cut_at_first_bad_record}, "
        f"served after the cut {trials.served_after_cut}, ConsumeQueues rebuilt {trials.queues_rebuilt}, "
        f"verify clean after recovery {trials.verify_clean_after}, {trials.seconds:.0f} s"
    )
    for problem in (sync.problems + asynchronous.problems + trials.problems)[:20]:
        print(f"  problem: {problem}")


if __name__ == "__main__":
    sys.exit(main())
