"""Source kinds: one module per kind in vlmdata/sources, the same answers for plan, fetch and info."""
from __future__ import annotations

from pathlib import Path

from vlmdata.manifest import Source
from vlmdata.manifest.schema import SOURCE_KINDS
from vlmdata.sources import KINDS, candidates, describe, kind_of
from vlmdata.sources.base import MirrorFile, Ready, Unavailable
from vlmdata.sources.hf import HubFile
from vlmdata.state import Root

SOURCES_DIR = Path(__file__).resolve().parents[2] / "vlmdata" / "sources"


def test_every_manifest_kind_is_one_module():
    assert set(KINDS) == set(SOURCE_KINDS)
    for name, kind in KINDS.items():
        assert kind.name == name and (SOURCES_DIR / f"{name}.py").is_file()


def test_candidates_per_kind(tmp_path):
    root = Root(tmp_path / "root")
    links = root.store_path("sam/links.tsv")
    links.parent.mkdir(parents=True)
    links.write_text("file_name\tcdn_link\nsa_1.tar\thttps://cdn.example/sa_1.tar?sig=secret\n")
    srcs = (Source("http", url="https://host.example/a.zip"),
            Source("hf", repo_type="dataset", repo_id="o/r", revision="main", path="a.zip"),
            Source("linkfile", path="sam/links.tsv", name_column="file_name", url_column="cdn_link"),
            Source("urllist", path="l.json", list_format="json-dict", url_key="u"),
            Source("manual", url="https://drive.example", note="ask a person"))
    http, hf, link, urls, manual = candidates("sa_1.tar", srcs, root, download_path=tmp_path / "dl")
    assert isinstance(http, Ready) and http.location.url == "https://host.example/a.zip"
    assert isinstance(hf, HubFile) and hf.label == "hf://datasets/o/r@main/a.zip"
    assert isinstance(link, Ready) and link.location.url.endswith("?sig=secret") and "secret" not in link.label
    assert isinstance(urls, Unavailable) and not urls.manual
    assert isinstance(manual, Unavailable) and manual.manual and str(tmp_path / "dl") in manual.reason
    mirrored = candidates("a.zip", srcs[:1], root, download_path=tmp_path / "dl", mirror=str(tmp_path))[0]
    assert isinstance(mirrored, MirrorFile) and mirrored.path == tmp_path / "host.example/a.zip"


def test_plan_labels_follow_the_options():
    http = Source("http", url="https://host.example/a.zip")
    hf = Source("hf", repo_type="model", repo_id="o/r", revision="abc", path="x.bin")
    assert kind_of(http).plan_label(http, "http://mirror.local", None) == "http://mirror.local/host.example/a.zip"
    assert kind_of(hf).plan_label(hf, None, "https://hf-mirror.example") == f"{describe(hf)} via https://hf-mirror.example"
    assert kind_of(hf).plan_label(hf, None, None) == "hf://models/o/r@abc/x.bin"
