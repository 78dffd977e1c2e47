"""``--only-referenced-by`` on a tar: the wanted members extracted from the download stream, no tar stored.

The stream is hashed as it passes, so the tar is still checked against what is expected (and a
first download pins it) even though it is never written; a stream that drops is started again
under the retry policy, a hostile archive or Ctrl-C is not.
"""
from __future__ import annotations

import hashlib
import threading
from typing import BinaryIO, Callable

from vlmdata.errors import OperationError, VlmdataError
from vlmdata.fetch.hashing import Digests
from vlmdata.fetch.progress import FileBar
from vlmdata.fetch.verified import Expected, Verified, VerifiedDownloader, needs_person
from vlmdata.manifest import FileSpec
from vlmdata.net.client import Response
from vlmdata.net.errors import Cancelled, SourceFailed
from vlmdata.net.retry import OFFLINE_HINT, GaveUp, RetryPolicy, Transient, retry
from vlmdata.place import PlaceResult, extract_tar_stream
from vlmdata.sources import Candidate, Location, Unavailable, candidates
from vlmdata.sources.hf import redact


def is_tar(spec: FileSpec) -> bool:
    if spec.place.format in ("tar", "tar.gz"):
        return True
    return spec.place.format == "auto" and spec.name.endswith((".tar", ".tar.gz", ".tgz"))


def stream_tar_subset(spec: FileSpec, dl: VerifiedDownloader, *, wanted: set[str], policy: RetryPolicy,
                      merge: bool) -> tuple[PlaceResult, Verified]:
    """Extract the members of ``spec``'s tar named in ``wanted`` into its target; the tar checked and pinned."""
    expect = dl.expected(spec.key, spec.size, spec.sha256, spec.md5)
    dest = dl.root.download_path(spec.dataset, spec.name)
    problems: list[str] = []
    unavailable: list[Unavailable] = []
    tried = unreachable = 0
    for cand in candidates(spec.name, spec.sources, dl.root, download_path=dest, mirror=dl.mirror):
        if isinstance(cand, Unavailable):
            problems.append(f"{cand.label}: {cand.reason}")
            unavailable.append(cand)
            continue
        tried += 1

        def attempt(cand: Candidate = cand) -> tuple[HashingReader, Location, PlaceResult]:
            dl.check_cancel()
            bar = dl.progress.file(spec.key + " (subset)", expect.size)
            try:
                reader, loc = _open_stream(cand, dl, bar)
            except Transient as e:
                bar.close()
                raise Transient(f"{cand.label}: {e}", e.retry_after, unreachable=e.unreachable) from None
            except BaseException:
                bar.close()
                raise
            try:
                res = extract_tar_stream(reader, spec, dl.root, wanted=wanted, merge=merge)
                reader.drain()
            except (VlmdataError, Cancelled):
                raise  # a hostile archive or Ctrl-C: no retry
            except Exception as e:  # noqa: BLE001 - a dropped stream surfaces as many types: start over
                raise Transient(f"{loc.label}: {type(e).__name__}: {e}") from None
            finally:
                reader.close()
                bar.close()
            return reader, loc, res

        try:
            reader, loc, res = retry(attempt, policy, wait=dl.engine.wait)
        except SourceFailed as e:
            problems.append(redact(str(e), dl.hub.token))
            unreachable += e.unreachable
            continue
        except GaveUp as e:
            problems.append(f"{e.last} (gave up after {e.tries} tries)")
            unreachable += e.unreachable
            continue
        return res, _checked(spec, dl, expect, reader.digests(), loc)
    if not tried and unavailable:
        raise needs_person(spec.key, unavailable)
    raise OperationError(f"{spec.key}: no source could stream it:\n" + "\n".join(f"  - {p}" for p in problems),
                         hint=OFFLINE_HINT if unreachable else None)


def _checked(spec: FileSpec, dl: VerifiedDownloader, expect: Expected, d: Digests, loc: Location) -> Verified:
    bad = expect.check(d, loc.sha256, loc.size)
    if bad:
        raise OperationError(f"{spec.key}: the streamed tar does not match: {'; '.join(bad)}",
                             hint="members extracted from it may be wrong; run without --only-referenced-by "
                                  "to download and check the whole tar")
    got = Verified(dl.root.download_path(spec.dataset, spec.name), d, loc.label, None, d.size, 0, 1)
    dl.pin(spec.key, expect, got)
    return got


def _open_stream(cand: Candidate, dl: VerifiedDownloader, bar: FileBar) -> tuple["HashingReader", Location]:
    loc = cand.locate(dl.hub)
    if loc.path is not None:
        return HashingReader(open(loc.path, "rb"), bar.update, dl.cancel), loc
    resp = dl.engine.get(dl.engine.session, loc.url or "", loc.headers)  # the engine's status handling
    if resp.status_code != 200:
        resp.close()
        raise SourceFailed(f"{loc.label}: HTTP {resp.status_code}")
    return HashingReader(resp, bar.update, dl.cancel), loc


class HashingReader:
    """A read-only stream that hashes and counts what passes through it (for tar streaming)."""

    def __init__(self, raw: BinaryIO | Response, progress: Callable[[int], None], cancel: threading.Event,
                 closer: object = None) -> None:
        self.raw = raw
        self._h = hashlib.sha256()
        self.size = 0
        self._progress = progress
        self._cancel = cancel
        self._closer = closer or raw

    def read(self, n: int = -1) -> bytes:
        if self._cancel.is_set():
            raise Cancelled()
        data = self.raw.read(n if n is not None and n >= 0 else 1 << 20)
        if data:
            self._h.update(data)
            self.size += len(data)
            self._progress(len(data))
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def digests(self) -> Digests:
        return Digests(self.size, self._h.hexdigest())

    def close(self) -> None:
        try:
            self._closer.close()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - closing a dropped connection may fail in many ways; nothing to do
            pass
