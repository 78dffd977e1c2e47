"""Hub repos as fetchable items (`hfrepo` sources, placement `repo`) against the loopback hub:
listed once, each file through the same engine (LFS sha256 checked, others pinned), placed and
journaled file by file, the listing pinned in vlmdata.lock, linked into a layout."""
from __future__ import annotations

import json
import os

import pytest
from fetch_helpers import Fault, HubServer, sent_settled, sha256

from vlmdata.state import Journal

pytestmark = pytest.mark.usefixtures("hub_online")  # (the loopback hub is asked)

REPO_ID = "tiny-org/tiny-model"


def repo_toml(include: str = '["*.json", "*.safetensors"]', revision: str = "main", extra: str = "") -> str:
    return f"""[[files]]
name = "{REPO_ID}"
size = "unknown"
sha256 = "unknown"
sources = [{{ kind = "hfrepo", repo_type = "model", repo_id = "{REPO_ID}", revision = "{revision}", include = {include} }}]
place = {{ kind = "repo", to = "models/tiny-model" }}
{extra}"""


def model_files(hub: HubServer) -> dict[str, bytes]:
    files = {"config.json": json.dumps({"model_type": "llama"}).encode(),
             "model.safetensors": os.urandom(200_000), "sub/extra.safetensors": os.urandom(70_000),
             "tokenizer.json": b'{"version": "1.0"}', "README.md": b"# not fetched (not included)\n"}
    for path, data in files.items():
        hub.add(REPO_ID, path, data, lfs=path.endswith(".safetensors"), repo_type="model")
    return files


def run(cli, manifests, root, hub, *extra):
    return cli("fetch", *extra, "--manifests", str(manifests.folder), "--root", str(root), "--hf-endpoint", hub.hub.url,
               env={"HF_TOKEN": hub.token or ""})


def test_a_model_repo_is_fetched_file_by_file_and_pinned(cli, manifests, root, hub):
    files = model_files(hub)
    manifests.dataset("tiny", repo_toml())
    r = run(cli, manifests, root, hub, "tiny")
    assert r.code == 0, r.err
    placed = root / "models/tiny-model"
    got = {p.relative_to(placed).as_posix(): p.read_bytes() for p in placed.rglob("*") if p.is_file()}
    assert got == {k: v for k, v in files.items() if k != "README.md"}
    # LFS files came through the CDN redirect, with the hub's sha256 checked; nothing went to the HF cache
    assert sent_settled(hub.cdn) == len(files["model.safetensors"]) + len(files["sub/extra.safetensors"])
    lock = json.loads((root / "vlmdata.lock").read_text())["files"]
    pin = lock[f"tiny:{REPO_ID}"]
    assert pin["revision"] == HubServer.COMMIT and pin["size"] == sum(len(v) for k, v in files.items() if k != "README.md")
    # files without an LFS hash are pinned on their own; LFS ones are checked against the hub's
    assert lock[f"tiny:{REPO_ID}/config.json"]["sha256"] == sha256(files["config.json"])
    assert f"tiny:{REPO_ID}/model.safetensors" not in lock
    journal = Journal(root / ".vlmdata")
    assert journal.get(f"tiny:{REPO_ID}").files == 4
    assert journal.get(f"tiny:{REPO_ID}/sub/extra.safetensors").to == "models/tiny-model/sub/extra.safetensors"
    # status and verify know the repo (its folder, as journaled)
    st = cli("status", "--manifests", str(manifests.folder), "--root", str(root), "--json")
    assert st.code == 0, st.err
    assert "complete" in st.out
    ver = cli("verify", "tiny", "--deep", "--manifests", str(manifests.folder), "--root", str(root), "--json")
    assert ver.code == 0, ver.out + ver.err
    assert ver.json()["datasets"][0]["files"] == 5  # the repo and its 4 files
    # a changed weight file is found by the deep check (against the hash the fetch verified)
    (placed / "model.safetensors").write_bytes(files["model.safetensors"][::-1])
    ver = cli("verify", "tiny", "--deep", "--manifests", str(manifests.folder), "--root", str(root), "--json")
    assert ver.code == 1 and any(p["kind"] == "sha256" and p["path"].endswith("model.safetensors")
                                 for p in ver.json()["datasets"][0]["problems"])
    (placed / "model.safetensors").write_bytes(files["model.safetensors"])
    # run again: everything is there, no request at all
    hub.hub.reset()
    hub.cdn.reset()
    r = run(cli, manifests, root, hub, "tiny")
    assert r.code == 0, r.err
    assert hub.hub.requests == [] and hub.cdn.requests == []


def test_the_pinned_commit_is_listed_again_not_the_branch(cli, manifests, root, hub):
    model_files(hub)
    manifests.dataset("tiny", repo_toml())
    assert run(cli, manifests, root, hub, "tiny").code == 0
    hub.hub.reset()
    r = run(cli, manifests, root, hub, "tiny", "--refetch")
    assert r.code == 0, r.err
    listed = [p for m, p, _ in hub.hub.requests if p.startswith("api/")]
    assert listed == [f"api/models/{REPO_ID}/revision/{HubServer.COMMIT}"]
    assert all(HubServer.COMMIT in p for m, p, _ in hub.hub.requests if "/resolve/" in p)


def test_a_changed_file_list_at_the_pinned_commit_is_refused(cli, manifests, root, hub):
    model_files(hub)
    manifests.dataset("tiny", repo_toml())
    assert run(cli, manifests, root, hub, "tiny").code == 0
    manifests.dataset("tiny", repo_toml(include='["*.json"]'))
    r = run(cli, manifests, root, hub, "tiny", "--refetch")
    assert r.code == 1
    assert "not the pinned one" in r.err and "vlmdata.lock" in r.err


def test_a_wrong_lfs_hash_fails_that_file_and_the_repo_is_not_placed(cli, manifests, root, hub):
    files = model_files(hub)
    hub.add(REPO_ID, "model.safetensors", files["model.safetensors"], lfs=True, repo_type="model",
            advertised_sha256="cd" * 32)
    manifests.dataset("tiny", repo_toml())
    r = run(cli, manifests, root, hub, "tiny")
    assert r.code == 1
    assert "model.safetensors" in r.err and "cd" * 32 in r.err
    assert not (root / "models/tiny-model/model.safetensors").exists()
    journal = Journal(root / ".vlmdata")
    assert journal.get(f"tiny:{REPO_ID}") is None  # the repo is not complete
    assert journal.get(f"tiny:{REPO_ID}/config.json") is not None  # its other files are kept
    assert f"tiny:{REPO_ID}" not in json.loads((root / "vlmdata.lock").read_text())["files"]


def test_an_interrupted_repo_resumes_with_the_missing_file_only(cli, manifests, root, hub):
    files = model_files(hub)
    manifests.dataset("tiny", repo_toml())
    big = f"cdn/{sha256(files['model.safetensors'])}"
    # the CDN fails the big file: the run fails, the other files are placed and journaled
    hub.cdn.fault(big, Fault("status", times=-1, status=404))
    r = run(cli, manifests, root, hub, "tiny")
    assert r.code == 1 and "model.safetensors" in r.err
    assert (root / "models/tiny-model/sub/extra.safetensors").is_file()
    assert not (root / "models/tiny-model/model.safetensors").exists()
    # the next run: only the big file, and its connection is cut once (resumed from the .part)
    hub.cdn.reset()
    hub.cdn.fault(big, Fault("drop", times=1, after=120_000))
    r = run(cli, manifests, root, hub, "tiny")
    assert r.code == 0, r.err
    assert (root / "models/tiny-model/model.safetensors").read_bytes() == files["model.safetensors"]
    assert sent_settled(hub.cdn, big) == len(files["model.safetensors"])  # no byte twice
    assert sent_settled(hub.cdn) == sent_settled(hub.cdn, big)  # the other files were not fetched again
    assert any(rng for _, p, rng in hub.cdn.requests if p == big)  # a Range request resumed it


def test_a_repo_is_linked_into_a_layout_and_planned(cli, manifests, root, hub):
    files = model_files(hub)
    manifests.dataset("tiny", repo_toml())
    (manifests.folder / "layouts").mkdir()
    (manifests.folder / "layouts/ckpt.toml").write_text(
        'name = "ckpt"\ntitle = "t"\n[[entries]]\npath = "checkpoints/tiny-model"\nstore = "models/tiny-model"\n'
        'dataset = "tiny"\n')
    plan = cli("plan", "--layout", "ckpt", "--manifests", str(manifests.folder), "--root", str(root), "--json")
    assert plan.code == 0, plan.err
    assert [i["key"] for i in json.loads(plan.out)["items"]] == [f"tiny:{REPO_ID}"]
    r = run(cli, manifests, root, hub, "--layout", "ckpt")
    assert r.code == 0, r.err
    view = root / "layouts/ckpt/checkpoints/tiny-model"
    assert (view / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert (view / "model.safetensors").stat().st_ino == (root / "models/tiny-model/model.safetensors").stat().st_ino
    # once listed, the plan knows the exact bytes
    (root / "models/tiny-model/model.safetensors").unlink()
    Journal(root / ".vlmdata").forget(f"tiny:{REPO_ID}")
    plan = cli("plan", "tiny", "--manifests", str(manifests.folder), "--root", str(root), "--json")
    assert json.loads(plan.out)["download_bytes"] == len(files["model.safetensors"])


def test_all_files_but_pickled_weights_when_safetensors_are_there(cli, manifests, root, hub):
    files = model_files(hub)
    hub.add(REPO_ID, "pytorch_model.bin", os.urandom(5_000), lfs=True, repo_type="model")
    hub.add(REPO_ID, ".gitattributes", b"*.bin filter=lfs\n", lfs=False, repo_type="model")
    manifests.dataset("tiny", repo_toml(include="[]"))
    r = run(cli, manifests, root, hub, "tiny")
    assert r.code == 0, r.err
    placed = root / "models/tiny-model"
    assert sorted(p.relative_to(placed).as_posix() for p in placed.rglob("*") if p.is_file()) == sorted(files)


def test_repo_placement_needs_an_hfrepo_source(cli, manifests, root):
    manifests.dataset("bad", """[[files]]
name = "x"
size = "unknown"
sha256 = "unknown"
sources = [{ kind = "http", url = "http://127.0.0.1:9/x" }]
place = { kind = "repo", to = "models/x" }
""")
    r = cli("plan", "bad", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.code == 2 and "hfrepo" in r.err
