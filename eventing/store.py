"""The embedded default backend of Brokers: each Broker's events in an append-only log of segment files on
local disk, written and fsynced in group commits, and each Trigger's position in a file of its own, so that a
restart (even `kill -9`) loses nothing whose `publish` returned.

Layout of `<root>/<namespace>/<broker>/`:
- `<base>.log`: a segment, named by the position of its first byte (20 digits); positions are byte offsets
  in the Broker's log, so a record's position names its segment and its offset in it. Only the last segment
  is written to. A record is framed as `length (u32 LE) | CRC-32 of the payload (u32 LE) | payload`, the
  payload as `encode` makes it.
- `triggers/<namespace>/<trigger>.pos`: the position (decimal, newline) where the Trigger resumes, replaced
  atomically (temp file, fsync, rename).

`held` lists the Brokers and Triggers these folders hold, so that what was deleted while the store was not
running can be forgotten.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import itertools
import logging
import os
import shutil
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from eventing.backend import BackendError, BrokerKey, Record, TriggerKey
from eventing.event import Event

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

MIB: Final = 1 << 20
SEGMENT_BYTES: Final = 64 * MIB
"""A segment is sealed once it holds this much: small enough that retention frees disk soon after every
Trigger passed it, large enough that rollovers (a file creation and a directory fsync) stay rare."""
CACHE_BYTES: Final = 4 * MIB
"""Encoded bytes of each Broker's newest records also kept in memory as decoded events, so that Triggers that
keep up are served without reading or decoding; a Trigger further behind reads the files."""
PERSIST_INTERVAL: Final = 0.1
"""Seconds between writes of a Trigger's position while it acks: acks stay cheap, and a crash re-delivers
about this much of a Trigger's traffic."""
READ_BYTES: Final = 256 * 1024
"""Bytes read from a segment per `fetch` that misses the memory cache (more if one record is larger)."""
THREADS: Final = 4
"""Threads for blocking file work: a Broker's batch write never waits behind another Broker's fsync or a
Trigger's position write (there is at most one write in flight per Broker)."""

SEGMENT_SUFFIX: Final = ".log"
POSITION_SUFFIX: Final = ".pos"
TEMP_SUFFIX: Final = ".tmp"
TRIGGERS: Final = "triggers"

_FRAME: Final = struct.Struct("<II")
"""A record's header: payload length, CRC-32 of the payload."""
_META: Final = struct.Struct("<BHHI")
"""A payload's head: format, number of attributes, number of headers, length of the data."""
_FORMAT: Final = 2
"""Format 1 (the bits above bit 0 of the format byte); bit 0 set says the lengths are u32, not u16."""
_WIDE: Final = 1
_U16_MAX: Final = 0xFFFF


@functools.lru_cache(maxsize=512)
def _lengths(count: int, wide: int) -> struct.Struct:
    return struct.Struct(f"<{count}{'I' if wide else 'H'}")


def encode(event: Event) -> bytes:
    """`event` as bytes that `decode` turns back into an equal event (any strings, any data bytes).

    `format | attribute count (u16) | header count (u16) | data length (u32) | string lengths | text | data`:
    the keys of the attributes, their values, then the same for the headers, as lengths in characters (u16,
    or u32 when one is longer) and one UTF-8 text (surrogates passed through, so any `str` survives). One
    encode and one decode of the joined text cost less than one per string.
    """
    attributes = event.attributes
    headers = event.headers
    strings = [*attributes, *attributes.values(), *headers, *headers.values()]
    lengths = [len(s) for s in strings]
    wide = int(max(lengths, default=0) > _U16_MAX)
    data = event.data
    try:
        meta = _META.pack(_FORMAT | wide, len(attributes), len(headers), len(data))
    except struct.error:
        raise ValueError(f"event has more than {_U16_MAX} attributes or headers") from None
    text = "".join(strings).encode("utf-8", "surrogatepass")
    return b"".join((meta, _lengths(len(lengths), wide).pack(*lengths), text, data))


def decode(payload: bytes) -> Event:
    """The event `encode` made `payload` from; `ValueError` if `payload` is not such bytes."""
    return _decode(payload, 0, len(payload))


def _decode(buf: bytes, start: int, end: int) -> Event:
    try:
        kind, n_attributes, n_headers, data_length = _META.unpack_from(buf, start)
        count = 2 * (n_attributes + n_headers)
        lengths_struct = _lengths(count, kind & _WIDE)
        text_start = start + _META.size + lengths_struct.size
        data_start = end - data_length
        if kind & ~_WIDE != _FORMAT or data_start < text_start:
            raise ValueError("not an encoded event")
        lengths = lengths_struct.unpack_from(buf, start + _META.size)
        text = str(buf[text_start:data_start], "utf-8", "surrogatepass")
    except (struct.error, UnicodeDecodeError) as error:
        raise ValueError(f"not an encoded event: {error}") from None
    cuts = [0, *itertools.accumulate(lengths)]
    if cuts[-1] != len(text):
        raise ValueError("not an encoded event: its string lengths do not add up")
    strings = [text[a:b] for a, b in itertools.pairwise(cuts)]
    keys = n_attributes + n_attributes
    attributes = dict(zip(strings[:n_attributes], strings[n_attributes:keys], strict=True))
    headers = dict(zip(strings[keys : keys + n_headers], strings[keys + n_headers :], strict=True))
    return Event(attributes, buf[data_start:end], headers)


def _split(buf: bytes, limit: int) -> tuple[list[int], bool]:
    """The bounds of the first whole, intact records of `buf` (at most `limit`): where the first starts (0),
    then where each ends; and whether a corrupt record (an impossible length, a CRC mismatch) stopped the
    scan rather than the end of `buf` or `limit`."""
    bounds = [0]
    at = 0
    size = len(buf)
    view = memoryview(buf)
    while len(bounds) <= limit and size - at >= _FRAME.size:
        length, crc = _FRAME.unpack_from(buf, at)
        end = at + _FRAME.size + length
        if length < _META.size:  # also a zero-filled tail, whose CRC (of nothing) would match
            return bounds, True
        if end > size:
            break
        if zlib.crc32(view[at + _FRAME.size : end]) != crc:
            return bounds, True
        bounds.append(end)
        at = end
    return bounds, False


def _read_frames(fd: int, offset: int, available: int, limit: int) -> tuple[bytes, list[int], bool]:
    """Blocking: the records (at most `limit`) among the `available` bytes of segment `fd` from `offset`: the
    bytes read, and `_split`'s bounds and verdict on them. Reads `READ_BYTES`, or one whole larger record."""
    buf = os.pread(fd, min(available, READ_BYTES), offset)
    bounds, corrupt = _split(buf, limit)
    if len(bounds) == 1 and not corrupt and _FRAME.size <= len(buf) < available:
        whole = _FRAME.size + _FRAME.unpack_from(buf)[0]
        if whole <= available:
            buf = os.pread(fd, whole, offset)
            bounds, corrupt = _split(buf, limit)
    return buf, bounds, corrupt


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(folder: Path) -> None:
    """Blocking: create `folder` and its missing parents, each made durable in its parent, so that a crash
    cannot lose a folder that holds durable files."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
        _fsync_dir(made.parent)


def _write_at(fd: int, blob: bytes, offset: int) -> None:
    """Blocking: `blob` written at `offset` and on disk. On failure the file is cut back to `offset` (if it
    can be), so that a failed batch leaves nothing for a reader or a restart to find."""
    try:
        view = memoryview(blob)
        done = 0
        while done < len(blob):
            done += os.pwrite(fd, view[done:], offset + done)
        os.fdatasync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, offset)
        raise


def _usable(part: str) -> bool:
    """Whether `part` can be a namespace or a name: one path part of its own."""
    return bool(part) and part not in (".", "..") and "/" not in part and "\0" not in part


def _check_key(key: tuple[str, str]) -> None:
    if not all(_usable(part) for part in key):
        raise ValueError(f"{key[0]}/{key[1]}: not a usable namespace and name")


def _is_segment(name: str) -> bool:
    return name.endswith(SEGMENT_SUFFIX) and name.removesuffix(SEGMENT_SUFFIX).isdigit()


def _entries(folder: Path) -> list[Path]:
    """Blocking: what `folder` holds; nothing if it is gone or not a folder."""
    try:
        return list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _subfolders(folder: Path) -> list[Path]:
    """Blocking: the folders in `folder` whose names can be a namespace or a name."""
    return [path for path in _entries(folder) if _usable(path.name) and path.is_dir()]


def _scan(root: Path) -> dict[BrokerKey, set[TriggerKey]]:
    """Blocking: the Brokers that have a log under `root` (a folder holding a `triggers` folder or a segment:
    anything else is not the store's, and stays), each with the Triggers that have a position file in it.
    Reads names only, never a file, so that it costs little and opens nothing."""
    held: dict[BrokerKey, set[TriggerKey]] = {}
    for namespace in _subfolders(root):
        for folder in _subfolders(namespace):
            triggers = folder / TRIGGERS
            if not triggers.is_dir() and not any(_is_segment(path.name) for path in _entries(folder)):
                continue
            held[(namespace.name, folder.name)] = {
                (trigger_namespace.name, path.name.removesuffix(POSITION_SUFFIX))
                for trigger_namespace in _subfolders(triggers)
                for path in _entries(trigger_namespace)
                if path.name.endswith(POSITION_SUFFIX) and _usable(path.name.removesuffix(POSITION_SUFFIX))
            }
    return held


@dataclass(slots=True)
class _Segment:
    base: int
    fd: int
    size: int
    """Bytes of whole, durable records: readers never look past it (a batch being written lies beyond)."""
    readers: int = 0
    """Reads in flight: retention leaves the segment (and those after it) to a later pass meanwhile."""


@dataclass(slots=True)
class _Batch:
    """One `publish` call waiting for the group commit that makes it durable."""

    pieces: list[bytes]
    sizes: list[int]
    events: list[Event]
    done: asyncio.Future[None]


class _PositionFile:
    """A Trigger's persisted position. Its writes and its removal run in executor threads; a thread lock runs
    them one at a time, and a write never moves the file backwards, whatever happened to the coroutines that
    asked (cancelling one does not stop its thread)."""

    def __init__(self, path: Path, position: int | None) -> None:
        self.path = path
        self.position = position
        """What the file holds (None: no file yet); set by the writing thread once the rename is done."""
        self.removed = False
        self._lock = threading.Lock()

    def write(self, position: int) -> None:
        with self._lock:
            if self.removed or (self.position is not None and position <= self.position):
                return
            created = self.position is None
            if created:
                _make_dirs(self.path.parent)
            temp = self.path.with_name(self.path.name + TEMP_SUFFIX)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, b"%d\n" % position)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.path)
            if created:  # lost, it would make the Trigger new again: started at the end, events skipped
                _fsync_dir(self.path.parent)
            self.position = position

    def remove(self) -> None:
        with self._lock:
            self.removed = True
            self.path.unlink(missing_ok=True)


def _recover(folder: Path) -> tuple[list[_Segment], dict[TriggerKey, int | None]]:
    """Blocking: open a Broker's segments, cutting a torn or corrupt tail off the last one (a crash
    mid-write: everything before it stays), and read its Triggers' positions (None: unreadable)."""
    _make_dirs(folder / TRIGGERS)
    bases = sorted(
        int(path.name.removesuffix(SEGMENT_SUFFIX)) for path in folder.iterdir() if _is_segment(path.name)
    )
    segments: list[_Segment] = []
    try:
        for base in bases:
            fd = os.open(folder / f"{base:020d}{SEGMENT_SUFFIX}", os.O_RDWR | os.O_CLOEXEC)
            segments.append(_Segment(base, fd, os.fstat(fd).st_size))
        for segment, following in itertools.pairwise(segments):
            if segment.size < following.base - segment.base:
                logger.error("segment %d of %s is short: events in it are lost", segment.base, folder)
            segment.size = following.base - segment.base
        if segments:
            last = segments[-1]
            good = 0
            while good < last.size:
                _, bounds, corrupt = _read_frames(last.fd, good, last.size - good, 1 << 62)
                good += bounds[-1]
                if corrupt or len(bounds) == 1:
                    break
            if good < last.size:
                logger.warning(
                    "%s: cut a torn or corrupt tail of %d bytes at position %d",
                    folder,
                    last.size - good,
                    last.base + good,
                )
                os.ftruncate(last.fd, good)
                os.fsync(last.fd)
                last.size = good
    except BaseException:
        for segment in segments:
            os.close(segment.fd)
        raise
    positions: dict[TriggerKey, int | None] = {}
    for namespace in (folder / TRIGGERS).iterdir():
        for path in namespace.iterdir():
            if path.name.endswith(TEMP_SUFFIX):
                path.unlink()
            elif path.name.endswith(POSITION_SUFFIX):
                key = (namespace.name, path.name.removesuffix(POSITION_SUFFIX))
                text = path.read_text().strip()
                positions[key] = int(text) if text.isdigit() else None
    return segments, positions


class _Log:
    """One Broker's log while it is open. Owned by the event loop: only the loop changes its segments, cache
    and subscriptions; threads get a segment's descriptor and the sizes to use, and report back."""

    def __init__(
        self,
        store: EventStore,
        broker: BrokerKey,
        folder: Path,
        segments: list[_Segment],
        triggers: dict[TriggerKey, _PositionFile],
    ) -> None:
        self.store = store
        self.broker = broker
        self.folder = folder
        self.segments = segments
        self.bases = [segment.base for segment in segments]
        self.end = segments[-1].base + segments[-1].size if segments else 0
        """Where the next record goes; everything before it is durable."""
        self.triggers = triggers
        """Every Trigger with a position, subscribed or not: retention keeps what the slowest needs."""
        self.subscriptions: dict[TriggerKey, StoreSubscription] = {}
        self.removals: dict[TriggerKey, asyncio.Future[None]] = {}
        self.pending: list[_Batch] = []
        self.idle = asyncio.Event()
        """Set while no batch is being written."""
        self.idle.set()
        self.busy: set[asyncio.Future[Any]] = set()
        """Work on this log's files in flight (reads, deletions, retention after a rollover): `shut` waits
        for it before closing the files."""
        self.cache_positions: list[int] = []
        self.cache_records: list[Record] = []
        """Contiguous newest records, up to `end`."""
        self.closed: str | None = None
        self._appended = asyncio.Event()

    def __str__(self) -> str:
        return f"broker {self.broker[0]}/{self.broker[1]}"

    @property
    def first(self) -> int:
        return self.segments[0].base if self.segments else self.end

    def position_path(self, trigger: TriggerKey) -> Path:
        return self.folder / TRIGGERS / trigger[0] / f"{trigger[1]}{POSITION_SUFFIX}"

    async def wait(self) -> None:
        """Until the next batch is durable, or the log or a subscription closes."""
        await self._appended.wait()

    def wake(self) -> None:
        self._appended.set()
        self._appended = asyncio.Event()

    def append(self, batch: _Batch) -> None:
        if self.closed is not None:
            raise BackendError(f"{self}: {self.closed}")
        self.pending.append(batch)
        if self.idle.is_set():  # after the loop's ready callbacks: publishers woken together share a batch
            self.idle.clear()
            asyncio.get_running_loop().call_soon(self._write_pending)

    def _write_pending(self) -> None:
        """The group commit: whatever was published while the previous batch was being written goes in the
        next one, one write and one fdatasync for all of it. Callbacks rather than a task, so that a batch
        costs one thread hop and one wake-up of the loop."""
        batch, self.pending = self.pending, []
        blob = b"".join(itertools.chain.from_iterable(item.pieces for item in batch))
        active = self.segments[-1] if self.segments else None
        roll = self.end if active is None or active.size >= self.store.segment_bytes else None
        loop = asyncio.get_running_loop()
        written = self.store.executor.submit(self._append, active, roll, blob)
        written.add_done_callback(
            lambda _: loop.call_soon_threadsafe(self._written, batch, active, len(blob), written)
        )

    def _written(
        self, batch: list[_Batch], active: _Segment | None, size: int, written: Future[_Segment | None]
    ) -> None:
        error = written.exception()
        if error is not None:
            if not isinstance(error, OSError):
                logger.error("%s: a batch failed", self, exc_info=error)
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(BackendError(f"{self}: cannot store events: {error}"))
        else:
            self._commit(batch, active, size, written.result())
        if self.pending:
            self._write_pending()
        else:
            self.idle.set()

    def _commit(self, batch: list[_Batch], active: _Segment | None, size: int, made: _Segment | None) -> None:
        """The batch is durable: it becomes readable, and each `publish` in it returns."""
        if made is not None:
            self.segments.append(made)
            self.bases.append(made.base)
        elif active is not None:
            active.size += size
        position = self.end
        cache = self.store.cache_bytes > 0
        for item in batch:
            for event, event_size in zip(item.events, item.sizes, strict=True):
                if cache:
                    self.cache_positions.append(position)
                    self.cache_records.append(Record(position, event))
                position += event_size
            if not item.done.done():
                item.done.set_result(None)
        self.end = position
        self.store.published += sum(len(item.events) for item in batch)
        self.store.published_bytes += size
        self.store.batches += 1
        self._trim_cache()
        self.wake()
        if made is not None:
            self._track(asyncio.get_running_loop().create_task(self.retain()))

    def _track(self, work: asyncio.Future[_T]) -> asyncio.Future[_T]:
        self.busy.add(work)
        work.add_done_callback(self.busy.discard)
        return work

    def _append(self, active: _Segment | None, roll: int | None, blob: bytes) -> _Segment | None:
        """Blocking: `blob` appended to the active segment, or (with `roll`) to a new one that starts there.
        A new segment is kept only if its first batch is durable, so a failed rollover is simply retried."""
        if roll is None:
            assert active is not None
            _write_at(active.fd, blob, active.size)
            return None
        path = self.folder / f"{roll:020d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            _write_at(fd, blob, 0)
            _fsync_dir(self.folder)
        except BaseException:
            os.close(fd)
            raise
        return _Segment(roll, fd, len(blob))

    def _trim_cache(self) -> None:
        positions = self.cache_positions
        budget = self.store.cache_bytes
        if positions and self.end - positions[0] > budget + budget // 4:
            cut = bisect.bisect_left(positions, self.end - budget)
            del positions[:cut]
            del self.cache_records[:cut]

    def cached(self, cursor: int, limit: int) -> tuple[list[Record], int] | None:
        """The records from `cursor` and where they end, if the cache still holds `cursor`."""
        positions = self.cache_positions
        if not positions or cursor < positions[0]:
            return None
        i = bisect.bisect_left(positions, cursor)
        if i == len(positions) or positions[i] != cursor:
            return None
        j = min(i + limit, len(positions))
        return self.cache_records[i:j], positions[j] if j < len(positions) else self.end

    async def read(self, cursor: int, limit: int) -> tuple[list[Record], int]:
        """The records from `cursor` and where they end, read from the segment files."""
        i = bisect.bisect_right(self.bases, cursor) - 1
        if i < 0:
            raise BackendError(f"{self}: position {cursor} is no longer kept")
        segment = self.segments[i]
        available = (self.bases[i + 1] if i + 1 < len(self.bases) else self.end) - cursor
        offset = cursor - segment.base
        read = asyncio.get_running_loop().run_in_executor(
            self.store.executor, _read_frames, segment.fd, offset, available, limit
        )
        segment.readers += 1

        def unpin(_: object) -> None:
            segment.readers -= 1

        read.add_done_callback(unpin)
        buf, bounds, _ = await asyncio.shield(self._track(read))  # a cancelled fetch's read stays tracked
        if len(bounds) == 1:
            raise BackendError(f"{self}: corrupt record at position {cursor} ({self.folder})")
        try:
            records = [
                Record(cursor + start, _decode(buf, start + _FRAME.size, end))
                for start, end in itertools.pairwise(bounds)
            ]
        except ValueError as error:
            raise BackendError(f"{self}: undecodable record after position {cursor}: {error}") from None
        return records, cursor + bounds[-1]

    async def retain(self) -> None:
        """Delete the sealed segments that every Trigger's persisted position has passed (all of them when
        the Broker has no Trigger: a Trigger made later starts at the end). Runs after each position write
        and rollover; passes may overlap, as each takes its segments off the list before it awaits."""
        if self.closed is not None:
            return
        persisted = [file.position for file in self.triggers.values() if file.position is not None]
        reading = [subscription.position for subscription in self.subscriptions.values()]
        floor = min(persisted + reading, default=self.end)
        count = 0
        segments = self.segments
        while count + 1 < len(segments) and segments[count + 1].base <= floor and not segments[count].readers:
            count += 1
        if count:
            doomed = segments[:count]
            del segments[:count]
            del self.bases[:count]
            loop = asyncio.get_running_loop()
            await asyncio.shield(self._track(loop.run_in_executor(self.store.executor, self._delete, doomed)))

    def _delete(self, segments: list[_Segment]) -> None:
        for segment in segments:
            os.close(segment.fd)
            (self.folder / f"{segment.base:020d}{SEGMENT_SUFFIX}").unlink(missing_ok=True)

    async def shut(self, reason: str, *, persist: bool) -> None:
        """Stop taking events, let the batch in flight finish, end the subscriptions (persisting their
        positions if `persist`), wait for the work in flight on the files, and close them."""
        self.closed = reason
        await self.idle.wait()
        subscriptions = list(self.subscriptions.values())
        self.subscriptions.clear()
        for subscription in subscriptions:
            subscription.end(reason)
        if persist:
            await asyncio.gather(*(subscription.persist() for subscription in subscriptions))
        while self.busy:
            await asyncio.wait(self.busy)
        for segment in self.segments:
            os.close(segment.fd)
        self.segments.clear()
        self.bases.clear()
        self.wake()


class StoreSubscription:
    """A Trigger's reader of its Broker's log. Records are fetched in log order and may be acked in any
    order; the position that a restart resumes from is the first fetched record not yet acked (or the next
    to fetch), so a crash re-delivers and never skips. One fetch at a time."""

    def __init__(self, log: _Log, trigger: TriggerKey, file: _PositionFile, position: int) -> None:
        self.trigger = trigger
        self._log = log
        self._file = file
        self._cursor = position
        self._inflight: deque[int] = deque()
        """Positions of fetched records, from the first not yet acked on."""
        self._acked: set[int] = set()
        """Acked positions in `_inflight` behind an un-acked one."""
        self._closed: str | None = None
        self._fetching = False

    @property
    def position(self) -> int:
        """Where a restart would resume now (persisted at most `persist_interval` later, and at close)."""
        return self._inflight[0] if self._inflight else self._cursor

    async def fetch(self, limit: int) -> list[Record]:
        if limit < 1:
            raise ValueError("fetch needs a limit of at least 1")
        if self._fetching:
            raise RuntimeError(f"trigger {self.trigger[0]}/{self.trigger[1]}: a fetch is already waiting")
        self._fetching = True
        try:
            log = self._log
            while self._closed is None and self._cursor >= log.end:
                await log.wait()
            if self._closed is not None:
                raise BackendError(f"trigger {self.trigger[0]}/{self.trigger[1]}: {self._closed}")
            found = log.cached(self._cursor, limit) or await log.read(self._cursor, limit)
        finally:
            self._fetching = False
        records, self._cursor = found
        self._inflight.extend(record.position for record in records)
        return records

    def ack(self, record: Record) -> None:
        inflight = self._inflight
        position = record.position
        if not inflight or position < inflight[0] or position >= self._cursor:
            return  # acked before, or never fetched here
        if position != inflight[0]:
            self._acked.add(position)
            return
        inflight.popleft()
        acked = self._acked
        while inflight and inflight[0] in acked:
            acked.remove(inflight.popleft())
        self._log.store.mark_dirty(self)

    async def close(self) -> None:
        if self._closed is not None:
            return
        self.end("subscription closed")
        if self._log.subscriptions.get(self.trigger) is self:
            del self._log.subscriptions[self.trigger]
        await self.persist()

    def end(self, reason: str) -> None:
        """No more fetches (a waiting one raises `BackendError`) nor position writes but a final `persist`."""
        self._closed = reason
        self._log.store.unmark_dirty(self)
        self._log.wake()

    async def persist(self) -> None:
        position = self.position
        if self._file.position == position:
            return
        try:
            await self._log.store.run(self._file.write, position)
        except OSError as error:
            logger.warning("trigger %s/%s: cannot persist its position: %s", *self.trigger, error)
            if self._closed is None:
                self._log.store.mark_dirty(self)


class EventStore:
    """The `Backend` that keeps Brokers' logs in files under `root`, one folder per Broker.

    Publishes are group-committed: while one batch of a Broker is being written and fdatasynced (in a
    thread, never two of the same Broker at once), the next accumulates; each `publish` returns once its
    batch is durable, or raises `BackendError` (with the `OSError`'s text) for that batch only. Everything
    else runs on the one event loop that calls it. Events handed to subscriptions from memory are the
    published objects themselves: treat them as immutable.
    """

    def __init__(
        self,
        root: Path,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        cache_bytes: int = CACHE_BYTES,
        persist_interval: float = PERSIST_INTERVAL,
    ) -> None:
        if segment_bytes < 1 or cache_bytes < 0 or persist_interval < 0:
            raise ValueError("segment_bytes must be positive, cache_bytes and persist_interval not negative")
        self.root = root
        self.segment_bytes = segment_bytes
        self.cache_bytes = cache_bytes
        self.persist_interval = persist_interval
        self.executor = ThreadPoolExecutor(THREADS, thread_name_prefix="event-store")
        self.published = 0
        """Events made durable since start."""
        self.published_bytes = 0
        """Bytes appended to segments since start, framing included."""
        self.batches = 0
        """Group commits (one write and one fdatasync each) since start."""
        self._logs: dict[BrokerKey, asyncio.Task[_Log]] = {}
        self._removing: dict[BrokerKey, asyncio.Task[None]] = {}
        self._dirty: set[StoreSubscription] = set()
        self._dirtied = asyncio.Event()
        self._stopping = asyncio.Event()
        self._persister: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        await self.run(_make_dirs, self.root)
        self._persister = asyncio.get_running_loop().create_task(self._persist_dirty())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._persister is not None:
            self._stopping.set()
            self._dirtied.set()
            await self._persister
        while self._removing:
            await asyncio.wait(list(self._removing.values()))
        for opening in list(self._logs.values()):
            await asyncio.wait([opening])
            if not opening.cancelled() and opening.exception() is None:
                await opening.result().shut("the event store closed", persist=True)
        self._logs.clear()
        self.executor.shutdown(wait=True)

    async def publish(self, broker: BrokerKey, events: list[Event]) -> None:
        if not events:
            return
        await self._batch(await self._open_log(broker), events)

    def submit(self, broker: BrokerKey, events: list[Event]) -> asyncio.Future[None] | None:
        """`publish` without a coroutine when the Broker's log is open: the future is done once `events` are
        durable (or failed with `BackendError`); its batch is written whoever awaits it. None: the log is not
        open yet (or failed to open), so `publish` it."""
        opening = self._logs.get(broker)
        if opening is None or not opening.done() or opening.cancelled() or opening.exception() is not None:
            return None
        return self._batch(opening.result(), events)

    def _batch(self, log: _Log, events: list[Event]) -> asyncio.Future[None]:
        pieces: list[bytes] = []
        sizes: list[int] = []
        for event in events:
            payload = encode(event)
            pieces += (_FRAME.pack(len(payload), zlib.crc32(payload)), payload)
            sizes.append(_FRAME.size + len(payload))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        log.append(_Batch(pieces, sizes, events, done))
        return done

    async def subscribe(self, broker: BrokerKey, trigger: TriggerKey) -> StoreSubscription:
        """At most one open subscription per Trigger (a second one raises `ValueError`)."""
        _check_key(trigger)
        log = await self._open_log(broker)
        removal = log.removals.get(trigger)
        if removal is not None:
            await asyncio.wait([removal])
        if log.closed is not None:
            raise BackendError(f"{log}: {log.closed}")
        if trigger in log.subscriptions:
            raise ValueError(f"trigger {trigger[0]}/{trigger[1]} already has an open subscription")
        file = log.triggers.get(trigger)
        if file is None:
            file = log.triggers[trigger] = _PositionFile(log.position_path(trigger), None)
        position = log.end if file.position is None else file.position  # new: from the end as it is now
        if not log.first <= position <= log.end:
            logger.warning("trigger %s/%s: position %d outside the log", *trigger, position)
            position = min(max(position, log.first), log.end)
        # Registered before the first write, so that retention already keeps what it will read.
        subscription = log.subscriptions[trigger] = StoreSubscription(log, trigger, file, position)
        try:
            if file.position is None:
                await self.run(file.write, position)
        except BaseException as error:
            del log.subscriptions[trigger]
            if isinstance(error, OSError):
                raise BackendError(f"{log}: cannot store trigger {'/'.join(trigger)}: {error}") from None
            raise
        return subscription

    async def forget(self, broker: BrokerKey, trigger: TriggerKey | None = None) -> None:
        _check_key(broker)
        if trigger is None:
            removing = self._removing.get(broker)
            if removing is None:
                removing = asyncio.get_running_loop().create_task(self._remove(broker))
                self._removing[broker] = removing
            await asyncio.shield(removing)
            return
        _check_key(trigger)
        if broker not in self._logs and not self._folder(broker).is_dir():
            return
        log = await self._open_log(broker)
        subscription = log.subscriptions.pop(trigger, None)
        if subscription is not None:
            subscription.end("trigger deleted")
        file = log.triggers.pop(trigger, None)
        if file is None:
            return
        removal = asyncio.get_running_loop().run_in_executor(self.executor, file.remove)
        log.removals[trigger] = removal
        removal.add_done_callback(lambda _: log.removals.pop(trigger, None))
        try:
            await asyncio.shield(removal)
        except OSError as error:
            raise BackendError(f"{log}: cannot remove trigger {trigger[0]}/{trigger[1]}: {error}") from None
        await log.retain()

    async def held(self) -> dict[BrokerKey, frozenset[TriggerKey]]:
        """Every Broker that has a log in the store, each with the Triggers that have a position in it: the
        folders on disk, and the Triggers the open logs know of (one whose first position write is still in
        flight). Only names are read, in a store thread: a log that is not open stays closed. With `forget`,
        it lets the owner remove what was deleted while the store was not running."""
        if self._closed or self._persister is None:
            raise BackendError("the event store is not running")
        found = await self.run(_scan, self.root)
        for broker, opening in self._logs.items():
            if opening.done() and not opening.cancelled() and opening.exception() is None:
                found.setdefault(broker, set()).update(opening.result().triggers)
        return {broker: frozenset(triggers) for broker, triggers in found.items()}

    async def _remove(self, broker: BrokerKey) -> None:
        try:
            opening = self._logs.pop(broker, None)
            if opening is not None:
                await asyncio.wait([opening])
                if not opening.cancelled() and opening.exception() is None:
                    await opening.result().shut("broker deleted", persist=False)
            folder = self._folder(broker)
            try:
                await self.run(shutil.rmtree, folder)
            except FileNotFoundError:
                return
            except OSError as error:
                raise BackendError(f"broker {broker[0]}/{broker[1]}: cannot remove: {error}") from None
            await self.run(_fsync_dir, folder.parent)
        finally:
            del self._removing[broker]

    def _folder(self, broker: BrokerKey) -> Path:
        return self.root / broker[0] / broker[1]

    async def _open_log(self, broker: BrokerKey) -> _Log:
        opening = self._logs.get(broker)
        while opening is None:
            if self._closed or self._persister is None:
                raise BackendError("the event store is not running")
            removing = self._removing.get(broker)
            if removing is not None:
                await asyncio.wait([removing])
                opening = self._logs.get(broker)
                continue
            _check_key(broker)
            opening = self._logs[broker] = asyncio.get_running_loop().create_task(self._open(broker))
        try:
            return await asyncio.shield(opening)
        except Exception as error:  # the next call tries again
            if self._logs.get(broker) is opening:
                del self._logs[broker]
            if isinstance(error, OSError):
                raise BackendError(f"broker {broker[0]}/{broker[1]}: cannot open its log: {error}") from None
            raise

    async def _open(self, broker: BrokerKey) -> _Log:
        folder = self._folder(broker)
        segments, positions = await self.run(_recover, folder)
        log = _Log(self, broker, folder, segments, {})
        for trigger, position in positions.items():
            if position is None:
                logger.warning("trigger %s/%s: unreadable position, re-delivering all kept", *trigger)
                position = log.first
            log.triggers[trigger] = _PositionFile(log.position_path(trigger), position)
        await log.retain()
        return log

    async def run(self, function: Callable[..., _T], *args: object) -> _T:
        """`function(*args)` in a store thread; it runs to its end even if the caller is cancelled."""
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self.executor, function, *args))

    def mark_dirty(self, subscription: StoreSubscription) -> None:
        self._dirty.add(subscription)
        self._dirtied.set()

    def unmark_dirty(self, subscription: StoreSubscription) -> None:
        self._dirty.discard(subscription)

    async def _persist_dirty(self) -> None:
        """Write the positions of the subscriptions acked since the last round, at most once per
        `persist_interval` (an ack only marks its subscription), then let their logs drop what all their
        Triggers passed. Runs until `close`, which cuts the last wait short."""
        while not self._stopping.is_set():
            await self._dirtied.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.persist_interval)
            self._dirtied.clear()
            dirty, self._dirty = self._dirty, set()
            try:
                await asyncio.gather(*(subscription.persist() for subscription in dirty))
                for log in {subscription._log for subscription in dirty}:
                    await log.retain()
            except Exception:
                logger.exception("persisting trigger positions failed")
