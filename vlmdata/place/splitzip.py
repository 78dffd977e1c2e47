"""A zip split over several disks (``x.z01 ... x.z09 + x.zip``, as ``zip -s`` writes it; MoE-LLaVA's
eval_zip), read from the plain concatenation of its parts, without rewriting the archive.

In such an archive every offset is relative to the start of the disk (part) it points into, and the
end records say how many disks there are, so a zip reader cannot use the joined bytes as they are.
Knowing where each part starts in the joined file (the part sizes, recorded when the parts were
joined: ``<download>.disks``), the central directory is read, each entry's local-header offset
made absolute and its disk set to 0, and a new central directory with single-disk (zip64) end
records is built in memory. The reader sees the joined file up to the old central directory,
followed by the new one: every member's bytes are read in place, nothing is copied.
"""
from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

from vlmdata import atomic
from vlmdata.errors import OperationError

_EOCD = struct.Struct("<4s4H2LH")  # signature, disk, cd disk, entries here, entries, cd size, cd offset, comment
_LOC64 = struct.Struct("<4sLQL")  # signature, disk of the zip64 end record, its offset, total disks
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # signature, size, made by, needed, disk, cd disk, entries here, entries, cd size, cd offset
_CDH = struct.Struct("<4s4B4HL2L5H2L")  # a central directory header (46 bytes)
_FULL32, _FULL16 = 0xFFFFFFFF, 0xFFFF


def disks_path(download: Path) -> Path:
    return download.with_name(download.name + ".disks")


def record_disks(download: Path, sizes: list[int]) -> None:
    """Remember the part sizes of a joined split zip beside it (written when the parts are joined)."""
    atomic.write_json(disks_path(download), {"disk_sizes": list(sizes)})


def recorded_disks(download: Path) -> list[int]:
    try:
        return [int(x) for x in json.loads(disks_path(download).read_text(encoding="utf-8"))["disk_sizes"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise OperationError(f"{download.name}: the sizes of its parts are not recorded ({disks_path(download).name})",
                             where=str(download),
                             hint="delete the joined file from the downloads folder and fetch again: the parts are "
                                  "joined anew and their sizes recorded") from None


class _Spliced(io.RawIOBase):
    """The first ``cut`` bytes of a file, then ``tail``: a seekable, read-only view."""

    def __init__(self, path: Path, cut: int, tail: bytes) -> None:
        self._fh = open(path, "rb")
        self._cut, self._tail, self._pos = cut, tail, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        end = self._cut + len(self._tail)
        self._pos = {0: offset, 1: self._pos + offset, 2: end + offset}[whence]
        return self._pos

    def readinto(self, buf) -> int:  # type: ignore[override]
        n, out = len(buf), 0
        if self._pos < self._cut:
            self._fh.seek(self._pos)
            got = self._fh.readinto(memoryview(buf)[:min(n, self._cut - self._pos)])
            out += got or 0
        at = self._pos + out - self._cut
        if out < n and at >= 0:
            piece = self._tail[at:at + n - out]
            buf[out:out + len(piece)] = piece
            out += len(piece)
        self._pos += out
        return out

    def close(self) -> None:
        self._fh.close()
        super().close()


def _fail(name: str, what: str) -> OperationError:
    return OperationError(f"{name} is not a readable split zip: {what}", hint="the parts may be damaged or in the wrong "
                                                                           "order; fetch them again")


def _read_at(fh, pos: int, n: int) -> bytes:
    fh.seek(pos)
    return fh.read(n)


def _end_records(fh, size: int, starts: list[int], name: str) -> tuple[int, int, int]:
    """(absolute offset of the central directory, its size, its entries), from the end records."""
    tail_at = max(0, size - (1 << 16) - _EOCD.size)
    tail = _read_at(fh, tail_at, size - tail_at)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0:
        raise _fail(name, "no end-of-central-directory record")
    _, _disk, cd_disk, _, entries, cd_size, cd_rel, _ = _EOCD.unpack_from(tail, i)
    loc = i - _LOC64.size
    if loc >= 0 and tail[loc:loc + 4] == b"PK\x06\x07":
        _, disk64, rel64, _total = _LOC64.unpack_from(tail, loc)
        if disk64 >= len(starts):
            raise _fail(name, f"the zip64 end record is on disk {disk64 + 1}, but there are {len(starts)} parts")
        rec = _read_at(fh, starts[disk64] + rel64, _EOCD64.size)
        if rec[:4] != b"PK\x06\x06":
            raise _fail(name, "the zip64 end record is not where its locator says")
        _, _, _, _, _, cd_disk, _, entries, cd_size, cd_rel = _EOCD64.unpack(rec)
    if cd_disk >= len(starts):
        raise _fail(name, f"the central directory starts on disk {cd_disk + 1}, but there are {len(starts)} parts")
    return starts[cd_disk] + cd_rel, cd_size, entries


def _rewrite_entry(cd: bytes, at: int, starts: list[int], name: str) -> tuple[bytes, int]:
    """One central-directory entry with an absolute offset on disk 0, and where the next one starts."""
    f = list(_CDH.unpack_from(cd, at))
    if f[0] != b"PK\x01\x02":
        raise _fail(name, f"no central-directory entry at {at}")
    n_name, n_extra, n_comment = f[12], f[13], f[14]
    csize, usize, disk, rel = f[10], f[11], f[15], f[18]
    body = at + _CDH.size
    filename = cd[body:body + n_name]
    extra = cd[body + n_name:body + n_name + n_extra]
    comment = cd[body + n_name + n_extra:body + n_name + n_extra + n_comment]
    others, pos = b"", 0
    while pos + 4 <= len(extra):  # the zip64 field holds, in order, whichever of these is full in the header
        tag, ln = struct.unpack_from("<HH", extra, pos)
        data = extra[pos + 4:pos + 4 + ln]
        if tag == 0x0001:
            vals, k = [], 0
            for full, width in ((usize == _FULL32, 8), (csize == _FULL32, 8), (rel == _FULL32, 8), (disk == _FULL16, 4)):
                if full:
                    vals.append(int.from_bytes(data[k:k + width], "little"))
                    k += width
                else:
                    vals.append(None)
            usize = vals[0] if vals[0] is not None else usize
            csize = vals[1] if vals[1] is not None else csize
            rel = vals[2] if vals[2] is not None else rel
            disk = vals[3] if vals[3] is not None else disk
        else:
            others += extra[pos:pos + 4 + ln]
        pos += 4 + ln
    if disk >= len(starts):
        raise _fail(name, f"{filename!r} is on disk {disk + 1}, but there are {len(starts)} parts")
    offset = starts[disk] + rel
    z64 = b""
    for value in (usize, csize, offset):
        if value >= _FULL32:
            z64 += struct.pack("<Q", value)
    f[11] = _FULL32 if usize >= _FULL32 else usize
    f[10] = _FULL32 if csize >= _FULL32 else csize
    f[18] = _FULL32 if offset >= _FULL32 else offset
    f[15] = 0
    new_extra = others + (struct.pack("<HH", 0x0001, len(z64)) + z64 if z64 else b"")
    f[13] = len(new_extra)
    return _CDH.pack(*f) + filename + new_extra + comment, body + n_name + n_extra + n_comment


def open_split_zip(path: Path, disk_sizes: list[int]) -> zipfile.ZipFile:
    """A ZipFile over the joined parts whose members' ``header_offset`` are offsets in ``path`` itself."""
    path = Path(path)
    starts = [sum(disk_sizes[:i]) for i in range(len(disk_sizes))]
    size = path.stat().st_size
    if size != sum(disk_sizes):
        raise _fail(path.name, f"{size:,} bytes, but its parts add up to {sum(disk_sizes):,}")
    with open(path, "rb") as fh:
        cd_at, cd_size, entries = _end_records(fh, size, starts, path.name)
        cd = _read_at(fh, cd_at, cd_size)
    if len(cd) != cd_size:
        raise _fail(path.name, "the central directory runs past the end")
    out, at = [], 0
    for _ in range(entries):
        entry, at = _rewrite_entry(cd, at, starts, path.name)
        out.append(entry)
    new_cd = b"".join(out)
    end64 = _EOCD64.pack(b"PK\x06\x06", _EOCD64.size - 12, 45, 45, 0, 0, entries, entries, len(new_cd), cd_at)
    locator = _LOC64.pack(b"PK\x06\x07", 0, cd_at + len(new_cd), 1)
    eocd = _EOCD.pack(b"PK\x05\x06", 0, 0, min(entries, _FULL16), min(entries, _FULL16),
                      min(len(new_cd), _FULL32), min(cd_at, _FULL32), 0)
    view = io.BufferedReader(_Spliced(path, cd_at, new_cd + end64 + locator + eocd))
    try:
        return zipfile.ZipFile(view)
    except zipfile.BadZipFile as e:
        view.close()
        raise _fail(path.name, str(e)) from None
