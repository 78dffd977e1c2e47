"""The Arrow-backed training dataset and the one-off pass that measures true token lengths.

The blend output is opened with ``datasets.load_from_disk`` (memory-mapped Arrow: the records are
never a Python list, and DataLoader workers share the pages). Each item is encoded when it is
asked for. Once per (dataset, tokenizer, template, max length, image tokens), every record is
encoded in batches to get its true token count (image tokens included; negative for text-only, the
sampler's modality sign) and to find the records that cannot be encoded; the result is cached
next to the dataset (``.vlmtrain-cache/``) or, where that is not writable, in
``~/.cache/vlmtrain/lengths``.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmdata.contract import (CONVERSATIONS, ID, IMAGE_BYTES, IMAGES, N_IMAGES, TRAINER_COLUMNS, ContractError,
                              image_blob, missing_columns, read_blend_meta)

from .encode import ENCODER_VERSION, Encoder
from .images import BadImage, ImageLoader
from .templates import MaskError

log = logging.getLogger("vlmtrain.data")
CACHE_DIR_NAME = ".vlmtrain-cache"


def _own_message(cls: type, message: object) -> object:
    """The message an exception of ``cls`` was raised with, where torch's DataLoader re-raised it from a
    worker process: it builds ``cls("Caught <name> in DataLoader worker process N.\\nOriginal Traceback
    ... <module>.<name>: <message>")``, so the user read the worker's traceback before the one line that
    names the record and what to do. Any other message is returned as it is."""
    if not (isinstance(message, str) and message.startswith(f"Caught {cls.__name__} ") and "\nOriginal Traceback" in message):
        return message
    head, sep, tail = message.rstrip("\n").rpartition(f"\n{cls.__module__}.{cls.__qualname__}: ")
    return tail if sep else message


class DataError(ValueError):
    """A problem with the dataset or data settings that the user has to fix (bad path, bad sample with bad_samples=fail)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(_own_message(type(self), a) for a in args[:1]), *args[1:])


@dataclass
class DataReport:
    rows: int = 0                      # records in the Arrow dataset
    encoded: int = 0                   # records the run trains on
    text_only: int = 0
    truncated: int = 0                 # cut to model_max_length (text after the images dropped)
    mask_failures: list[dict] = field(default_factory=list)   # {row, id, reason}: cannot be encoded right
    # Train-time problems are listed once per record, however many epochs visit it; *_visits count the visits.
    bad_images: list[dict] = field(default_factory=list)      # {id, path, reason}: seen in this process at train time
    skipped: list[dict] = field(default_factory=list)         # {id, reason, path}: dropped by the collator (record_batch)
    reference_masked: list[str] = field(default_factory=list)  # ids the reference repo would train with no loss (trained here)
    skipped_visits: int = 0
    bad_image_visits: int = 0
    lengths_cache: str | None = None
    lengths_cache_hit: bool = False

    def record_batch(self, batch_or_meta: dict) -> None:
        """Add a batch's skipped samples (the collator's ``skipped`` key) to the report, each record once."""
        seen = {s["id"] for s in self.skipped}
        for s in batch_or_meta.get("skipped") or []:
            self.skipped_visits += 1
            if s["id"] not in seen:
                seen.add(s["id"])
                self.skipped.append(s)

    def record_bad_image(self, rid: str, path: str, reason: str) -> None:
        self.bad_image_visits += 1
        if not any(b["id"] == rid and b["path"] == path for b in self.bad_images):
            self.bad_images.append({"id": rid, "path": path, "reason": reason})

    TRAIN_TIME = ("skipped", "skipped_visits", "bad_images", "bad_image_visits")  # what each rank sees alone

    def train_time(self) -> dict:
        """This process's train-time problems: what another rank's report, or a checkpoint, takes from it."""
        return {k: getattr(self, k) for k in self.TRAIN_TIME}

    def absorb(self, other: dict) -> None:
        """Add another report's train_time() (another rank's, or a checkpoint's before a resume): each record
        once, the visits summed."""
        key = {"skipped": lambda e: e["id"], "bad_images": lambda e: (e["id"], e["path"])}
        for name, ident in key.items():
            known = {ident(e) for e in getattr(self, name)}
            getattr(self, name).extend(e for e in other.get(name) or [] if ident(e) not in known)
        self.skipped_visits += int(other.get("skipped_visits") or 0)
        self.bad_image_visits += int(other.get("bad_image_visits") or 0)

    def to_dict(self) -> dict:
        return {
            "rows": self.rows, "encoded": self.encoded, "text_only": self.text_only, "truncated": self.truncated,
            "mask_failures": len(self.mask_failures), "bad_images": len(self.bad_images), "skipped": len(self.skipped),
            "mask_failure_ids": [f["id"] for f in self.mask_failures],
            "skipped_ids": [s["id"] for s in self.skipped], "skipped_visits": self.skipped_visits,
            "reference_masked": len(self.reference_masked), "reference_masked_ids": list(self.reference_masked),
            "lengths_cache": self.lengths_cache, "lengths_cache_hit": self.lengths_cache_hit,
        }

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for f in self.mask_failures:
            reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
        s = (f"{self.encoded}/{self.rows} samples ({self.text_only} text-only), {self.truncated} truncated, "
             f"{len(self.mask_failures)} cannot be encoded, {len(self.skipped)} skipped at train time"
             + (f" ({self.skipped_visits} visits)" if self.skipped_visits > len(self.skipped) else ""))
        if reasons:
            s += " [" + "; ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) + "]"
        if self.reference_masked:
            s += (f"; {len(self.reference_masked)} that the reference repo's length arithmetic would train with no "
                  f"loss (its 'tokenization mismatch') are trained on their answers")
        return s


# -- opening a blend --------------------------------------------------------------------------
def open_blend(dataset_dir: str | Path, image_root: str | Path | None):
    """-> (datasets.Dataset, blend.json dict, image root Path or None)."""
    import datasets

    d = Path(dataset_dir)
    if not d.is_dir():
        raise DataError(f"dataset_dir {d} does not exist; point it at a `vlmdata blend` output folder")
    try:
        ds = datasets.load_from_disk(str(d))
    except Exception as e:
        raise DataError(f"dataset_dir {d} is not a datasets folder written by `vlmdata blend` ({type(e).__name__}: {e})") from None
    if not isinstance(ds, datasets.Dataset):
        raise DataError(f"dataset_dir {d} holds a DatasetDict; point it at one split's folder")
    missing = missing_columns(ds.column_names, TRAINER_COLUMNS)
    if missing:
        raise DataError(f"dataset {d} lacks the column(s) {sorted(missing)} of the vlmdata blend schema")
    try:
        blend = read_blend_meta(d)  # refuses a schema_version this reader does not know
    except ContractError as e:
        raise DataError(e.render()) from None
    blend_path = d / "blend.json"
    root = image_root if image_root is not None else blend.get("image_root")
    if root is not None:
        root = Path(root)
        if not root.is_absolute():
            root = d / root
        if not root.is_dir():
            if image_root is None and IMAGE_BYTES in ds.column_names:
                # a self-contained blend (--embed-images) copied away from its image tree: it needs none
                log.info("image root %s (from %s) is not here; the images are embedded in the dataset", root, blend_path)
                return ds, blend, None
            raise DataError(f"image root {root} does not exist (from {'image_root' if image_root is not None else blend_path})")
    return ds, blend, root


# -- true token lengths -----------------------------------------------------------------------
def _tokenizer_fingerprint(tok: Any) -> str:
    h = hashlib.sha256()
    if getattr(tok, "is_fast", False):
        h.update(tok.backend_tokenizer.to_str().encode())
    else:
        h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    extra = [type(tok).__name__, getattr(tok, "legacy", None), getattr(tok, "chat_template", None),
             tok.bos_token, tok.eos_token, str(getattr(tok, "add_bos_token", None))]
    h.update(json.dumps(extra, default=str).encode())
    return h.hexdigest()


def _dataset_fingerprint(ds: Any, blend: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(blend, sort_keys=True, default=str).encode())
    h.update(str(getattr(ds, "_fingerprint", "")).encode())
    h.update(str(len(ds)).encode())
    for f in getattr(ds, "cache_files", []) or []:
        p = Path(f["filename"])
        try:
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            pass
    return h.hexdigest()


def lengths_key(ds: Any, blend: dict, encoder: Encoder) -> str:
    it = encoder.image_tokens
    parts = [ENCODER_VERSION, _dataset_fingerprint(ds, blend), _tokenizer_fingerprint(encoder.tokenizer),
             encoder.template, encoder.system, encoder.model_max_length, it.token, it.token_id, it.per_image]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


def _cache_path(dataset_dir: Path, key: str, cache_dir: str | None) -> Path:
    candidates = [Path(cache_dir)] if cache_dir else [Path(dataset_dir) / CACHE_DIR_NAME,
                                                       Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vlmtrain" / "lengths"]
    for c in candidates:
        try:
            c.mkdir(parents=True, exist_ok=True)
            if os.access(c, os.W_OK):
                return c / f"lengths-{key}.npz"
        except OSError:
            continue
    return candidates[-1] / f"lengths-{key}.npz"


def _n_images(batch: dict, j: int) -> int:
    return int(batch[N_IMAGES][j]) if N_IMAGES in batch else len(batch[IMAGES][j])


def _measure_range(ds: Any, encoder: Encoder, start: int, stop: int, batch_size: int = 512):
    cols = [c for c in (ID, CONVERSATIONS, N_IMAGES, IMAGES) if c in ds.column_names]
    sub = ds.select_columns(cols)
    lengths = np.zeros(stop - start, dtype=np.int32)
    failures, truncated, reference_masked = [], 0, []
    for a in range(start, stop, batch_size):
        b = min(stop, a + batch_size)
        batch = sub[a:b]
        samples = [(batch[CONVERSATIONS][j], _n_images(batch, j)) for j in range(b - a)]
        for j, out in enumerate(encoder.encode_many(samples, check_reference=True)):
            if isinstance(out, MaskError):
                failures.append({"row": a + j, "id": str(batch[ID][j]), "reason": out.reason, "detail": out.detail})
            else:
                lengths[a + j - start] = len(out) if out.n_images else -len(out)
                truncated += out.truncated
                if out.reference_masked:
                    reference_masked.append(str(batch[ID][j]))
    return lengths, failures, truncated, reference_masked


_SHARED: tuple | None = None  # (ds, encoder) for forked pool workers, inherited instead of pickled


def measure_lengths(ds: Any, encoder: Encoder, num_proc: int = 1):
    """Encode every record once: signed true lengths (0 = cannot be encoded), failures, truncated count,
    ids the reference repo would train with no loss."""
    from vlmtrain.progress import progress

    global _SHARED
    n = len(ds)
    shard = max(1, min(16_384, -(-n // (4 * max(1, num_proc)))))
    bounds = [(a, min(n, a + shard)) for a in range(0, n, shard)]
    bar = progress(n, "true token lengths", "sample", min_total=16_384)
    parts = []
    if num_proc <= 1 or len(bounds) < 2:
        for a, b in bounds:
            parts.append(_measure_range(ds, encoder, a, b))
            bar.update(b - a)
    else:
        import multiprocessing as mp

        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # forked workers: one thread each
        _SHARED = (ds, encoder)
        try:
            with mp.get_context("fork").Pool(num_proc) as pool:
                for (a, b), part in zip(bounds, pool.imap(_measure_shard, bounds)):
                    parts.append(part)
                    bar.update(b - a)
        finally:
            _SHARED = None
    bar.close()
    lengths = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int32)
    failures = [f for p in parts for f in p[1]]
    return lengths, failures, sum(p[2] for p in parts), [i for p in parts for i in p[3]]


def _measure_shard(bounds: tuple[int, int]):
    ds, encoder = _SHARED  # type: ignore[misc]
    return _measure_range(ds, encoder, *bounds)


def cached_lengths(dataset_dir: Path, ds: Any, blend: dict, encoder: Encoder, *, num_proc: int = 1,
                   cache_dir: str | None = None):
    """measure_lengths, from the cache when this exact setting was measured before.
    -> (lengths, failures, truncated, reference_masked, path, hit)."""
    path = _cache_path(Path(dataset_dir), lengths_key(ds, blend, encoder), cache_dir)
    if path.is_file():
        try:
            with np.load(path) as z:
                lengths = z["lengths"]
                meta = json.loads(str(z["meta"]))
            if len(lengths) == len(ds):
                return lengths, meta["failures"], meta["truncated"], meta.get("reference_masked", []), path, True
        except Exception as e:  # a damaged cache is recomputed
            log.warning("ignoring unreadable lengths cache %s: %s", path, e)
    log.info("measuring the true token length of %d samples (once; cached in %s)", len(ds), path)
    lengths, failures, truncated, reference_masked = measure_lengths(ds, encoder, num_proc)
    buf = io.BytesIO()
    meta = {"failures": failures, "truncated": truncated, "reference_masked": reference_masked}
    np.savez(buf, lengths=lengths, meta=np.array(json.dumps(meta)))
    try:
        from vlmdata.atomic import write_bytes

        write_bytes(path, buf.getvalue())
        os.chmod(path, 0o644)  # others training on a shared dataset folder can read it too
    except OSError as e:
        log.warning("could not write lengths cache %s: %s", path, e)
    return lengths, failures, truncated, reference_masked, path, False


# -- the torch dataset ------------------------------------------------------------------------
class BadSampleError(RuntimeError):
    """A sample that cannot be used at train time, with bad_samples=fail."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(_own_message(type(self), a) for a in args[:1]), *args[1:])


class ConversationDataset(torch.utils.data.Dataset):
    """Item: {input_ids, labels, pixel_values [n_images,3,H,W], id}; or, with bad_samples=skip and a
    bad image, {skipped: True, id, reason, path}, which the collator drops and reports."""

    def __init__(self, ds: Any, rows: np.ndarray, encoder: Encoder, images: ImageLoader,
                 image_root: Path | None, bad_samples: str, report: DataReport | None = None) -> None:
        self.ds = ds
        self.rows = np.asarray(rows, dtype=np.int64)
        self.encoder = encoder
        self.images = images
        self.image_root = image_root
        self.bad_samples = bad_samples
        self.report = report
        self._has_blobs = IMAGE_BYTES in ds.column_names
        # rows as Arrow, turned into Python values here: `datasets` would decode every embedded image
        # (datasets.Image) before this code sees it, and a bad one would fail outside the bad-image handling
        self._rows = ds.with_format("arrow") if self._has_blobs else None
        self._empty: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def _no_images(self) -> torch.Tensor:
        if self._empty is None:  # the processor's output size, from one tiny image
            from PIL import Image

            shape = self.images.process([Image.new("RGB", (8, 8))]).shape[1:]
            self._empty = torch.zeros((0, *shape), dtype=torch.float32)
        return self._empty

    def _bad(self, rid: str, row: int, path: str, reason: str) -> dict:
        if self.report is not None:
            self.report.record_bad_image(rid, path, reason)
        if self.bad_samples == "fail":
            raise BadSampleError(
                f"record {rid!r} (row {row}): image {path}: {reason}. Fix or remove the image, or set "
                f"bad_samples: skip to drop such samples (they are counted and logged).")
        return {"skipped": True, "id": rid, "reason": reason, "path": path, "pixel_values": self._no_images()}

    def __getitem__(self, i: int) -> dict:
        row = int(self.rows[i])
        rec = self._rows[row].to_pylist()[0] if self._rows is not None else self.ds[row]
        rid = str(rec[ID])
        paths = list(rec[IMAGES] or [])
        try:
            enc = self.encoder.encode(rec[CONVERSATIONS], len(paths))
        except MaskError as e:  # measured as fine before: only a changed tokenizer/template gets here
            if self.bad_samples == "fail":
                raise BadSampleError(f"record {rid!r} (row {row}): {e}") from None
            return {"skipped": True, "id": rid, "reason": str(e), "path": None, "pixel_values": self._no_images()}
        if paths:
            if self.image_root is None and not self._has_blobs:
                raise DataError("the dataset has images but no image root: blend.json has no image_root; set image_root")
            try:
                blobs = [image_blob(b) for b in rec.get(IMAGE_BYTES) or []] if self._has_blobs else None
                if blobs is not None and self.image_root is None and None in blobs:
                    gone = paths[blobs.index(None)]
                    raise BadImage(gone, "not embedded in the dataset (kept with --missing keep) and no image root here")
                pixel_values = self.images.load(self.image_root or Path("."), paths, blobs)
            except BadImage as e:
                return self._bad(rid, row, e.path, e.reason)
        else:
            pixel_values = self._no_images()
        return {"input_ids": torch.from_numpy(enc.input_ids), "labels": torch.from_numpy(enc.labels),
                "pixel_values": pixel_values, "id": rid}
