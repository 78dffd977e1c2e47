"""The demo mirror: deterministic, fast, shaped like the origins, and consistent with its manifests."""
from __future__ import annotations

import hashlib
import json
import tarfile
import zipfile

from demo.build_mirror import build_demo_mirror
from vlmdata.manifest import load_catalog


def _tree(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_deterministic(tmp_path):
    a = build_demo_mirror(tmp_path / "a")
    b = build_demo_mirror(tmp_path / "b")
    assert _tree(a.out) == _tree(b.out)


def test_manifests_match_the_files(demo):
    cat = load_catalog([demo.manifests])
    for key, f in demo.files.items():
        ds, name = key.split(":", 1)
        spec = cat.dataset(ds).file(name)
        assert spec is not None, key
        assert spec.size == f.size == f.path.stat().st_size
        assert spec.sha256 == f.sha256 == hashlib.sha256(f.path.read_bytes()).hexdigest()
    # same file names and targets as the shipped manifests
    shipped = load_catalog()
    for ds in ("coco", "gqa", "textvqa", "vg", "llava_pretrain", "llava_instruct", "sam", "ocr_vqa"):
        for spec in cat.dataset(ds).files:
            real = shipped.datasets[ds].file(spec.name) if ds in shipped.datasets else None
            if real is not None:
                assert spec.place.to == real.place.to, spec.key


def test_archives_are_shaped_like_the_real_ones(demo):
    names = zipfile.ZipFile(demo.file("coco:train2017.zip").path).namelist()
    assert all(n.startswith("train2017/") for n in names)
    assert any(n.endswith(".jpg") and len(n.split("/")[-1]) == len("000000000009.jpg") for n in names)
    assert all(n.startswith("VG_100K/") for n in zipfile.ZipFile(demo.file("vg:images.zip").path).namelist())
    assert all(n.startswith("VG_100K_2/") for n in zipfile.ZipFile(demo.file("vg:images2.zip").path).namelist())
    pre = [n for n in zipfile.ZipFile(demo.file("llava_pretrain:images.zip").path).namelist() if n.endswith(".jpg")]
    assert all(len(n.split("/")[0]) == 5 and len(n.split("/")[1]) == len("004539375.jpg") for n in pre)  # no top folder
    members = tarfile.open(demo.file("sam:sa_000000.tar").path).getnames()
    assert {m.rsplit(".", 1)[1] for m in members} == {"jpg", "json"}
    index = json.loads(demo.file("ocr_vqa:dataset.json").path.read_text())
    assert all("imageURL" in v for v in index.values())
    assert set(demo.ocr_dead) <= set(index) and set(demo.ocr_corrupt) <= set(index)


def test_jsons_are_consistent_with_the_images(demo):
    mix = json.loads(demo.file("llava_instruct:llava_v1_5_mix665k.json").path.read_text())
    prefixes = {r["image"].split("/")[0] for r in mix if "image" in r}
    assert prefixes == {"coco", "gqa", "ocr_vqa", "textvqa", "vg"}
    assert any("image" not in r for r in mix[-3:])  # text-only records near the tail
    assert any(isinstance(r["id"], int) for r in mix) and any(isinstance(r["id"], str) for r in mix)
    assert all(1 <= len(r["conversations"]) // 2 <= 5 for r in mix)
    assert set(demo.missing_images) <= {r.get("image") for r in mix}
    pre = json.loads(demo.file("llava_pretrain:blip_laion_cc_sbu_558k.json").path.read_text())
    assert all(len(r["conversations"]) == 2 and r["conversations"][0]["value"].endswith("<image>") for r in pre)


def test_demo_manifests_are_the_shipped_ones_with_the_demo_files(demo):
    """Derived, not restated: only the fields the demo's small files change differ from the catalog."""
    from msgspec.structs import replace

    cat, shipped = load_catalog([demo.manifests]), load_catalog()
    changed = dict(size=None, size_approx=None, sha256=None, md5=None, optional=False, sources=())
    for name in ("coco", "gqa", "ocr_vqa", "textvqa", "vg", "llava_pretrain", "llava_instruct", "sam"):
        assert cat.dataset(name).origin.parent == demo.manifests / "datasets"
        for spec in cat.dataset(name).files:
            real = shipped.dataset(name).file(spec.name)
            assert real is not None, spec.key
            same = {"count": None, "unpacked_size": None}
            assert replace(spec, place=replace(spec.place, **same), **changed) == \
                replace(real, place=replace(real.place, **same), **changed), spec.key
            http = [s for s in real.sources if s.kind in ("http", "hf")]
            if http:  # served from the mirror under the shipped origin
                assert [s.kind for s in spec.sources] == ["http"]
            else:  # links file, URL list, manual: the shipped sources, after a demo stand-in at most
                assert spec.sources[-len(real.sources):] == real.sources
    for name in ("llava", "llava-pretrain-case"):
        lay, real = cat.layout(name), shipped.layout(name)
        assert [(e.path, e.store, e.dataset, e.kind) for e in lay.entries] == \
               [(e.path, e.store, e.dataset, e.kind) for e in real.entries]
        assert all(e.optional for e in lay.entries if e.dataset in ("mmmu_subjects", "vicuna-13b-v1.5", "clip-vit-large-patch14-336"))
        assert all(e.count == demo.counts[e.store] for e in lay.entries if e.kind == "dir" and e.store in demo.counts)
