"""A user of Hub sources across machines and time, against the loopback hub: the lock copied to a
second machine keeps the pinned commit while `main` moves on, `--update` moves to it on purpose,
a damaged copy at the pinned commit is refused, a gated repo says what to do (and the token is
never written anywhere, nor a password in the endpoint), a hub mirror over HTTPS with a CDN on another
host, a kill mid-file."""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from fetch_helpers import (Blob, Fault, HubServer, LoopbackServer, file_toml, kill, self_signed, sent_settled, sha256,
                           start_fetch, subprocess_env, wait_for)

from vlmdata.state import Journal, Root
from vlmdata.state.partial import part_path

pytestmark = pytest.mark.usefixtures("hub_online")  # (the loopback hub is asked)

REPO_ID = "tiny-org/tiny-model"
REPO_KEY = f"tiny:{REPO_ID}"
DS_ID = "demo-org/demo-json"


def repo_toml(revision: str = "main") -> str:
    return f"""[[files]]
name = "{REPO_ID}"
size = "unknown"
sha256 = "unknown"
sources = [{{ kind = "hfrepo", repo_type = "model", repo_id = "{REPO_ID}", revision = "{revision}" }}]
place = {{ kind = "repo", to = "models/tiny-model" }}
"""


def json_toml() -> str:
    return file_toml("data.json", sources=[f'{{ kind = "hf", repo_type = "dataset", repo_id = "{DS_ID}", '
                                           'revision = "main", path = "data.json" }'],
                     place='{ kind = "file", to = "j/data.json" }')


def publish(hub: HubServer, files: dict[str, bytes] | None = None) -> dict[str, bytes]:
    files = files or {"config.json": b'{"hidden_size": 8}', "tokenizer.json": b'{"version": "1.0"}',
                      "model.safetensors": os.urandom(200_000), "sub/extra.safetensors": os.urandom(30_000),
                      "old.safetensors": os.urandom(5_000)}
    for path, data in files.items():
        hub.add(REPO_ID, path, data, lfs=path.endswith(".safetensors"), repo_type="model")
    return files


def fetch(cli, manifests, root, hub, *extra, token: str | None = None):
    return cli("fetch", *extra, "--manifests", str(manifests.folder), "--root", str(root), "--hf-endpoint",
               hub.hub.url, env={"HF_TOKEN": (hub.token or "") if token is None else token})


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def second_machine(root: Path, tmp_path: Path) -> Path:
    other = tmp_path / "machine2"
    other.mkdir()
    shutil.copy(root / "vlmdata.lock", other / "vlmdata.lock")
    return other


def lock_of(root: Path) -> dict:
    return json.loads((root / "vlmdata.lock").read_text())["files"]


def test_a_second_machine_gets_the_pinned_commit_of_a_repo_after_main_moved(cli, manifests, root, hub, tmp_path):
    files = publish(hub)
    manifests.dataset("tiny", repo_toml())
    plan = cli("plan", "tiny", "--json", "--manifests", str(manifests.folder), "--root", str(root)).json()["items"][0]
    assert plan["download_bytes"] is None and not plan["size_exact"]  # never fetched anywhere: unknown
    assert fetch(cli, manifests, root, hub, "tiny").code == 0
    pinned = lock_of(root)[REPO_KEY]
    assert pinned["revision"] == HubServer.COMMIT and pinned["size"] == sum(map(len, files.values()))
    # the publisher moves main: one file changed, one added, one deleted
    head = hub.push(REPO_ID, {"config.json": b'{"hidden_size": 16}', "new.json": b"{}", "old.safetensors": None},
                    repo_type="model")
    other = second_machine(root, tmp_path)
    hub.hub.reset()
    # plan and info read the lock: the pinned commit and its exact bytes, without a request
    plan = cli("plan", "tiny", "--json", "--manifests", str(manifests.folder), "--root", str(other)).json()["items"][0]
    assert plan["download_bytes"] == pinned["size"] and plan["size_exact"]
    assert f"@{HubServer.COMMIT}" in plan["source"] and "pinned in vlmdata.lock" in plan["source"]
    info = cli("info", "tiny", "--manifests", str(manifests.folder), "--root", str(other))
    assert f"commit {HubServer.COMMIT}" in info.out and f"{pinned['size']:,} bytes" in info.out
    assert hub.hub.requests == []
    r = fetch(cli, manifests, other, hub, "tiny")
    assert r.code == 0, r.err
    assert f"at commit {HubServer.COMMIT}, pinned in vlmdata.lock" in r.err and "--update" in r.err
    assert tree(other / "models/tiny-model") == files  # exactly the pinned commit's files
    asked = [p for _, p, _ in hub.hub.requests]
    assert asked and all(HubServer.COMMIT in p for p in asked) and not any("main" in p or head in p for p in asked)
    assert lock_of(other)[REPO_KEY]["revision"] == HubServer.COMMIT


def test_an_hf_file_on_a_branch_is_fetched_at_its_pinned_commit(cli, manifests, root, hub, tmp_path):
    old = os.urandom(20_000)
    hub.add(DS_ID, "data.json", old, lfs=False)
    manifests.dataset("j", json_toml())
    assert fetch(cli, manifests, root, hub, "j").code == 0
    assert lock_of(root)["j:data.json"]["revision"] == HubServer.COMMIT
    hub.push(DS_ID, {"data.json": os.urandom(20_000)})  # re-uploaded on main
    other = second_machine(root, tmp_path)
    hub.hub.reset()
    r = fetch(cli, manifests, other, hub, "j")
    assert r.code == 0, r.err
    assert (other / "j/data.json").read_bytes() == old
    assert {p for _, p, _ in hub.hub.requests} == {f"datasets/{DS_ID}/resolve/{HubServer.COMMIT}/data.json"}


def test_update_moves_a_repo_to_the_branch_head_fetching_only_what_changed(cli, manifests, root, hub, tmp_path):
    files = publish(hub)
    manifests.dataset("tiny", repo_toml())
    assert fetch(cli, manifests, root, hub, "tiny").code == 0
    new_extra = os.urandom(30_000)  # the same size, other bytes: only the LFS hash tells them apart
    changes = {"config.json": b'{"hidden_size": 16}', "sub/extra.safetensors": new_extra, "new.json": b"{}",
               "old.safetensors": None}
    head = hub.push(REPO_ID, changes, repo_type="model")
    hub.hub.reset()
    hub.cdn.reset()
    r = fetch(cli, manifests, root, hub, "tiny")
    assert r.code == 0 and "already here" in r.err and hub.hub.requests == []  # the pin holds
    # an update that fails halfway leaves no mix behind: the next plain fetch restores the pinned commit
    hub.cdn.fault(f"cdn/{sha256(new_extra)}", Fault("status", times=-1, status=404))
    assert fetch(cli, manifests, root, hub, "tiny", "--update").code == 1
    assert lock_of(root)[REPO_KEY]["revision"] == HubServer.COMMIT
    r = fetch(cli, manifests, root, hub, "tiny")
    assert r.code == 0, r.err
    assert tree(root / "models/tiny-model") == files
    hub.cdn.reset()
    r = fetch(cli, manifests, root, hub, "tiny", "--update", "--json")
    assert r.code == 0, r.err
    assert f"from commit {HubServer.COMMIT} to {head}" in r.err and "removed 1 file(s)" in r.err
    want = {k: v for k, v in {**files, **changes}.items() if v is not None}
    assert tree(root / "models/tiny-model") == want  # the new commit's files, and no other
    assert sent_settled(hub.cdn) == len(new_extra)  # of the LFS files, only the changed one came again
    pins = lock_of(root)
    assert pins[REPO_KEY]["revision"] == head
    assert pins[f"{REPO_KEY}/config.json"]["sha256"] == sha256(changes["config.json"])  # replaced
    assert f"{REPO_KEY}/old.safetensors" not in Journal(root / ".vlmdata").entries()
    # the new lock on another machine: the new commit
    other = second_machine(root, tmp_path)
    assert fetch(cli, manifests, other, hub, "tiny").code == 0
    assert tree(other / "models/tiny-model") == want


def test_update_replaces_the_pin_of_an_hf_file(cli, manifests, root, hub):
    hub.add(DS_ID, "data.json", os.urandom(20_000), lfs=False)
    manifests.dataset("j", json_toml())
    assert fetch(cli, manifests, root, hub, "j").code == 0
    new = os.urandom(21_000)
    head = hub.push(DS_ID, {"data.json": new})
    r = fetch(cli, manifests, root, hub, "j", "--update")
    assert r.code == 0, r.err
    assert (root / "j/data.json").read_bytes() == new
    pin = lock_of(root)["j:data.json"]
    assert (pin["sha256"], pin["size"], pin["revision"]) == (sha256(new), len(new), head)


def test_a_damaged_copy_at_the_pinned_commit_is_refused_and_the_good_one_kept(cli, manifests, root, hub, tmp_path):
    good = os.urandom(40_000)
    hub.add(DS_ID, "data.json", good, lfs=True)
    manifests.dataset("j", json_toml())
    assert fetch(cli, manifests, root, hub, "j").code == 0
    cdn_path = f"cdn/{sha256(good)}"
    hub.cdn.blobs[cdn_path] = Blob(data=os.urandom(40_000))  # the copy the hub sends downloads to is now damaged
    r = fetch(cli, manifests, root, hub, "j", "--refetch")
    assert r.code == 1  # (a file that failed; exit 2 is kept for bad input)
    line = next(x for x in r.err.splitlines() if "expected " in x and "got " in x)
    assert f"@{HubServer.COMMIT}/data.json" in line and sha256(good) in line and "got " in line
    assert f"{hub.cdn.url}/{cdn_path}" in line  # where the bytes came from
    assert hub.token not in r.out + r.err
    assert (root / "j/data.json").read_bytes() == good  # the placed copy is untouched
    assert not [p for p in (root / ".vlmdata/downloads").rglob("*") if p.is_file()]  # no .part left
    # a repo on a fresh machine: the file's LFS hash from the hub's list, the CDN's bytes wrong
    files = publish(hub)
    hub.cdn.blobs[f"cdn/{sha256(files['model.safetensors'])}"] = Blob(data=os.urandom(200_000))
    manifests.dataset("tiny", repo_toml())
    fresh = tmp_path / "fresh"
    r = fetch(cli, manifests, fresh, hub, "tiny")
    assert r.code == 1
    assert "model.safetensors" in r.err and "not the file the hub's file list describes" in r.err
    assert sha256(files["model.safetensors"]) in r.err and "--hf-endpoint" in r.err
    assert not (fresh / "models/tiny-model/model.safetensors").exists()
    assert not [p for p in (fresh / ".vlmdata/downloads").rglob("*") if p.is_file()]


def test_refetch_of_a_repo_mends_what_verify_finds_and_keeps_the_rest(cli, manifests, root, hub):
    files = publish(hub)
    manifests.dataset("tiny", repo_toml())
    assert fetch(cli, manifests, root, hub, "tiny").code == 0
    (root / "models/tiny-model/model.safetensors").write_bytes(os.urandom(200_000))
    ver = cli("verify", "tiny", "--deep", "--manifests", str(manifests.folder), "--root", str(root))
    assert ver.code == 1
    advice = f"vlmdata fetch {REPO_KEY} --refetch"  # (the repo: fetch selects it, not its files)
    assert advice in ver.out
    hub.cdn.reset()
    r = fetch(cli, manifests, root, hub, REPO_KEY, "--refetch")
    assert r.code == 0, r.err
    assert tree(root / "models/tiny-model") == files
    assert sent_settled(hub.cdn) == len(files["model.safetensors"])  # read back, not downloaded again: the others


@pytest.mark.parametrize("token", ["", "hf_" + "G" * 34], ids=["no-token", "token-without-access"])
def test_a_gated_repo_says_to_accept_its_terms_and_the_token_is_written_nowhere(cli, manifests, root, token, tmp_path):
    hub = HubServer().start()
    try:
        publish(hub)
        hub.gated.add(REPO_ID)
        manifests.dataset("tiny", repo_toml())
        r = fetch(cli, manifests, root, hub, "tiny", "--json", "-v", token=token)
        assert r.code == 1
        err = r.json()["files"][0]["error"]
        assert f"https://huggingface.co/{REPO_ID}" in err and "accept its terms" in err and "HF_TOKEN" in err
        assert err.count("GatedRepo") == 1  # said once for the repo, not once per file
        assert "check the network" not in r.err
        hub.granted.add(token or "hf_" + "A" * 34)
        r2 = fetch(cli, manifests, root, hub, "tiny", "--json", "-v", token=token or "hf_" + "A" * 34)
        assert r2.code == 0, r2.err
        for secret in {token, "hf_" + "A" * 34} - {""}:
            assert secret not in r.out + r.err + r2.out + r2.err
            for p in root.rglob("*"):
                assert not p.is_file() or secret.encode() not in p.read_bytes(), p
    finally:
        hub.stop()


def test_a_hub_mirror_over_https_with_its_cdn_elsewhere(cli, manifests, root, tmp_path, monkeypatch):
    cert, tls = self_signed(tmp_path)
    token = "hf_" + "M" * 34
    hub = HubServer(token=token, tls=tls).start()
    plain = HubServer(token=token).start()
    try:
        files = publish(plain, publish(hub))
        hub.redirect_gets = True  # files kept in git are served from the CDN too, as some mirrors do
        manifests.dataset("tiny", repo_toml())
        r = fetch(cli, manifests, root, hub, "tiny")
        assert r.code == 1 and "CERTIFICATE_VERIFY_FAILED" in r.err and "REQUESTS_CA_BUNDLE" in r.err
        # the CA the requests way, while the environment's SSL_CERT_FILE names another bundle (httpx reads that)
        import certifi

        monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        r = fetch(cli, manifests, root, hub, "tiny")
        assert r.code == 0, r.err
        assert any(auth == f"Bearer {token}" for _, auth in hub.hub.auth_seen)
        assert hub.cdn.auth_seen and all(auth is None for _, auth in hub.cdn.auth_seen)  # not on another host
        # the same pins as through a plain endpoint: they do not depend on the mirror
        via_plain = tmp_path / "plain"
        assert fetch(cli, manifests, via_plain, plain, "tiny").code == 0
        pins, plain_pins = lock_of(root), lock_of(via_plain)
        assert {k: (v["sha256"], v["size"], v["revision"]) for k, v in pins.items()} == \
            {k: (v["sha256"], v["size"], v["revision"]) for k, v in plain_pins.items()}
        # a hub on https that sends a download to a plain-http address is refused
        cdn = LoopbackServer().start()
        try:
            cdn.blobs.update(hub.cdn.blobs)
            hub.cdn_base = cdn.url
            r = fetch(cli, manifests, tmp_path / "downgrade", hub, "tiny")
            assert r.code == 1 and "not HTTPS: refused" in r.err
            assert not (tmp_path / "downgrade/models").exists()  # (git-kept files too: their GET went there)
            lfs = {f"cdn/{sha256(d)}" for k, d in files.items() if k.endswith(".safetensors")}
            assert not lfs & {p for _, p, _ in cdn.requests}  # an LFS file's address is refused before any request
        finally:
            cdn.stop()
    finally:
        hub.stop()
        plain.stop()


def test_a_killed_fetch_of_a_repo_resumes_its_large_file_and_checks_it(manifests, root, hub, cli):
    big = os.urandom(12 << 20)
    hub.add(REPO_ID, "config.json", b"{}", lfs=False, repo_type="model")
    hub.add(REPO_ID, "model.safetensors", big, lfs=True, repo_type="model")
    manifests.dataset("tiny", repo_toml())
    cdn_path = f"cdn/{sha256(big)}"
    part = part_path(Root(root).download_path("tiny", f"{REPO_ID}/model.safetensors"))
    args = ("fetch", "tiny", "--connections", "1", "--manifests", str(manifests.folder), "--root", str(root),
            "--hf-endpoint", hub.hub.url)
    hub.cdn.default_throttle = 1 << 20  # 1 MiB/s: the kill lands long before the end
    proc = start_fetch(*args, env=subprocess_env(HF_TOKEN=hub.token))
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= 2 << 20, what="2 MiB in the .part")
    finally:
        _, err = kill(proc, signal.SIGKILL)
    kept = part.stat().st_size
    assert kept < len(big) and hub.token not in err
    hub.cdn.default_throttle = 0
    hub.cdn.reset()
    r = fetch(cli, manifests, root, hub, "tiny", "--connections", "1")
    assert r.code == 0, r.err
    assert (root / "models/tiny-model/model.safetensors").read_bytes() == big
    assert sent_settled(hub.cdn, cdn_path) == len(big) - kept  # resumed, not restarted
    assert hub.cdn.requests[0][2] == f"bytes={kept}-"
    # bytes damaged on disk while nothing ran: the resumed file fails its hash and is downloaded again
    Journal(root / ".vlmdata").forget(REPO_KEY)
    Journal(root / ".vlmdata").forget(f"{REPO_KEY}/model.safetensors")
    (root / "models/tiny-model/model.safetensors").unlink()
    hub.cdn.default_throttle = 1 << 20
    proc = start_fetch(*args, env=subprocess_env(HF_TOKEN=hub.token))
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= 2 << 20, what="2 MiB in the .part")
    finally:
        kill(proc, signal.SIGKILL)
    with open(part, "r+b") as fh:
        fh.write(b"\0" * 1024)
    hub.cdn.default_throttle = 0
    r = fetch(cli, manifests, root, hub, "tiny", "--connections", "1")
    assert r.code == 0, r.err
    assert (root / "models/tiny-model/model.safetensors").read_bytes() == big


def test_a_pin_taken_from_a_mirror_folder_keeps_its_hub_commit(cli, manifests, root, hub, tmp_path):
    old = os.urandom(20_000)
    hub.add(DS_ID, "data.json", old, lfs=False)
    manifests.dataset("j", json_toml())
    assert fetch(cli, manifests, root, hub, "j").code == 0
    mirror = tmp_path / "usb"
    assert cli("mirror", "build", str(mirror), "--root", str(root), "--manifests", str(manifests.folder)).code == 0
    far = tmp_path / "far"  # the lock is not copied: the mirror's own vlmdata.lock pins the file there
    r = cli("fetch", "j", "--root", str(far), "--mirror", str(mirror), "--manifests", str(manifests.folder))
    assert r.code == 0, r.err
    assert lock_of(far)["j:data.json"] == lock_of(root)["j:data.json"]  # the near machine's pin, commit and all
    hub.push(DS_ID, {"data.json": os.urandom(20_000)})
    r = fetch(cli, manifests, far, hub, "j", "--refetch")  # later, from the hub itself
    assert r.code == 0, r.err
    assert (far / "j/data.json").read_bytes() == old


def test_a_password_in_the_hub_endpoint_is_written_nowhere(cli, manifests, root):
    # a hub mirror behind basic auth: user:password in HF_ENDPOINT's URL; the lock and journal name the endpoint
    hub = HubServer().start()
    try:
        publish(hub)
        hub.add(DS_ID, "data.json", b'[{"id": 1}]', lfs=False)
        manifests.dataset("tiny", repo_toml())
        manifests.dataset("j", json_toml())
        secret = "pw-" + "Q" * 20
        endpoint = hub.hub.url.replace("://", f"://someone:{secret}@", 1)
        r = cli("fetch", "tiny", "j", "-v", "--json", "--manifests", str(manifests.folder), "--root", str(root),
                "--hf-endpoint", endpoint, env={"HF_TOKEN": ""})
        assert r.code == 0, r.err
        assert all(v["source"].endswith(" via " + hub.hub.url.replace("://", "://…@")) for v in lock_of(root).values())
        assert secret not in r.out + r.err
        for p in root.rglob("*"):
            assert not p.is_file() or secret.encode() not in p.read_bytes(), p
    finally:
        hub.stop()


def test_messages_cut_credentials_out_of_addresses():
    from vlmdata.net.urls import scrub, shown

    assert shown("https://someone:pw@hub.example/x.bin?sig=1") == "https://…@hub.example/x.bin?…"
    assert shown("http://127.0.0.1:8080/a") == "http://127.0.0.1:8080/a"
    assert scrub("GET http://u:pw@host:1/a?x=y failed (ask someone@example.com)") == \
        "GET http://…@host:1/a?… failed (ask someone@example.com)"
