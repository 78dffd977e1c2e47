"""`fetch --update` against the loopback hub when `main` moved on: a file whose bytes the hub proves
unchanged (its LFS sha256, or the git blob id of a file kept in git) is re-pinned to the new commit
without a download; a changed file, or one the hub gives no content hash for, is downloaded as before.
Requests are counted on the servers: the real download code runs, nothing of it is replaced."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fetch_helpers import HubServer, file_toml, sent_settled, sha256, stamp
from test_fetch_hub_pins import DS_ID, REPO_ID, REPO_KEY, repo_toml  # (the same hub repo and its manifest)

from vlmdata.state import Journal

pytestmark = pytest.mark.usefixtures("hub_online")  # (the loopback hub is asked)

KEY = "j:data.json"
RESOLVE = f"datasets/{DS_ID}/resolve/"


def json_toml() -> str:
    return file_toml("data.json", sources=[f'{{ kind = "hf", repo_type = "dataset", repo_id = "{DS_ID}", '
                                           'revision = "main", path = "data.json" }'],
                     place='{ kind = "file", to = "j/data.json" }')


def fetch(cli, manifests, root, hub, *extra):
    return cli("fetch", *extra, "--manifests", str(manifests.folder), "--root", str(root), "--hf-endpoint",
               hub.hub.url, env={"HF_TOKEN": hub.token or ""})


def lock_of(root: Path) -> dict:
    return json.loads((root / "vlmdata.lock").read_text())["files"]


def gets(hub: HubServer) -> list[str]:
    """Every GET either origin answered (a file's bytes come from the hub itself or from its CDN)."""
    return [p for m, p, _ in hub.hub.requests + hub.cdn.requests if m == "GET"]


def fetched_once(cli, manifests, root, hub, data: bytes, *, lfs: bool) -> Path:
    hub.add(DS_ID, "data.json", data, lfs=lfs)
    hub.add(DS_ID, "other.json", b"{}", lfs=False)
    manifests.dataset("j", json_toml())
    r = fetch(cli, manifests, root, hub, "j")
    assert r.code == 0, r.err
    assert lock_of(root)[KEY]["revision"] == HubServer.COMMIT
    return root / "j/data.json"


@pytest.mark.parametrize("lfs", [True, False], ids=["lfs", "kept-in-git"])
def test_update_to_a_commit_where_the_file_is_unchanged_only_re_pins_it(cli, manifests, root, hub, tmp_path, lfs):
    data = os.urandom(20_000)
    placed = fetched_once(cli, manifests, root, hub, data, lfs=lfs)
    before, old_pin = stamp(placed), lock_of(root)[KEY]
    head = hub.push(DS_ID, {"other.json": b'{"changed": true}'})  # main moves on; data.json is the same
    hub.hub.reset()
    hub.cdn.reset()
    r = fetch(cli, manifests, root, hub, "j", "--update", "--json")
    assert r.code == 0, r.err
    assert gets(hub) == []  # the hub was asked about the file (HEAD), its bytes never sent
    assert hub.hub.count(f"{RESOLVE}main/data.json", "HEAD") >= 1
    assert hub.cdn.requests == [] and sent_settled(hub.cdn) == 0
    out = r.json()
    assert out["bytes"] == 0 and [f["state"] for f in out["files"]] == ["repinned"]
    assert f"from commit {HubServer.COMMIT} to {head}" in r.err and "re-pinned, not downloaded" in r.err
    pin = lock_of(root)[KEY]
    assert (pin["revision"], pin["sha256"], pin["size"]) == (head, old_pin["sha256"], old_pin["size"])
    assert pin.get("blob") == old_pin.get("blob")  # (a file kept in git keeps its checked blob id)
    assert stamp(placed) == before and placed.read_bytes() == data  # the placed file was not touched
    assert Journal(root / ".vlmdata").get(KEY).extra["revision"] == head
    # the human summary says which files were re-pinned, and the lock on another machine names the new commit
    hub.push(DS_ID, {"other.json": b'{"changed": 2}'})
    r = fetch(cli, manifests, root, hub, "j", "--update")
    assert r.code == 0 and "0 fetched, 1 re-pinned without a download" in r.err
    other = tmp_path / "machine2"
    other.mkdir()
    (other / "vlmdata.lock").write_bytes((root / "vlmdata.lock").read_bytes())
    hub.hub.reset()
    hub.cdn.reset()
    assert fetch(cli, manifests, other, hub, "j").code == 0
    assert (other / "j/data.json").read_bytes() == data
    assert all(hub.head in p for p in gets(hub) if p.startswith(RESOLVE))


@pytest.mark.parametrize("lfs", [True, False], ids=["lfs", "kept-in-git"])
def test_update_downloads_a_file_that_changed_at_the_new_commit(cli, manifests, root, hub, lfs):
    placed = fetched_once(cli, manifests, root, hub, os.urandom(20_000), lfs=lfs)
    new = os.urandom(20_000)  # the same size: only the hub's hash tells the two apart
    head = hub.push(DS_ID, {"data.json": new})
    if lfs:  # (push makes a .json a file kept in git; the LFS case stays LFS)
        hub.add(DS_ID, "data.json", new, lfs=True)
    hub.hub.reset()
    hub.cdn.reset()
    r = fetch(cli, manifests, root, hub, "j", "--update", "--json")
    assert r.code == 0, r.err
    assert [f["state"] for f in r.json()["files"]] == ["fetched"] and r.json()["bytes"] == len(new)
    assert len(gets(hub)) >= 1 and (sent_settled(hub.cdn) if lfs else sent_settled(hub.hub, "data.json")) == len(new)
    assert placed.read_bytes() == new
    pin = lock_of(root)[KEY]
    assert (pin["revision"], pin["sha256"], pin["size"]) == (head, sha256(new), len(new))


@pytest.mark.parametrize("when", ["first-fetch", "first-fetch-not-the-blob-id", "update"])
def test_update_downloads_again_when_the_hub_gives_no_content_hash(cli, manifests, root, hub, when):
    """A file kept in git whose ETag is no blob id (some mirrors): nothing proves the bytes the same, so
    --update downloads it, whether the lock never got a blob id (none given, or 40 hex digits the bytes
    do not hash to) or the hub gives none now."""
    data = os.urandom(20_000)
    hub.blob_etags = {"first-fetch": False, "first-fetch-not-the-blob-id": "plain-sha1"}.get(when, True)
    fetched_once(cli, manifests, root, hub, data, lfs=False)
    assert ("blob" in lock_of(root)[KEY]) == (when == "update")
    head = hub.push(DS_ID, {"other.json": b'{"changed": true}'})
    hub.blob_etags = {"first-fetch-not-the-blob-id": "plain-sha1"}.get(when, False)
    hub.hub.reset()
    r = fetch(cli, manifests, root, hub, "j", "--update", "--json")
    assert r.code == 0, r.err
    assert [f["state"] for f in r.json()["files"]] == ["fetched"]
    assert hub.hub.count(f"{RESOLVE}main/data.json", "GET") == 1 and sent_settled(hub.hub, "data.json") == len(data)
    assert lock_of(root)[KEY]["revision"] == head and (root / "j/data.json").read_bytes() == data


@pytest.mark.parametrize("blobs", [True, False], ids=["blob-ids", "no-blob-ids-at-first"])
def test_update_of_a_repo_re_pins_its_unchanged_git_files_without_downloading_them(cli, manifests, root, hub,
                                                                                   blobs):
    files = {"config.json": b'{"hidden_size": 8}', "tokenizer.json": b'{"version": "1.0"}',
             "model.safetensors": os.urandom(50_000)}
    for path, data in files.items():
        hub.add(REPO_ID, path, data, lfs=path.endswith(".safetensors"), repo_type="model")
    manifests.dataset("tiny", repo_toml())
    hub.blob_etags = blobs  # (False: the first fetch could not check a blob id, so none was journaled)
    assert fetch(cli, manifests, root, hub, "tiny").code == 0
    hub.blob_etags = True
    tok = root / "models/tiny-model/tokenizer.json"
    before = stamp(tok)
    head = hub.push(REPO_ID, {"config.json": b'{"hidden_size": 16}'}, repo_type="model")
    hub.hub.reset()
    hub.cdn.reset()
    r = fetch(cli, manifests, root, hub, "tiny", "--update")
    assert r.code == 0, r.err
    assert hub.hub.count("config.json", "GET") == 1 and sent_settled(hub.cdn) == 0  # the changed file; no LFS bytes
    assert hub.hub.count("tokenizer.json", "GET") == (0 if blobs else 1)
    assert (stamp(tok) == before) == blobs and tok.read_bytes() == files["tokenizer.json"]
    assert lock_of(root)[f"{REPO_KEY}/tokenizer.json"]["revision"] == head
    assert Journal(root / ".vlmdata").get(f"{REPO_KEY}/tokenizer.json").extra["revision"] == head
    # named at the new commit as the file downloaded from it is (its address, the endpoint), in the lock and journal
    pins, journal = lock_of(root), Journal(root / ".vlmdata")
    config_source = pins[f"{REPO_KEY}/config.json"]["source"]
    assert head in config_source
    assert pins[f"{REPO_KEY}/tokenizer.json"]["source"] == config_source.replace("config.json", "tokenizer.json")
    assert journal.get(f"{REPO_KEY}/tokenizer.json").source == config_source.replace("config.json", "tokenizer.json")
    assert f"{1 + blobs} file(s) unchanged at commit {head}" in r.err  # the LFS file, and tokenizer.json by its blob
    # the summary counts the repo as fetched and says which of its files only moved to the new commit
    assert f"1 fetched ({1 + blobs} unchanged file(s) in them only re-pinned), 0 re-pinned without a download" in r.err
    # the LFS file (the listing's sha256 checks it: no lock pin of its own) says it is unchanged, with blob ids or
    # without, and its journal entry names the new commit as a download from it would
    lfs = Journal(root / ".vlmdata").get(f"{REPO_KEY}/model.safetensors")
    assert lfs.extra["revision"] == head and lfs.source == config_source.replace("config.json", "model.safetensors")
    assert f"{REPO_KEY}/model.safetensors" not in lock_of(root)
    # --refetch reads the re-pinned file back against its pin at this commit instead of downloading it
    hub.hub.reset()
    r = fetch(cli, manifests, root, hub, REPO_KEY, "--refetch")
    assert r.code == 0, r.err
    assert hub.hub.count("tokenizer.json", "GET") == 0 and hub.hub.count("config.json", "GET") == 0
