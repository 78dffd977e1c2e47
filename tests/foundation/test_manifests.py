"""Every shipped manifest loads; broken manifests fail with the file and key named."""
from __future__ import annotations

from pathlib import Path

import pytest

from vlmdata.errors import UserError
from vlmdata.manifest import load_catalog
from vlmdata.manifest.catalog import shipped_manifest_dir


EXPECTED_DATASETS = {"coco", "gqa", "ocr_vqa", "textvqa", "vg", "sam", "allava", "vflan", "sharegpt4v",
                     "sharegpt4v_web", "llava_pretrain", "llava_instruct", "moe_llava", "mmmu"}
EXPECTED_LAYOUTS = {"llava", "sharegpt4v", "moe-llava", "llava-pretrain-case"}


def test_every_shipped_manifest_loads_and_cross_references_hold():
    cat = load_catalog()
    assert EXPECTED_DATASETS <= set(cat.datasets)
    assert EXPECTED_LAYOUTS <= set(cat.layouts)
    for path in sorted(shipped_manifest_dir().glob("*/*.toml")):
        kind = path.parent.name
        assert path.stem in getattr(cat, kind), f"{path} is not registered under its file name"


def test_shipped_facts_for_coco_are_the_reference_ones():
    coco = load_catalog().dataset("coco")
    train = coco.file("train2017.zip")
    assert train.size == 19_336_861_798
    assert train.sources[0].url == "http://images.cocodataset.org/zips/train2017.zip"
    assert train.place.inner == "train2017" and train.place.to == "coco/train2017"
    assert train.place.count == 118_287


def test_unknown_facts_stay_unknown():
    """The reference has no byte size or checksum for GQA: the manifest must not invent one."""
    gqa = load_catalog().dataset("gqa").default_files[0]
    assert gqa.size is None and gqa.sha256 is None


def test_shipped_hf_sources_pin_a_commit_or_say_why_not():
    for ds in load_catalog().datasets.values():
        for f in ds.files:
            for s in list(f.sources) + [s for p in f.parts for s in p.sources]:
                if s.kind in ("hf", "hfrepo") and len(s.revision or "") != 40:
                    assert s.note, f"{f.key}: hf revision {s.revision!r} is not a commit and the source has no note"



def test_moe_llava_script_paths_cited_are_the_repos_own():
    """PKU-YuanGroup/MoE-LLaVA keeps its scripts in scripts/v1/ (eval: scripts/v1/eval/{llava,moe_llava};
    no scripts/v1_5 at 6cb5f66): moe_llava_eval's description cited scripts/v1_5/eval/moe_llava."""
    text = "\n".join(p.read_text() for p in sorted(shipped_manifest_dir().rglob("*.toml")))
    assert "v1_5/eval/moe_llava" not in text
    assert "scripts/v1/eval/{llava,moe_llava}/*.sh" in load_catalog().dataset("moe_llava_eval").description

def _bad(tmp_path: Path, body: str) -> UserError:
    _write(tmp_path / "m" / "datasets" / "bad.toml", body)
    with pytest.raises(UserError) as e:
        load_catalog([tmp_path / "m"])
    return e.value


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


GOOD_FILE = """
[[files]]
name = "a.zip"
size = 10
sha256 = "unknown"
sources = [{ kind = "http", url = "http://x.org/a.zip" }]
place = { kind = "extract", inner = "", to = "bad/a" }
"""


def test_unknown_key_names_file_and_key(tmp_path):
    err = _bad(tmp_path, 'name = "bad"\ntitle = "t"\nlicense = "l"\ncolour = "red"\n' + GOOD_FILE)
    assert "bad.toml" in str(err) and "'colour'" in str(err) and "unknown key" in str(err)


def test_unknown_key_deep_inside_a_file_table(tmp_path):
    body = 'name = "bad"\ntitle = "t"\nlicense = "l"\n' + GOOD_FILE.replace('to = "bad/a"', 'to = "bad/a", intto = "x"')
    err = _bad(tmp_path, body)
    assert "files[0].place.intto" in str(err)


def test_missing_required_key(tmp_path):
    err = _bad(tmp_path, 'name = "bad"\nlicense = "l"\n' + GOOD_FILE)
    assert "'title'" in str(err) and "required" in str(err)


@pytest.mark.parametrize("field,value,needle", [
    ("sha256", '"abc"', "sha256"),
    ("size", '"big"', "integer"),
    ("size", "-5", "integer"),
])
def test_bad_values(tmp_path, field, value, needle):
    body = 'name = "bad"\ntitle = "t"\nlicense = "l"\n' + GOOD_FILE.replace(
        f"{field} = " + ('"unknown"' if field == "sha256" else "10"), f"{field} = {value}")
    err = _bad(tmp_path, body)
    assert f"files[0].{field}" in str(err) and needle in str(err)


def test_placement_cannot_escape_the_root(tmp_path):
    err = _bad(tmp_path, 'name = "bad"\ntitle = "t"\nlicense = "l"\n' + GOOD_FILE.replace('"bad/a"', '"../etc"'))
    assert "place.to" in str(err) and ".." in str(err)


def test_bad_source_kind_and_url(tmp_path):
    err = _bad(tmp_path, 'name = "bad"\ntitle = "t"\nlicense = "l"\n' + GOOD_FILE.replace('kind = "http"', 'kind = "ftp"'))
    assert "sources[0].kind" in str(err) and "one of" in str(err)
    err = _bad(tmp_path, 'name = "bad"\ntitle = "t"\nlicense = "l"\n' + GOOD_FILE.replace("http://x.org", "ftp://x.org"))
    assert "sources[0].url" in str(err)


def test_duplicate_file_names(tmp_path):
    err = _bad(tmp_path, 'name = "bad"\ntitle = "t"\nlicense = "l"\n' + GOOD_FILE + GOOD_FILE)
    assert "appears twice" in str(err)


def test_invalid_toml_syntax(tmp_path):
    err = _bad(tmp_path, 'name = "bad\n')
    assert "not valid TOML" in str(err) and "bad.toml" in str(err)


def test_layout_must_reference_a_known_dataset_and_its_placed_paths(tmp_path, manifests, writer):
    write = writer
    write(manifests / "layouts" / "broken.toml", """
        name = "broken"
        title = "t"
        [[entries]]
        path = "x"
        dataset = "nosuch"
        """)
    with pytest.raises(UserError, match="unknown dataset 'nosuch'"):
        load_catalog([manifests])
    write(manifests / "layouts" / "broken.toml", """
        name = "broken"
        title = "t"
        [[entries]]
        path = "x"
        store = "tiny/elsewhere"
        dataset = "tiny"
        """)
    with pytest.raises(UserError, match="not placed by dataset 'tiny'"):
        load_catalog([manifests])


def test_blend_must_reference_known_layout_and_files(tmp_path, manifests, writer):
    write = writer
    write(manifests / "blends" / "mix.toml", """
        name = "mix"
        title = "t"
        layout = "tinylay"
        [[entries]]
        name = "a"
        dataset = "tiny"
        file = "nope.json"
        """)
    with pytest.raises(UserError, match="has no file 'nope.json'"):
        load_catalog([manifests])
    write(manifests / "blends" / "mix.toml", """
        name = "mix"
        title = "t"
        layout = "tinylay"
        [[entries]]
        name = "a"
        dataset = "tiny"
        file = "labels.json"
        sample = "half"
        """)
    with pytest.raises(UserError, match="sample"):
        load_catalog([manifests])


def test_extra_manifests_add_and_override_by_name(tmp_path, manifests, writer):
    write = writer
    write(manifests / "datasets" / "coco.toml", """
        name = "coco"
        title = "My local COCO"
        license = "test"
        [[files]]
        name = "train2017.zip"
        size = 123
        sha256 = "unknown"
        sources = [{ kind = "http", url = "http://mirror.local/train2017.zip" }]
        place = { kind = "extract", inner = "train2017", to = "coco/train2017" }
        """)
    cat = load_catalog([manifests])
    assert cat.dataset("tiny").title == "A tiny dataset"
    assert cat.dataset("coco").title == "My local COCO"
    assert cat.dataset("coco").file("train2017.zip").size == 123


def test_select_files(manifests):
    cat = load_catalog([manifests])
    assert [f.name for f in cat.select_files(["tiny"])] == ["pics.zip", "labels.json"]
    assert [f.name for f in cat.select_files(["tiny:extra.tar", "tiny"])] == ["extra.tar", "pics.zip", "labels.json"]
    with pytest.raises(UserError, match="has no file"):
        cat.select_files(["tiny:nope"])
    with pytest.raises(UserError, match="did you mean tiny"):
        cat.select_files(["tinny"])


def test_a_manifest_is_named_after_its_file(manifests, writer):
    """`charts.toml` holding name = "chart" (or two files of a folder claiming one name) is refused,
    naming the file and both names."""
    text = (manifests / "datasets" / "tiny.toml").read_text()
    (manifests / "datasets" / "tiny2.toml").write_text(text)  # a copy, its name left as it was
    with pytest.raises(UserError) as e:
        load_catalog([manifests])
    assert "name 'tiny' is not the file's name 'tiny2'" in str(e.value)
    assert str(manifests / "datasets" / "tiny2.toml") in str(e.value) and "rename it to tiny.toml" in e.value.hint


def test_manifests_given_a_file_says_it_takes_a_folder(manifests):
    with pytest.raises(UserError) as e:
        load_catalog([manifests / "datasets" / "tiny.toml"])
    assert "is a file; it takes a folder with datasets/" in str(e.value) and "datasets/" in e.value.hint


def test_an_overriding_dataset_that_breaks_a_shipped_layout_is_named(manifests, writer):
    """A user dataset named coco that places elsewhere: the shipped llava layout's error names the
    user's file as the one defining coco."""
    writer(manifests / "datasets" / "coco.toml", """
        name = "coco"
        title = "charts, by mistake named coco"
        license = "test"
        [[files]]
        name = "charts.zip"
        size = 10
        sha256 = "unknown"
        sources = [{ kind = "http", url = "http://example.org/charts.zip" }]
        place = { kind = "extract", inner = "", to = "charts" }
        """)
    with pytest.raises(UserError) as e:
        load_catalog([manifests])
    assert "not placed by dataset 'coco'" in str(e.value)
    assert f"as {manifests / 'datasets' / 'coco.toml'} defines it, places: charts" in e.value.hint


def test_a_misspelt_required_key_is_named_as_unknown(tmp_path):
    """`too` for `to`: the error names `too` and the key it stands for, not only a missing `to`."""
    body = 'name = "bad"\ntitle = "t"\nlicense = "l"\n' + GOOD_FILE.replace('to = "bad/a"', 'too = "bad/a"')
    err = _bad(tmp_path, body)
    assert "key 'files[0].place.too': unknown key (did you mean 'to'?" in str(err)
    assert "'to' is required but missing" in str(err) and "rename 'too' to 'to'" in err.hint


def test_a_misspelt_optional_key_gets_a_did_you_mean(tmp_path):
    body = 'name = "bad"\ntitle = "t"\nlicense = "l"\n' + GOOD_FILE.replace('to = "bad/a"', 'to = "bad/a", coutn = 3')
    err = _bad(tmp_path, body)
    assert "files[0].place.coutn': unknown key (did you mean 'count'? known here:" in str(err)


def test_a_missing_key_beside_real_keys_is_only_missing(tmp_path):
    """`count` is read after `to`: a table lacking `to` but holding `count` must not call `count` unknown."""
    body = 'name = "bad"\ntitle = "t"\nlicense = "l"\n' + GOOD_FILE.replace('to = "bad/a"', 'count = 3')
    err = _bad(tmp_path, body)
    assert "key 'files[0].place.to': is required but missing" in str(err) and "unknown" not in str(err)


def test_no_two_keys_of_the_schema_pass_for_misspellings_of_each_other():
    """A missing key's look-alike among the keys not read yet is called its misspelling. That is only
    safe while no two real keys of one table are that alike: a new key that is fails here (then check
    that the pair never shares a table, and list it)."""
    import difflib
    import re

    from vlmdata.manifest import reader, schema

    keys = sorted(set(re.findall(r't\.\w+\("(\w+)"', Path(schema.__file__).read_text())))
    assert {"to", "count", "name_column", "url_column"} <= set(keys)  # (the pattern still finds them)
    alike = {(a, b) for a in keys for b in keys
             if a < b and difflib.SequenceMatcher(None, a, b).ratio() >= reader._TYPO_RATIO}
    assert alike == {("file", "files"), ("note", "notes")}  # blend entry vs dataset; source vs dataset
