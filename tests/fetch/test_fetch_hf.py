"""hf sources against an HF-style endpoint (HEAD with X-Repo-Commit/ETag/X-Linked-Size, 302 to a CDN origin)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fetch_helpers import HubServer, file_toml, http, sent_settled, sha256

from vlmdata.state import Journal

pytestmark = pytest.mark.usefixtures("hub_online")  # (the loopback hub is asked)

REPO_ID = "demo-org/demo-set"


def hf(path: str, revision: str = "main", repo_type: str = "dataset") -> str:
    return (f'{{ kind = "hf", repo_type = "{repo_type}", repo_id = "{REPO_ID}", revision = "{revision}", '
            f'path = "{path}" }}')


def run(cli, manifests, root, hub: HubServer, *extra, token: str | None = None, via_env: bool = False):
    env = {"HF_TOKEN": token if token is not None else (hub.token or "")}
    args = ["fetch", "t", "--manifests", str(manifests.folder), "--root", str(root), *extra]
    if via_env:
        env["HF_ENDPOINT"] = hub.hub.url
    else:
        args += ["--hf-endpoint", hub.hub.url]
    return cli(*args, env=env)


def test_lfs_file_through_the_cdn_redirect(cli, manifests, root, hub):
    data = os.urandom(300_000)
    hub.add(REPO_ID, "images/chunk.bin", data, lfs=True)
    manifests.dataset("t", file_toml("images/chunk.bin", sources=[hf("images/chunk.bin")],
                                     place='{ kind = "file", to = "t/chunk.bin" }'))
    r = run(cli, manifests, root, hub, via_env=True)
    assert r.code == 0, r.err
    assert (root / "t/chunk.bin").read_bytes() == data
    # the bytes came from the CDN origin, which never saw the token; the hub did
    assert sent_settled(hub.cdn) == len(data)
    assert all(auth is None for _, auth in hub.cdn.auth_seen)
    assert any(auth == f"Bearer {hub.token}" for _, auth in hub.hub.auth_seen)
    # no second copy in the hub cache: only our downloads folder and the placed file
    from huggingface_hub import constants

    assert not (Path(constants.HF_HUB_CACHE) / f"datasets--{REPO_ID.replace('/', '--')}").exists()
    pin = json.loads((root / "vlmdata.lock").read_text())["files"]["t:images/chunk.bin"]
    assert pin["sha256"] == sha256(data) and pin["revision"] == HubServer.COMMIT
    assert Journal(root / ".vlmdata").get("t:images/chunk.bin").source.startswith(f"hf://datasets/{REPO_ID}@main")
    assert hub.token not in r.out + r.err


def test_small_file_served_by_the_hub_itself(cli, manifests, root, hub):
    data = json.dumps([{"id": 1}]).encode()
    hub.add(REPO_ID, "meta.json", data, lfs=False)
    manifests.dataset("t", file_toml("meta.json", size=len(data), sources=[hf("meta.json")],
                                     place='{ kind = "file", to = "t/meta.json" }'))
    r = run(cli, manifests, root, hub)
    assert r.code == 0, r.err
    assert (root / "t/meta.json").read_bytes() == data


def test_bad_token_never_shows_and_falls_back(cli, manifests, root, hub, files_server):
    data = os.urandom(10_000)
    hub.add(REPO_ID, "x.bin", data)
    (files_server.folder / "x.bin").write_bytes(data)
    manifests.dataset("t", file_toml("x.bin", sha=sha256(data), sources=[hf("x.bin"), http(f"{files_server.url}/x.bin")],
                                     place='{ kind = "file", to = "t/x.bin" }'))
    bad = "hf_" + "W" * 34
    r = run(cli, manifests, root, hub, "-v", token=bad)
    assert r.code == 0, r.err
    assert (root / "t/x.bin").read_bytes() == data
    assert Journal(root / ".vlmdata").get("t:x.bin").source.endswith("/x.bin")
    # and when nothing else works, the error names the repo but never the token
    manifests.dataset("t", file_toml("x.bin", sha=sha256(data), sources=[hf("x.bin")],
                                     place='{ kind = "file", to = "t/x.bin" }'))
    r = run(cli, manifests, root, hub, "--refetch", token=bad)
    assert r.code == 1
    assert REPO_ID in r.err and "HF_TOKEN" in r.err
    assert bad not in r.out + r.err


def test_lfs_sha256_reported_by_the_hub_is_checked(cli, manifests, root, hub):
    data = os.urandom(50_000)
    hub.add(REPO_ID, "x.bin", data, advertised_sha256="ab" * 32)
    manifests.dataset("t", file_toml("x.bin", sources=[hf("x.bin")], place='{ kind = "file", to = "t/x.bin" }'))
    r = run(cli, manifests, root, hub)
    assert r.code == 1
    assert "the hub's LFS hash" in r.err and "ab" * 32 in r.err and sha256(data) in r.err
    assert not (root / "t/x.bin").exists()
    assert not (root / "vlmdata.lock").exists()


def test_missing_file_at_revision(cli, manifests, root, hub):
    hub.add(REPO_ID, "x.bin", b"x")
    manifests.dataset("t", file_toml("y.bin", sources=[hf("y.bin", revision=HubServer.COMMIT)],
                                     place='{ kind = "file", to = "t/y.bin" }'))
    r = run(cli, manifests, root, hub)
    assert r.code == 1 and "no such file at this revision" in r.err


def test_offline_mode_is_explained(cli, manifests, root, hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.add(REPO_ID, "x.bin", b"x")
    manifests.dataset("t", file_toml("x.bin", sources=[hf("x.bin")], place='{ kind = "file", to = "t/x.bin" }'))
    r = run(cli, manifests, root, hub)
    assert r.code == 1 and "HF_HUB_OFFLINE" in r.err
    assert hub.hub.requests == []
