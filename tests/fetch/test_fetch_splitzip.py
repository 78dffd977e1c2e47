"""A zip split over disks (x.z01 ... x.zip, as `zip -s` writes it; MoE-LLaVA's eval_zip): its parts
fetched, joined, and unpacked through a rebuilt central directory (vlmdata.place.splitzip), members
on every disk, plain and zip64 records. The split archives are made by Info-ZIP's `zip -s`, a
writer independent of the reader under test."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fetch_helpers import http

from vlmdata.manifest import load_catalog
from vlmdata.place.splitzip import open_split_zip

pytestmark = pytest.mark.skipif(shutil.which("zip") is None, reason="needs Info-ZIP's `zip -s` to write split archives")


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _split_zip(tmp: Path, *, zip64: bool) -> tuple[Path, list[Path]]:
    """eval/ with a big member spanning disks and small ones after it, zipped in 64 KiB disks."""
    src = tmp / "src"
    (src / "eval/pope/val2014").mkdir(parents=True)
    rng = __import__("random").Random(3)
    (src / "eval/gqa").mkdir()
    (src / "eval/gqa/llava_gqa_testdev_balanced.jsonl").write_bytes(rng.randbytes(150_000))
    for i in range(30):
        (src / f"eval/pope/val2014/COCO_val2014_{i:012d}.jpg").write_bytes(rng.randbytes(3_000))
    out = tmp / "zipped"
    out.mkdir()
    subprocess.run(["zip", "-q", "-r", "-s", "64k", *(["-fz"] if zip64 else []), str(out / "eval_zip.zip"), "eval"],
                   cwd=src, check=True)
    parts = sorted(out.glob("eval_zip.z[0-9]*")) + [out / "eval_zip.zip"]
    assert len(parts) >= 4  # several disks, so members live on more than the first one
    return src, parts


@pytest.mark.parametrize("zip64", [False, True])
def test_reader_finds_members_on_every_disk(tmp_path, zip64):
    src, parts = _split_zip(tmp_path, zip64=zip64)
    joined = tmp_path / "joined"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with open_split_zip(joined, [p.stat().st_size for p in parts]) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        assert max(i.header_offset for i in infos) > sum(p.stat().st_size for p in parts[:-1])  # on the last disk
        for i in infos:
            assert zf.read(i) == (src / i.filename).read_bytes(), i.filename


def test_fetch_joins_the_parts_and_unpacks(cli, manifests, files_server, root, tmp_path):
    src, parts = _split_zip(tmp_path, zip64=False)
    rows = []
    for p in parts:
        shutil.copy(p, files_server.folder / p.name)
        rows.append(f'{{ name = "{p.name}", size = {p.stat().st_size}, sha256 = "unknown", '
                    f'sources = [{http(files_server.url + "/" + p.name)}] }}')
    (manifests.folder / "datasets/ev.toml").write_text(
        'name = "ev"\ntitle = "t"\nlicense = "t"\n\n[[files]]\nname = "eval_zip"\nparts = [' + ", ".join(rows) +
        ']\nplace = { kind = "extract", format = "split-zip", inner = "unknown", to = "ev/eval" }\n')
    r = cli("fetch", "ev", "--keep-archives", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.code == 0, r.err
    assert _tree(root / "ev/eval") == _tree(src / "eval")  # the top folder eval/ mapped away
    kept = root / ".vlmdata/downloads/ev/eval_zip"
    assert json.loads((kept.parent / "eval_zip.disks").read_text())["disk_sizes"] == [p.stat().st_size for p in parts]
    # placed again from the kept joined file: no part is downloaded again
    shutil.rmtree(root / "ev/eval")
    files_server.reset()
    r = cli("fetch", "ev", "--refetch", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.code == 0, r.err
    assert files_server.requests == [] and _tree(root / "ev/eval") == _tree(src / "eval")
    assert not kept.exists() and not (kept.parent / "eval_zip.disks").exists()


def test_split_zip_needs_parts(cli, manifests, root):
    (manifests.folder / "datasets/ev.toml").write_text(
        'name = "ev"\ntitle = "t"\nlicense = "t"\n\n[[files]]\nname = "x.zip"\nsize = "unknown"\nsha256 = "unknown"\n'
        'sources = [{ kind = "http", url = "http://127.0.0.1:9/x.zip" }]\n'
        'place = { kind = "extract", format = "split-zip", inner = "unknown", to = "ev/eval" }\n')
    r = cli("plan", "ev", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.code == 2 and "parts" in r.err


def test_shipped_moe_llava_eval_is_the_split_hub_zip():
    cat = load_catalog()
    spec = cat.dataset("moe_llava_eval").file("eval_zip")
    assert spec.place.format == "split-zip" and spec.place.kind == "extract"
    assert [p.name for p in spec.parts] == [f"eval_zip.z{i:02d}" for i in range(1, 10)] + ["eval_zip.zip"]
    assert all(s.repo_id == "LanguageBind/MoE-LLaVA" for p in spec.parts for s in p.sources)
    lay = cat.layout("moe-llava-eval")
    assert [(e.path, e.store) for e in lay.entries] == [("eval", spec.place.to)]
    assert os.path.basename(spec.place.to) == "eval"
