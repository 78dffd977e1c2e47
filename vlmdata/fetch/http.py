"""The HTTP download engine: resumable, retried, optionally segmented, hashed while it streams.

A download goes to ``NAME.part`` beside its final path, with a small sidecar ``NAME.part.state``
(JSON, vlmdata.state.partial) that remembers the server's validator (ETag / Last-Modified), the size and, for segmented
downloads, which byte ranges are done. After any interruption (a dropped connection, a timeout,
Ctrl-C, SIGKILL) the next call resumes with ``Range`` + ``If-Range``: a server whose file changed
answers 200 with the whole new file, and the old bytes are thrown away instead of being stitched
to the new ones. A server without Range support restarts cleanly from byte 0.

A server that sends neither ETag nor Last-Modified still gets a resume when the size it reports
is the size recorded in the sidecar, as ``curl -C -`` does; the result says so (``Fetched.notes``),
and the sha256 check of the caller decides whether the bytes belong together. Only the caller
knows whether it has a sha256 to check against: one that has none (a file whose first download
sets its pin) passes ``weak_resume=False`` and such a download starts again from byte 0.

Bytes are written as they arrive, so a kill loses only what was in flight, and a file of any
size resumes. The blocks a download of known length still needs are set aside before its first
byte, and a failing disk (full, read-only, a size limit) stops it at once, never retried
(vlmdata.fetch.disk). A plain-HTTP body of known length is spliced from the socket into the file by the
kernel (vlmdata.net.splice, through vlmdata.net.body.BodyToFile; the hasher reads the new bytes
from the page cache), on one connection as on several; any other (TLS, chunked,
``VLMDATA_NO_SPLICE=1``, not Linux) is received one ``recv`` at a time into a buffer: on one
connection the hasher's, written by a thread of its own (write_behind.py) so receiving and
writing overlap.

Several connections on one file (``connections > 1``) work like aria2c, with the pieces handed
out in file order (vlmdata.fetch.segments) so the hashing thread, which follows the contiguous
prefix from the page cache, is never far behind; their progress goes to the sidecar every
``SAVE_EVERY`` seconds. With ``ramp`` (fetch's default) the first connection asks for the whole
file and runs alone until it shows it would be slow (RAMP_AFTER), and only then do the others open.
Only the sha256 (and md5 when the manifest gives one) is computed here; whether it is the *right*
hash is decided by the caller, which never places a file that does not match.

Downloads are not fsynced (neither is what placement unpacks; only folders are): the page cache
survives a killed process, and the sha256 of every byte is checked before anything is placed, so
the worst a power cut can do is make a resumed download fail that check and start over. Forcing
each byte to disk as it arrives would make a fetch as slow as the disk's synchronous writes.

Why one file of ~680 lines: one class, the engine; its single- and several-connection paths share
the .part sidecar, the validators, the status handling and the retry loop (the byte-range
bookkeeping is in segments.py, the sidecar in vlmdata.state.partial, the writing thread in
write_behind.py, the kernel's moving of a body in vlmdata.net.splice).
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vlmdata import atomic
from vlmdata.errors import DISK_ERRNOS
from vlmdata.fetch.disk import disk_error, reserve
from vlmdata.fetch.hashing import Digests, Hashes, StreamHasher, hash_file
from vlmdata.fetch.segments import Piece, Scheduler, missing_intervals
from vlmdata.fetch.write_behind import WriteBehind
from vlmdata.net.body import BodyReader, BodyToFile
from vlmdata.net.errors import Cancelled, SourceFailed
from vlmdata.net.retry import (GaveUp, RetryPolicy, Transient, is_transient_status, retry, retry_after_seconds,
                               transient_request)
from vlmdata.net.client import Client, RequestError, Response
from vlmdata.net.urls import scrub, shown
from vlmdata.state.partial import PartState, discard_partial, part_path, partial_progress, state_path

READ = 1 << 20  # buffer per connection (one read returns what has arrived, up to this)
# Spliced bytes between two words to the hasher: each word wakes its thread (a futex call each
# side); per 1 MiB move that was ~1,100 wake-ups per GiB, when it mapped and unmapped each stretch.
HASH_EVERY = 8 << 20
SAVE_EVERY = 0.5  # seconds between saves of a segmented download's progress (what a kill can lose)
# The ramp (HttpEngine(ramp=True), fetch's default): the first connection runs alone for at least
# RAMP_AFTER seconds, and the others open only once it would need more than RAMP_GAIN seconds for
# what is left at its rate. A link that one connection fills (a mirror on the LAN, loopback) gains
# nothing from more: on the 2-core machine, 1 GiB from nginx took 1.18-1.28 s over 4 connections
# against 0.92-1.21 s over one (bench/RESULTS.md); a far or throttled server is seen
# within RAMP_AFTER, at the price of the other connections opening that much later.
RAMP_AFTER = 0.2
RAMP_GAIN = 1.0

ProgressFn = Callable[[int], None]


class _Changed(Exception):
    """The file on the server is not the one the .part was started from."""


class _Stopped(Exception):
    """A segment worker's wait between tries was cut short: the download is stopping."""


@dataclass
class Fetched:
    path: Path  # the finished download (renamed from .part)
    digests: Digests
    transferred: int  # bytes received over the network by this call
    resumed_from: int  # bytes already there when this call started
    connections: int = 1
    notes: list[str] = field(default_factory=list)  # what the caller should tell the user (a weak resume)


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _content_range(resp: Response) -> tuple[int, int, int | None] | None:
    m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def _retryable(e: Exception) -> Transient:
    """The Transient a body's failed read or write is (a cut, a timeout, a malformed chunk); a
    failure of the disk is raised as it is instead: another try cannot fix it (the caller says so)."""
    if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
        raise e
    return Transient(f"{type(e).__name__}: {scrub(str(e))}")


def _content_length(resp: Response) -> int | None:
    v = resp.headers.get("Content-Length")
    return int(v) if v and v.isascii() and v.isdigit() else None  # ("²".isdigit() is true)


class HttpEngine:
    """Downloads one URL to a local path. One engine per fetch run; thread-safe."""

    def __init__(self, session: Client | None = None, *, retry: RetryPolicy | None = None,
                 connections: int = 1, ramp: bool = False, timeout: float = 60.0, connect_timeout: float = 15.0,
                 min_split: int = 4 << 20, cancel: threading.Event | None = None) -> None:
        self.session = session or Client()
        self.retry = retry or RetryPolicy()
        self.connections = max(1, connections)
        self.ramp = ramp  # up to ``connections``, the second one on only when they pay (RAMP_AFTER)
        self.timeout = (connect_timeout, timeout)
        self.min_split = min_split
        self.cancel = cancel or threading.Event()

    # ------------------------------------------------------------------ public
    def download(self, url: str, dest: Path, *, headers: dict[str, str] | None = None, size_hint: int | None = None,
                 md5: bool = False, progress: ProgressFn | None = None, weak_resume: bool = True) -> Fetched:
        """Fetch ``url`` into ``dest`` (via ``dest.part``); resumes what an earlier call left.

        ``weak_resume``: may bytes that only their size ties to the server's file (no ETag, no
        Last-Modified) be resumed? Only when a known sha256 will judge the result."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = part_path(dest)
        spath = state_path(part)
        headers = dict(headers or {})
        progress = progress or (lambda n: None)
        restarts = 0
        while True:
            try:
                fetched = self._attempts(url, dest, part, spath, headers, size_hint, md5, progress, weak_resume)
            except _Changed:
                restarts += 1
                if restarts > 2:
                    raise SourceFailed(f"{shown(url)}: the file changed on the server during the download, three times")
                discard_partial(dest)
                continue
            os.replace(part, dest)
            spath.unlink(missing_ok=True)
            return fetched

    # ------------------------------------------------------------------ tries
    def _attempts(self, url: str, dest: Path, part: Path, spath: Path, headers: dict[str, str],
                  size_hint: int | None, md5: bool, progress: ProgressFn, weak_resume: bool) -> Fetched:
        """One download, tried again (resuming) after each transient failure; bytes kept restart the count."""
        transferred = [0]
        self._judge_part(dest, part, spath, weak_resume)
        start_bytes = partial_progress(dest)
        notes: list[str] = []
        kept = [start_bytes]

        def most_kept() -> int:
            # A try got somewhere when it left more of the file on disk than any try before it. Bytes
            # received do not say so: a download that starts over each time (no validator to resume
            # on) and is cut at the same point received bytes on every try, and was retried forever.
            kept[0] = max(kept[0], partial_progress(dest))
            return kept[0]

        def counted(n: int) -> None:
            transferred[0] += n
            progress(n)

        def attempt() -> Fetched:
            self._check_cancel()
            # (judged again before every try: a try cut inside this call must not resume what a new
            # call would start over)
            state = self._judge_part(dest, part, spath, weak_resume)
            big = size_hint is None or size_hint >= 2 * self.min_split  # small files: no probe, one connection
            if (self.connections > 1 and big) or (state is not None and state.done is not None):
                d, state, conns = self._segmented(url, part, spath, state, headers, md5, counted, notes, size_hint)
            else:
                d, state = self._single(url, part, spath, state, headers, md5, counted, notes)
                conns = 1
            return Fetched(dest, d, transferred[0], start_bytes, conns, notes)

        try:
            return retry(attempt, self.retry, wait=self.wait, progress=most_kept)
        except GaveUp as e:
            if e.unreachable:
                raise SourceFailed(f"{shown(url)}: {e.last}", unreachable=True) from None
            raise SourceFailed(f"{shown(url)}: {e}") from None
        except OSError as e:  # the disk failed, not the network: another try or source cannot help
            err = disk_error(e, part, partial_progress(dest))
            if err is None:
                raise
            raise err from None

    @staticmethod
    def _judge_part(dest: Path, part: Path, spath: Path, weak_resume: bool) -> PartState | None:
        """The sidecar of a ``.part`` whose bytes may be continued; None when there is nothing to
        continue, or what there was is discarded.

        Nothing ties the bytes on disk to the file on the server when there is no sidecar, or when it
        has no validator and no size; with only the size, a stitched file is caught only by a known
        sha256, which the caller says it has (``weak_resume``)."""
        if not part.exists():
            return None
        state = PartState.load(spath)
        if state is None or (state.validator is None and (state.size is None or not weak_resume)):
            discard_partial(dest)
            return None
        return state

    def wait(self, seconds: float) -> None:
        """Sleep between tries; Ctrl-C (the cancel event) ends the wait with Cancelled."""
        if self.cancel.wait(seconds):
            raise Cancelled()

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()

    # ------------------------------------------------------------------ requests
    def get(self, session: Client, url: str, headers: dict[str, str]) -> Response:
        """One streamed GET: 200/206/416 come back; Transient for what is worth another try; else SourceFailed."""
        try:
            resp = session.get(url, headers=headers, timeout=self.timeout)
        except RequestError as e:
            again = transient_request(e, url)
            if again is not None:
                raise again from None
            raise SourceFailed(f"{shown(url)}: {scrub(str(e))}") from None
        # (a redirect from https to plain http is refused by the Client, at the hop: it would hand the
        # bytes, and the pin of a file without a known hash, to anyone on the path)
        if resp.status_code in (200, 206, 416):
            return resp
        resp.close()
        if is_transient_status(resp.status_code):
            raise Transient(f"HTTP {resp.status_code}", retry_after_seconds(resp.headers.get("Retry-After")))
        raise SourceFailed(f"{shown(url)}: HTTP {resp.status_code} {resp.reason or ''}".rstrip(), status=resp.status_code)

    @staticmethod
    def _range_headers(headers: dict[str, str], start: int, end: int | None, state: PartState | None) -> dict[str, str]:
        h = dict(headers)
        h["Range"] = f"bytes={start}-{'' if end is None else end}"
        if state is not None and state.validator:
            h["If-Range"] = state.validator
        return h

    @staticmethod
    def _new_state(url: str, resp: Response, size: int | None) -> PartState:
        # (the URL as shown: a signed link's query string is a credential, and the sidecar stays on disk)
        return PartState(url=shown(url), size=size, etag=resp.headers.get("ETag"),
                         last_modified=resp.headers.get("Last-Modified"))

    @staticmethod
    def _weak_resume(url: str, state: PartState, have: int, notes: list[str]) -> None:
        """A resume that only the size vouches for: say so (once)."""
        if state.validator is None and have:
            note = (f"{shown(url)} sends no ETag or Last-Modified: resumed after {have:,} bytes because the size "
                    f"({state.size:,} bytes) is unchanged, as curl -C - would; the sha256 check decides")
            if note not in notes:
                notes.append(note)

    # ------------------------------------------------------------------ one connection
    def _single(self, url: str, part: Path, spath: Path, state: PartState | None, headers: dict[str, str],
                md5: bool, progress: ProgressFn, notes: list[str],
                resp: Response | None = None) -> tuple[Digests, PartState]:
        offset = part.stat().st_size if (state is not None and part.exists() and resp is None) else 0
        if resp is not None:
            pass
        elif offset:
            resp = self.get(self.session, url, self._range_headers(headers, offset, None, state))
        else:
            resp = self.get(self.session, url, headers)
        with resp:
            if resp.status_code == 416:
                total = (_content_range(resp) or (0, 0, None))[2]
                if state is not None and total is not None and total == offset == state.size:
                    return hash_file(part, md5=md5), state  # it was complete already
                raise _Changed()
            if resp.status_code == 206 and offset:
                cr = _content_range(resp)
                # (a total of "*" says nothing: enough beside a validator, not where the size is all there is)
                sizes = (state.size,) if state.validator is None else (None, state.size)
                if cr is None or cr[0] != offset or (state.size is not None and cr[2] not in sizes):
                    raise _Changed()
                if state is not None:
                    self._weak_resume(url, state, offset, notes)
                flags = os.O_WRONLY  # (at ``offset``: no O_APPEND, which splice and pwrite refuse or ignore)
            else:  # 200: a fresh start (or the server ignores Range, or the file changed)
                if offset and resp.status_code == 200:
                    notes.append(f"{shown(url)} answered the request to resume after {offset:,} bytes with the whole "
                                 "file (a server without byte ranges, or the file changed): downloaded again from "
                                 "its start")
                offset = 0
                cr = _content_range(resp)
                size = cr[2] if cr else _content_length(resp)
                state = self._new_state(url, resp, size)
                if part.exists():  # (emptied before the new validator is saved: a kill between the two
                    os.truncate(part, 0)  # must not leave the old bytes under it, for the next If-Range)
                state.save(spath)
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            hasher = StreamHasher(md5=md5, prefix=(part, offset))
            ok = False
            try:
                fd = os.open(part, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
                try:
                    if state.size is not None:
                        reserve(fd, [(offset, state.size)])
                    os.lseek(fd, offset, os.SEEK_SET)
                    got = self._pump(resp, fd, offset, hasher, progress)
                finally:
                    os.close(fd)
                ok = True
            finally:
                if not ok:
                    hasher.abandon()
            d = hasher.finish()
        if state.size is not None and d.size != state.size:
            raise Transient(f"connection closed after {offset + got} of {state.size} bytes")
        return d, state

    def _pump(self, resp: Response, fd: int, pos: int, hasher: StreamHasher, progress: ProgressFn) -> int:
        """The body into ``fd`` (from offset ``pos``, where its file position is) as it arrives.
        Returns when every byte received is written."""
        from http.client import HTTPException

        body = BodyReader(resp)
        try:
            if body.plain_socket() is not None:
                return self._splice(body, fd, pos, hasher, progress)
            return self._receive(body, fd, hasher, progress)
        except (HTTPException, OSError) as e:  # a cut, a timeout, a malformed chunk
            raise _retryable(e) from None

    def _splice(self, body: BodyReader, fd: int, pos: int, hasher: StreamHasher, progress: ProgressFn) -> int:
        """A plain-HTTP body moved by the kernel (vlmdata.net.splice); the hasher reads each new
        HASH_EVERY bytes of the file from the page cache."""
        start = told = pos
        with BodyToFile(body, memoryview(b""), self.cancel.is_set) as sink:
            while True:
                if self.cancel.is_set():
                    raise Cancelled()
                n = sink.move(fd, pos, READ)
                if not n:
                    break
                pos += n
                if pos - told >= HASH_EVERY:
                    hasher.file_grew(pos)
                    told = pos
                progress(n)
        if pos > told:
            hasher.file_grew(pos)
        return pos - start

    def _receive(self, body: BodyReader, fd: int, hasher: StreamHasher, progress: ProgressFn) -> int:
        """The body read into the hasher's buffers, each read handed at once to the thread that
        writes it (write_behind), which passes each full buffer on to the hasher."""
        got = filled = 0
        slot, view = hasher.slot()
        with WriteBehind(fd, hasher) as sink:  # (its end waits for the queued writes: fd is closed after)
            while True:
                if self.cancel.is_set():
                    raise Cancelled()
                n = body.readinto(view[filled:])
                if not n:
                    break
                filled += n
                got += n
                sink.put(slot, filled - n, filled, full=filled == len(view))
                progress(n)
                if filled == len(view):
                    slot, view = hasher.slot()
                    filled = 0
            sink.put(slot, filled, filled, full=True)  # (the last buffer, as far as it is filled)
        return got

    # ------------------------------------------------------------------ several connections
    def _probe(self, url: str, state: PartState | None, headers: dict[str, str], first: int | None
               ) -> tuple[PartState, Response | None, Response | None]:
        """Ask for the first ``first`` bytes (None: all of them): learn the size, the validator, and
        whether ranges work.

        Returns (state, whole, head). A server that ignores Range answers 200 with the whole file:
        ``whole`` is that response, open, to be streamed as a single-connection download instead
        of asked for again. For a fresh download the 206 answer is ``head``, also open: it is the
        first piece, so no request (and, far away, no round trip) is spent on the probe alone.
        """
        last = None if first is None else first - 1
        resp = self.get(self.session, url, self._range_headers(headers, 0, last, state))
        cr = _content_range(resp)
        if resp.status_code == 206 and cr is not None and cr[2] is not None:
            fresh = self._new_state(url, resp, cr[2])
            if state is None and first != 1 and cr[0] == 0:
                return fresh, None, resp
            resp.close()
            if state is not None and (state.size != fresh.size or
                                      (state.validator and fresh.validator and state.validator != fresh.validator)):
                raise _Changed()
            return (state if state is not None else fresh), None, None
        if resp.status_code == 416:  # an empty file has no byte 0: fetch it plainly
            resp.close()
            return self._new_state(url, resp, (_content_range(resp) or (0, 0, None))[2]), None, None
        if resp.status_code != 200:
            resp.close()
            raise _Changed()
        return self._new_state(url, resp, _content_length(resp)), resp, None

    def _segmented(self, url: str, part: Path, spath: Path, state: PartState | None, headers: dict[str, str],
                   md5: bool, progress: ProgressFn, notes: list[str],
                   size_hint: int | None) -> tuple[Digests, PartState, int]:
        old = state
        piece_min = max(1 << 20, self.min_split // 4)
        if old is not None:
            first: int | None = 1
        elif self.ramp:  # the whole file, which the first connection may well stream alone
            first = None
        else:
            first = max(piece_min, (size_hint or 0) // (4 * self.connections))
        state, whole, head = self._probe(url, state, headers, first)
        size = state.size
        if head is not None and (size is None or size < 2 * self.min_split):
            if first is None:  # a small file after all, whose whole body is on its way: one connection, this one
                whole, head = head, None
            else:  # (only its first piece was asked for: one connection, from the start)
                head.close()
                head = None
        if whole is not None or size is None or (state.done is None and size < 2 * self.min_split):
            if whole is not None and old is not None:
                whole.close()
                raise _Changed()  # a range request answered with the whole file: start over cleanly
            part.unlink(missing_ok=True)
            spath.unlink(missing_ok=True)
            d, st = self._single(url, part, spath, None, headers, md5, progress, notes, resp=whole)
            return d, st, 1
        if state.done is None:
            # a fresh start, or a single-connection .part of the same file: keep its bytes as range 0
            have = part.stat().st_size if (old is not None and part.exists()) else 0
            state.done = [[0, min(have, size)]] if have else []
            # (the ranges are saved before the file is stretched to its size: a kill between the two
            # must not leave a full-length .part that a sidecar without ranges calls complete)
            state.save(spath)
            with open(part, "r+b" if have else "wb") as fh:
                fh.truncate(size)
        self._weak_resume(url, state, sum(b - a for a, b in state.done), notes)
        sched = Scheduler(size, state.done, self.connections, min_split=piece_min)
        n_workers = sched.workers(self.connections)
        given: list[tuple[Piece, Response]] = []
        if head is not None:  # the probe's answer: the first connection's first piece
            cr = _content_range(head)
            given.append((sched.claim(0, min(size, cr[1] + 1) if cr else 1), head))
        errors: list[BaseException] = []
        stop = threading.Event()
        all_done = threading.Event()
        started = 1 if self.ramp else n_workers  # connections open so far (the ramp adds the rest)
        left = [started]
        left_lock = threading.Lock()
        fd = os.open(part, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        try:
            reserve(fd, [(a, b) for a, b in missing_intervals(state.done, size)])
        except OSError:  # (the disk cannot hold it: nothing started yet to wait for)
            os.close(fd)
            for _, resp in given:
                resp.close()
            raise
        hash_stop = threading.Event()
        digest_box: list[Digests] = []
        hasher = threading.Thread(target=self._follow_hash, args=(part, size, sched, md5, hash_stop, digest_box),
                                  name="vlmdata-hash", daemon=True)
        hasher.start()

        def worker(first: list[tuple[Piece, Response]]) -> None:
            try:
                self._worker(url, headers, state, fd, sched, progress, stop, errors, first)
            finally:
                with left_lock:
                    left[0] -= 1
                    if not left[0]:
                        all_done.set()

        try:
            workers = [threading.Thread(target=worker, args=(given if i == 0 else [],), name=f"vlmdata-seg{i}",
                                        daemon=True) for i in range(n_workers)]
            for w in workers[:started]:
                w.start()
            began = last_save = time.monotonic()
            while not all_done.wait((SAVE_EVERY if started == n_workers else min(SAVE_EVERY, RAMP_AFTER)) / 2):
                if self.cancel.is_set():
                    stop.set()
                left_now = size - sum(b - a for a, b in sched.done_ranges()) if started < n_workers else 0
                if started < n_workers and not stop.is_set() and \
                        more_connections_pay(sched.missing - left_now, left_now, time.monotonic() - began):
                    sched.hand_back_tails()
                    with left_lock:
                        left[0] += n_workers - started
                    for w in workers[started:]:
                        w.start()
                    started = n_workers
                if time.monotonic() - last_save >= SAVE_EVERY:
                    self._save_progress(state, sched, spath)
                    last_save = time.monotonic()
            for w in workers[:started]:
                w.join()
            self._save_progress(state, sched, spath)
            if errors:
                for e in errors:
                    if isinstance(e, (_Changed, SourceFailed, Cancelled)):
                        raise e
                raise errors[0]
            if self.cancel.is_set():
                raise Cancelled()
        finally:
            for _, resp in given:  # (a first piece never started, when the run stopped at once)
                resp.close()
            os.close(fd)
            hash_stop.set()
            sched.wake()
        hasher.join()
        if not digest_box:
            raise Transient("hashing stopped early")
        d = digest_box[0]
        if d.size != size:
            raise Transient(f"only {d.size} of {size} bytes hashed")
        return d, state, started

    def _save_progress(self, state: PartState, sched: "Scheduler", spath: Path) -> None:
        state.done = sched.done_ranges()
        state.save(spath)

    def _follow_hash(self, part: Path, size: int, sched: "Scheduler", md5: bool, stop: threading.Event,
                     out: list[Digests]) -> None:
        """Hash the finished prefix as it grows, from the page cache, until all ``size`` bytes are in."""
        h = Hashes(md5)
        fd = os.open(part, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            while h.size < size:
                frontier = sched.frontier()
                if frontier <= h.size:
                    if stop.is_set() and sched.frontier() <= h.size:
                        return
                    sched.wait_progress(0.05)
                    continue
                h.update_from(fd, h.size, min(frontier, h.size + (64 << 20)))
        finally:
            os.close(fd)
        out.append(h.digests())

    def _worker(self, url: str, headers: dict[str, str], state: PartState, fd: int, sched: "Scheduler",
                progress: ProgressFn, stop: threading.Event, errors: list[BaseException],
                given: list[tuple[Piece, Response]]) -> None:
        """One connection: takes pieces until none is left; a failed piece goes back to the scheduler.
        ``given``: a first piece whose response is already open (the probe's)."""
        session = Client(pool_size=2, headers=self.session.headers)  # (a connection of its own)
        buf = memoryview(bytearray(READ))
        written = [0]

        def counted(n: int) -> None:
            written[0] += n
            progress(n)

        def one_piece() -> bool:
            """Fetch the next piece; True when there is none left."""
            piece, resp = given.pop() if given else (sched.take(), None)
            if piece is None:
                return True
            try:
                self._fetch_piece(session, url, headers, state, fd, piece, sched, counted, stop, buf, resp)
            finally:
                sched.release(piece)  # unfinished: another connection (or the next try) takes the rest
            return False

        def pause(seconds: float) -> None:
            if stop.wait(seconds):
                raise _Stopped()

        try:
            while not stop.is_set():
                # a finished piece starts a fresh count of tries; bytes written restart it too
                if retry(one_piece, self.retry, wait=pause, progress=lambda: written[0]):
                    return
        except _Stopped:
            return
        except GaveUp as e:
            errors.append(SourceFailed(f"{shown(url)}: {e}", unreachable=e.unreachable))
            stop.set()
        except BaseException as e:  # noqa: BLE001 - handed to the coordinating thread
            errors.append(e)
            stop.set()
        finally:
            session.close()

    def _fetch_piece(self, session: Client, url: str, headers: dict[str, str], state: PartState, fd: int,
                     piece: Piece, sched: "Scheduler", progress: ProgressFn, stop: threading.Event,
                     buf: memoryview, resp: Response | None = None) -> None:
        from http.client import HTTPException

        start, end = sched.bounds(piece)
        if start >= end:
            if resp is not None:
                resp.close()
            return
        t0 = time.monotonic()
        given = resp is not None
        if resp is None:
            resp = self.get(session, url, self._range_headers(headers, start, end - 1, state))
        latency = time.monotonic() - t0
        got = 0
        with resp:
            cr = _content_range(resp)
            if resp.status_code != 206 or cr is None or cr[0] != start or (cr[2] is not None and cr[2] != state.size):
                raise _Changed()
            try:
                with BodyToFile(BodyReader(resp), buf, lambda: stop.is_set() or self.cancel.is_set()) as sink:
                    while True:
                        if stop.is_set() or self.cancel.is_set():
                            return
                        pos, end = sched.bounds(piece)
                        if pos >= end:
                            break  # done, or another connection took the rest
                        n = sink.move(fd, pos, end - pos)
                        if not n:
                            raise Transient(f"connection closed at byte {pos} of a range ending at {end}")
                        sched.advance(piece, n)
                        progress(n)
                        got += n
            except Cancelled:  # a spliced wait saw the stop: as the check above does, leave the piece
                return
            except (HTTPException, OSError) as e:
                raise _retryable(e) from None
        if not given:  # (the probe's answer started before this clock)
            sched.observe(latency, got, time.monotonic() - t0 - latency)


def more_connections_pay(moved: int, left: int, seconds: float) -> bool:
    """Whether to open the other connections of a ramped download, whose first one has moved
    ``moved`` bytes in ``seconds`` with ``left`` to go: not before RAMP_AFTER, then when that one
    alone would need more than RAMP_GAIN seconds (or has not sent a byte yet)."""
    if seconds < RAMP_AFTER:
        return False
    return moved <= 0 or left * seconds > RAMP_GAIN * moved


def copy_local(src: Path, dest: Path, *, md5: bool = False, progress: ProgressFn | None = None,
               cancel: threading.Event | None = None) -> Fetched:
    """A local-folder mirror: copy ``src`` to ``dest`` through ``dest.part``, hashing as it goes."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    discard_partial(dest)
    part = part_path(dest)
    hasher = StreamHasher(md5=md5)
    ok = False
    try:
        with open(src, "rb", buffering=0) as fi, open(part, "wb", buffering=0) as fo:
            reserve(fo.fileno(), [(0, os.fstat(fi.fileno()).st_size)])
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                slot, view = hasher.slot()
                n = fi.readinto(view)
                if n:
                    atomic.write_all(fo.fileno(), view[:n])
                hasher.commit(slot, n)
                if not n:
                    break
                if progress:
                    progress(n)
        ok = True
    except OSError as e:  # (a full disk: said as such; the copy starts again next time)
        err = disk_error(e, part)
        if err is None:
            raise
        raise err from None
    finally:
        if not ok:
            hasher.abandon()
    d = hasher.finish()
    os.replace(part, dest)
    return Fetched(dest, d, d.size, 0)


__all__ = ["HttpEngine", "Fetched", "copy_local"]
