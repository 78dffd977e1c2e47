"""A small, offline stand-in for the real data origins: the demo mirror.

``build_demo_mirror(out)`` writes, deterministically and in well under a second or two:

``out/mirror/`` shaped like the real origins, so ``--mirror out/mirror`` (a local folder) or an
HTTP server over it serves every demo download under the real URL paths:

- ``images.cocodataset.org/zips/train2017.zip`` (``train2017/000000XXXXXX.jpg``)
- ``downloads.cs.stanford.edu/nlp/data/gqa/images.zip`` (``images/<id>.jpg``, ids like ``2354786`` and ``n161313``)
- ``cs.stanford.edu/people/rak248/VG_100K_2/images.zip`` (``VG_100K/``) and ``images2.zip`` (``VG_100K_2/``)
- ``dl.fbaipublicfiles.com/textvqa/images/train_val_images.zip`` (``train_images/<16 hex>.jpg``)
- ``huggingface.co/datasets/liuhaotian/LLaVA-Pretrain/resolve/main/images.zip`` (no top folder:
  ``<5-digit shard>/<9-digit id>.jpg``) and ``.../blip_laion_cc_sbu_558k.json``
- ``huggingface.co/datasets/liuhaotian/LLaVA-Instruct-150K/resolve/main/llava_v1_5_mix665k.json``
- ``scontent.xx.fbcdn.net/m1/v/t6/<token>.tar``: two SA-1B-like tars of ``sa_<id>.jpg`` + ``sa_<id>.json``
  (their signed URLs are in ``out/sa1b_links.txt``, a links file like Meta's)
- ``ocr-vqa.github.io/demo/dataset.json``: OCR-VQA's index (a dict keyed by id with ``imageURL``)
  whose URLs point at ``ecx.images-amazon.com/images/I/…``, served by the same mirror: JPEGs,
  a GIF, a PNG, GIF bytes behind a ``.jpg`` URL, one dead URL (absent) and one corrupt image.

Every origin URL is read from the shipped manifests (demo/manifests.py: a file's first http
source, or its hub file's resolve URL), and ``out/manifests/`` is derived from the shipped
manifests too: the datasets coco, gqa, ocr_vqa, textvqa, vg, sam, llava_pretrain and
llava_instruct overridden by name (the shipped files and placements, the demo files' sizes and
sha256) and the layouts ``llava`` and ``llava-pretrain-case`` with the demo's counts. Nothing is
restated by hand, so the demo cannot drift from the catalog. This works with no network at all::

    vlmdata --manifests out/manifests --mirror out/mirror --root out/data \\
        fetch coco gqa ocr_vqa textvqa vg llava_instruct llava_pretrain --layout llava
    vlmdata --manifests out/manifests layout check --layout llava out/data/layouts/llava

The JSONs are consistent with the images: mix665k-shaped records (coco/gqa/ocr_vqa/textvqa/vg,
1-5 turn pairs, int and str ids, text-only ShareGPT-like records near the tail, a couple of
records whose image does not exist, like the real file's dead OCR-VQA ones) and a
blip_laion_cc_sbu_558k-shaped pretrain JSON (2 turns, ``<image>`` at the end of the human turn).
``out/sam_subset.json`` references a few SAM images, for ``--only-referenced-by``.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from demo.manifests import demo_file, origin_url, write_manifests
from vlmdata.manifest import Catalog, load_catalog
from vlmdata.net.urls import rewrite

DATE = (2023, 10, 6, 12, 0, 0)
MTIME = 1696593600

AMAZON = "http://ecx.images-amazon.com/images/I/"  # where the demo's OCR-VQA list points (served by the mirror)
SAM_CDN = "https://scontent.xx.fbcdn.net/m1/v/t6/"  # where the demo's SA-1B links file points


@dataclass
class DemoFile:
    key: str  # dataset:file
    url: str  # the origin URL
    path: Path  # where it lies in the mirror
    size: int
    sha256: str
    md5: str


@dataclass
class DemoMirror:
    out: Path
    mirror: Path
    manifests: Path
    files: dict[str, DemoFile] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # store path -> files placed there
    ocr_dead: list[str] = field(default_factory=list)  # OCR-VQA ids whose URL is dead
    ocr_corrupt: list[str] = field(default_factory=list)  # ids whose image cannot be decoded
    ocr_converted: list[str] = field(default_factory=list)  # ids served as GIF/PNG, saved as JPEG
    missing_images: list[str] = field(default_factory=list)  # mix665k image paths that will not exist
    sam_links: Path | None = None
    sam_subset_json: Path | None = None
    sam_subset: list[str] = field(default_factory=list)  # basenames referenced by sam_subset_json

    def file(self, key: str) -> DemoFile:
        return self.files[key]


# ---------------------------------------------------------------- images


def _image(rng: random.Random, fmt: str = "JPEG") -> bytes:
    w, h = rng.randint(24, 48), rng.randint(24, 48)
    c1 = tuple(rng.randrange(256) for _ in range(3))
    c2 = tuple(rng.randrange(256) for _ in range(3))
    img = Image.new("RGB", (w, h), c1)
    px = img.load()
    x0, y0 = rng.randrange(w), rng.randrange(h)
    for y in range(h):
        for x in range(w):
            if (x - x0) ** 2 + (y - y0) ** 2 < (min(w, h) // 3) ** 2 or (x + y) % 7 == 0:
                px[x, y] = c2
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=85)
    elif fmt == "GIF":
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(buf, "GIF")
    else:
        rgba = img.convert("RGBA")
        rgba.putpixel((0, 0), (0, 0, 0, 0))
        rgba.save(buf, "PNG")
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes], *, deflate: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        dirs: set[str] = set()
        for name in members:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i]) + "/"
                if d not in dirs:
                    dirs.add(d)
                    zf.writestr(zipfile.ZipInfo(d, DATE), b"")
        for name, data in members.items():
            info = zipfile.ZipInfo(name, DATE)
            info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


def _tar(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), MTIME, 0o644
            info.uname = info.gname = "root"
            tf.addfile(info, io.BytesIO(data))


def _mirror_path(mirror: Path, url: str) -> Path:
    return Path(rewrite(url, str(mirror)))


# ---------------------------------------------------------------- records

_WORDS = ("what is the color of the object on left right side image picture sign say text book title "
          "author genre how many people are there in this photo describe scene detail").split()


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))


def _conversation(rng: random.Random, with_image: bool) -> list[dict]:
    turns = []
    for i in range(rng.randint(1, 5)):
        q = _text(rng, 4, 12).capitalize() + "?"
        if i == 0 and with_image:
            q = "<image>\n" + q if rng.random() < 0.85 else q + "\n<image>"
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": _text(rng, 1, 20).capitalize() + "."}]
    return turns


# ---------------------------------------------------------------- the builder


def build_demo_mirror(out: Path, *, n_per_set: int = 12, seed: int = 0) -> DemoMirror:
    """Write the demo mirror, its JSONs and its manifests under ``out`` (see the module doc)."""
    n = max(6, n_per_set)
    out = Path(out)
    mirror, manifests = out / "mirror", out / "manifests"
    demo = DemoMirror(out, mirror, manifests)
    rng = random.Random(seed)
    shipped = load_catalog()  # the shipped manifests only: the demo's own would shadow them
    images: dict[str, list[str]] = {}  # store folder -> file names
    placed: dict[str, int] = {}  # dataset:file -> files it places

    def origin(key: str) -> str:
        url = origin_url(_shipped_file(shipped, key))
        assert url is not None, f"the shipped {key} has no URL the demo can serve"
        return url

    def add(key: str, writer, members: dict[str, bytes], url: str | None = None) -> None:
        url = url or origin(key)
        p = _mirror_path(mirror, url)
        writer(p, members)
        _add_existing(demo, key, url, p)
        placed[key] = sum(name.endswith(".jpg") for name in members)

    def jpegs(names: list[str]) -> dict[str, bytes]:
        return {name: _image(rng) for name in names}

    # COCO
    coco = [f"{i:012d}.jpg" for i in sorted(rng.sample(range(9, 581_929), n))]
    add("coco:train2017.zip", _zip, {f"train2017/{x}": b for x, b in jpegs(coco).items()})
    images["coco/train2017"] = coco
    # GQA: numeric and n-prefixed ids
    gqa = [f"{i}.jpg" for i in sorted(rng.sample(range(1, 2_417_997), n - n // 3))]
    gqa += [f"n{i}.jpg" for i in sorted(rng.sample(range(1, 581_923), n // 3))]
    add("gqa:images.zip", lambda p, m: _zip(p, m, deflate=True),
        {f"images/{x}": b for x, b in jpegs(gqa).items()})
    images["gqa/images"] = gqa
    # Visual Genome: both zips under the VG_100K_2 URL path; inner folders VG_100K and VG_100K_2
    vg1 = [f"{i}.jpg" for i in sorted(rng.sample(range(1, 2_416_000), n))]
    vg2 = [f"{i}.jpg" for i in sorted(rng.sample(range(2_416_001, 2_417_999), n))]
    add("vg:images.zip", _zip, {f"VG_100K/{x}": b for x, b in jpegs(vg1).items()})
    add("vg:images2.zip", _zip, {f"VG_100K_2/{x}": b for x, b in jpegs(vg2).items()})
    images["vg/VG_100K"], images["vg/VG_100K_2"] = vg1, vg2
    # TextVQA
    tv = [f"{rng.getrandbits(64):016x}.jpg" for _ in range(n)]
    add("textvqa:train_val_images.zip", _zip, {f"train_images/{x}": b for x, b in jpegs(tv).items()})
    images["textvqa/train_images"] = tv
    # LLaVA-Pretrain: no top folder, <5-digit shard>/<9-digit id>.jpg
    pre_ids = sorted(rng.sample(range(0, 660_000_000), n))
    pre = [f"{i // 10_000:05d}/{i:09d}.jpg" for i in pre_ids]
    add("llava_pretrain:images.zip", _zip, jpegs(pre))
    images["LLaVA-Pretrain/images"] = pre
    # SA-1B-like tars: sa_<id>.jpg + sa_<id>.json, two tars placing into one folder
    sam_names: list[str] = []
    links = ["file_name\tcdn_link"]
    for t in range(2):
        ids = sorted(rng.sample(range(1 + t * 11_186, 11_186 * (t + 1)), n // 2))
        members: dict[str, bytes] = {}
        for i in ids:
            members[f"sa_{i}.jpg"] = _image(rng)
            members[f"sa_{i}.json"] = json.dumps({"image": {"image_id": i, "file_name": f"sa_{i}.jpg"},
                                                  "annotations": []}).encode()
            sam_names.append(f"sa_{i}.jpg")
        token = hashlib.sha1(f"sa_{t:06d}".encode()).hexdigest()
        url = f"{SAM_CDN}{token}.tar"
        add(f"sam:sa_{t:06d}.tar", _tar, members, url=url)  # not in the manifest: its links file says
        links.append(f"sa_{t:06d}.tar\t{url}?ccb=10-5&oh=00_demo{token[:8]}&oe=65AB1234&_nc_sid=0fdd51")
    images["sam/images"] = sam_names
    demo.sam_links = out / "sa1b_links.txt"
    demo.sam_links.write_text("\n".join(links) + "\n")
    demo.sam_subset = sorted(rng.sample(sam_names, max(2, len(sam_names) // 3)))
    demo.sam_subset_json = out / "sam_subset.json"
    demo.sam_subset_json.write_text(json.dumps([
        {"id": f"sam_{i}", "image": f"sam/images/{x}", "conversations": _conversation(rng, True)}
        for i, x in enumerate(demo.sam_subset)], indent=1))

    # OCR-VQA: dataset.json + per-image URLs on a fake Amazon host served by the same mirror
    ocr_ids = sorted({f"{rng.randrange(10**9, 10**10):010d}" for _ in range(n)})
    index: dict[str, dict] = {}
    kinds = ["gif", "png", "gif-as-jpg", "dead", "corrupt"] + ["jpg"] * (len(ocr_ids) - 5)
    for oid, kind in zip(ocr_ids, kinds):
        token = hashlib.sha1(oid.encode()).hexdigest()[:10].upper()
        ext = {"gif": "gif", "png": "png"}.get(kind, "jpg")
        url = f"{AMAZON}{token}L.{ext}"
        index[oid] = {"imageURL": url, "title": _text(rng, 2, 6).title(), "authorName": "Demo Author",
                      "genre": rng.randrange(32), "questions": ["Who wrote this book?", "What is the title of this book?"],
                      "answers": ["Demo Author", "A Book"], "split": rng.choice([1, 1, 1, 2, 3])}
        if kind == "dead":
            demo.ocr_dead.append(oid)
            continue
        target = _mirror_path(mirror, url)
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "corrupt":
            demo.ocr_corrupt.append(oid)
            target.write_bytes(_image(rng)[:40])  # a JPEG cut short: header, then nothing
        elif kind in ("gif", "gif-as-jpg", "png"):
            demo.ocr_converted.append(oid)
            target.write_bytes(_image(rng, "PNG" if kind == "png" else "GIF"))
        else:
            target.write_bytes(_image(rng))
    ocr_json = _mirror_path(mirror, origin("ocr_vqa:dataset.json"))
    ocr_json.parent.mkdir(parents=True, exist_ok=True)
    ocr_json.write_text(json.dumps(index, indent=1))
    _add_existing(demo, "ocr_vqa:dataset.json", origin("ocr_vqa:dataset.json"), ocr_json)
    ocr_saved = [f"{i}.jpg" for i in ocr_ids if i not in demo.ocr_dead and i not in demo.ocr_corrupt]
    images["ocr_vqa/images"] = ocr_saved

    # mix665k-shaped instruction JSON
    recs: list[dict] = []
    prefixed = [("coco/train2017/", coco), ("gqa/images/", gqa), ("ocr_vqa/images/", [f"{i}.jpg" for i in ocr_ids]),
                ("textvqa/train_images/", tv), ("vg/VG_100K/", vg1), ("vg/VG_100K_2/", vg2)]
    for prefix, names in prefixed:
        for name in names + rng.sample(names, max(1, len(names) // 4)):  # some images used twice
            recs.append({"image": prefix + name})
    missing = ["coco/train2017/000000000001.jpg", "gqa/images/n0.jpg"]
    demo.missing_images = missing + [f"ocr_vqa/images/{i}.jpg" for i in demo.ocr_dead + demo.ocr_corrupt]
    recs += [{"image": m} for m in missing]
    rng.shuffle(recs)
    out_recs = []
    for i, r in enumerate(recs):
        rid: object = i if rng.random() < 0.15 else f"{rng.getrandbits(40):010x}"
        out_recs.append({"id": rid, "image": r["image"], "conversations": _conversation(rng, True)})
    for j in range(3):
        rec: dict = {"id": f"sharegpt_{j}_{rng.getrandbits(16):x}", "conversations": _conversation(rng, False)}
        if j == 0:
            rec["model"] = ""
        out_recs.append(rec)
    mix = _mirror_path(mirror, origin("llava_instruct:llava_v1_5_mix665k.json"))
    mix.parent.mkdir(parents=True, exist_ok=True)
    mix.write_text(json.dumps(out_recs, indent=1, ensure_ascii=False))
    _add_existing(demo, "llava_instruct:llava_v1_5_mix665k.json", origin("llava_instruct:llava_v1_5_mix665k.json"), mix)

    # blip_laion_cc_sbu_558k-shaped pretrain JSON
    prompts = ["Give a brief description of the image.", "Describe the image concisely.",
               "Render a clear and concise summary of the photo.", "Share a concise interpretation of the image provided."]
    pre_recs = [{"id": f"{i:09d}", "image": name, "conversations": [
        {"from": "human", "value": rng.choice(prompts) + "\n<image>"},
        {"from": "gpt", "value": _text(rng, 4, 14)}]} for i, name in zip(pre_ids, pre)]
    pj = _mirror_path(mirror, origin("llava_pretrain:blip_laion_cc_sbu_558k.json"))
    pj.write_text(json.dumps(pre_recs, indent=1))
    _add_existing(demo, "llava_pretrain:blip_laion_cc_sbu_558k.json", origin("llava_pretrain:blip_laion_cc_sbu_558k.json"), pj)

    demo.counts = {k: len(v) for k, v in images.items()}
    placed["ocr_vqa:images-from-urls"] = demo.counts["ocr_vqa/images"]
    specs = {key: demo_file(_shipped_file(shipped, key), size=f.size, sha256=f.sha256, md5=f.md5, count=placed.get(key))
             for key, f in demo.files.items()}
    specs["ocr_vqa:images-from-urls"] = demo_file(_shipped_file(shipped, "ocr_vqa:images-from-urls"), size=None,
                                                  sha256=None, md5=None, count=placed["ocr_vqa:images-from-urls"])
    write_manifests(manifests, shipped, specs, demo.counts)
    return demo


def _shipped_file(shipped: Catalog, key: str):
    ds, name = key.split(":", 1)
    spec = shipped.dataset(ds).file(name)
    assert spec is not None, f"the shipped manifest {ds} has no file {name}"
    return spec


def _add_existing(demo: DemoMirror, key: str, url: str, path: Path) -> None:
    """Record a file written into the mirror: where it lies, its origin URL, size and hashes."""
    data = path.read_bytes()
    demo.files[key] = DemoFile(key, url, path, len(data), hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest())
