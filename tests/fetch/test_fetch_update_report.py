"""`fetch --update` as the user sees it, and on many processes.

The line before the run keeps files that are only checked against the branch's newest commit apart
from files really to download (how many bytes a checked file costs is known only once the hub is
asked), and the summary after it says how many were re-pinned unchanged and how many downloaded.
Then two ``--shard i/2`` processes given the same ``--update``, or one ``--update`` run as Ray tasks on
a local cluster, end with the lock and journal of one process's ``--update``: the changed file
downloaded once, the unchanged ones never. The loopback hub of tests/fetch/server.py; requests and
bytes are counted on its servers.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fetch_helpers import HubServer, file_toml, sent_settled, sha256, stamp, start_fetch, subprocess_env
from test_fetch_ray import cluster  # noqa: F401 - the fixture: a local Ray cluster, started on demand

from vlmdata.state import Journal, LockFile
from vlmdata.units import human_bytes

pytestmark = pytest.mark.usefixtures("hub_online")  # (the loopback hub is asked)

DS_ID = "demo-org/update-report"
NAMES = ["a.json", "b.bin", "c.bin", "d.json"]  # (.bin: LFS files; .json: files kept in git)
RESOLVE = f"datasets/{DS_ID}/resolve/"


def hub_toml(name: str) -> str:
    return file_toml(name, sources=[f'{{ kind = "hf", repo_type = "dataset", repo_id = "{DS_ID}", '
                                    f'revision = "main", path = "{name}" }}'],
                     place=f'{{ kind = "file", to = "j/{name}" }}')


def args(manifests, root: Path, hub: HubServer, *extra: str) -> list[str]:
    return ["fetch", "j", *extra, "--manifests", str(manifests.folder), "--root", str(root),
            "--hf-endpoint", hub.hub.url]


def fetch(cli, manifests, root, hub, *extra):
    return cli(*args(manifests, root, hub, *extra), env={"HF_TOKEN": hub.token or ""})


def published(cli, manifests, root, hub, names=NAMES) -> dict[str, bytes]:
    """The dataset's files on the hub, fetched (and pinned at ``HubServer.COMMIT``) into ``root``."""
    files = {n: os.urandom(20_000) for n in names}
    for n, data in files.items():
        hub.add(DS_ID, n, data, lfs=n.endswith(".bin"))
    manifests.dataset("j", *[hub_toml(n) for n in names])
    r = fetch(cli, manifests, root, hub)
    assert r.code == 0, r.err
    return files


def pins_and_journal(root: Path) -> dict:
    """What --update leaves in the lock and the journal, less times: per file its hash, size, source and commit."""
    pins = {k: (e.sha256, e.size, e.source, e.revision, e.blob)
            for k, e in LockFile(root / "vlmdata.lock").entries().items()}
    journal = {k: (e.size, e.sha256, e.source, e.to, e.files, (e.extra or {}).get("revision"))
               for k, e in Journal(root / ".vlmdata").entries().items()}
    return {"pins": pins, "journal": journal}


def content_gets(hub: HubServer, name: str) -> int:
    """GETs of ``name``'s bytes: from the hub itself (a file kept in git) or from its CDN (an LFS file)."""
    data = hub.files[(f"datasets/{DS_ID}", name)][0]
    return hub.hub.count(f"{RESOLVE}main/{name}", "GET") + hub.cdn.count(f"cdn/{sha256(data)}", "GET")


def announced(err: str) -> str:
    """The line a fetch says before its run."""
    return next(line for line in err.splitlines() if line.startswith(("fetching ", "checking ")))


@pytest.mark.parametrize("changed", [[], ["b.bin"], NAMES], ids=["none-changed", "one-changed", "all-changed"])
def test_the_line_before_an_update_counts_checked_files_apart_and_the_summary_what_was_re_pinned(
        cli, manifests, root, hub, changed):
    published(cli, manifests, root, hub)
    hub.push(DS_ID, {"other.txt": b"x", **{n: os.urandom(25_000) for n in changed}})
    r = fetch(cli, manifests, root, hub, "--update")
    assert r.code == 0, r.err
    # the same line whatever changed: no byte figure, which only the hub's answers could give
    assert announced(r.err) == (f"checking 4 of 4 file(s) in {root} for updates (pinned Hub files): re-pinned "
                                "without a download if unchanged, downloaded if changed (the bytes are known once "
                                "the Hub answers)")
    assert "to download" not in r.err
    assert (f"{len(changed)} fetched, {4 - len(changed)} re-pinned without a download (unchanged), 0 already "
            f"present, 0 failed; {human_bytes(25_000 * len(changed))} downloaded") in r.err


def test_a_file_to_download_and_files_to_check_are_counted_apart(cli, manifests, root, hub):
    published(cli, manifests, root, hub)
    (root / "j/c.bin").unlink()  # (placed no more: downloaded at the new commit, whose size only the hub knows)
    (root / "j/d.json").unlink()
    r = fetch(cli, manifests, root, hub)  # without --update the line is as ever, the sizes from the pins
    assert r.code == 0, r.err
    assert announced(r.err) == f"fetching 2 of 4 file(s) into {root} (40.0 kB to download)"
    assert "re-pinned" not in r.err
    hub.push(DS_ID, {"a.json": os.urandom(25_000)})
    (root / "j/c.bin").unlink()
    r = fetch(cli, manifests, root, hub, "--update", "--shard", "0/1")
    assert r.code == 0, r.err
    assert announced(r.err) == (f"fetching 1 of 4 file(s) into {root} (0 B to download, 1 of unknown size), "
                                "shard 0/1; checking 3 pinned Hub file(s) for updates: re-pinned without a download "
                                "if unchanged, downloaded if changed (the bytes are known once the Hub answers)")
    assert "2 fetched, 2 re-pinned without a download (unchanged), 0 already present, 0 failed; 45.0 kB" in r.err


@pytest.fixture(scope="module")
def online_nodes():
    """Processes started from here on (a Ray cluster's nodes, their workers) ask the hub: the test suite's
    HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE (either turns huggingface_hub offline) are not theirs. (This
    process read them at import; hub_online patches that.)"""
    old = {k: os.environ.pop(k, None) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    yield
    os.environ.update({k: v for k, v in old.items() if v is not None})


@pytest.fixture(scope="module")
def online_cluster(online_nodes, cluster):
    """test_fetch_ray's local Ray cluster (a head and two workers on 127.0.0.1), started after online_nodes."""
    return cluster


def on_shards(cli, manifests, root, hub) -> list[dict]:
    """``--update`` as two ``--shard i/2`` processes at once: their two reports."""
    env = subprocess_env(HF_TOKEN=hub.token or "")
    procs = [start_fetch(*args(manifests, root, hub, "--update", "--shard", f"{i}/2", "--json"), env=env)
             for i in range(2)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        reports.append(json.loads(out))
    assert all(rep["files"] for rep in reports)  # each shard had a share
    return reports


def on_ray(cli, manifests, root, hub, address: str) -> list[dict]:
    r = fetch(cli, manifests, root, hub, "--update", "--ray", address, "--json")
    assert r.code == 0, r.err
    return [r.json()]


@pytest.mark.parametrize("how", ["shards", "ray"])
def test_an_update_split_over_processes_ends_as_one_process_update_and_downloads_only_the_changed_file(
        request, cli, manifests, root, tmp_path, how):
    # (a hub without a token: a Ray cluster's workers do not see the driver's HF_TOKEN)
    hub = HubServer().start()
    request.addfinalizer(hub.stop)
    address = request.getfixturevalue("online_cluster").address if how == "ray" else None
    files = published(cli, manifests, root, hub)
    one = tmp_path / "one"
    shutil.copytree(root, one)
    changed = os.urandom(20_000)  # the same size: only the hub's hash tells the two apart
    head = hub.push(DS_ID, {"b.bin": changed})
    # the reference: one process's --update of a copy of the root
    r = fetch(cli, manifests, one, hub, "--update")
    assert r.code == 0, r.err
    hub.hub.reset()
    hub.cdn.reset()
    before = {n: stamp(root / "j" / n) for n in NAMES}
    reports = on_shards(cli, manifests, root, hub) if address is None else on_ray(cli, manifests, root, hub, address)
    states = {f["key"]: f["state"] for rep in reports for f in rep["files"]}
    assert states == {"j:a.json": "repinned", "j:b.bin": "fetched", "j:c.bin": "repinned", "j:d.json": "repinned"}
    assert sum(len(rep["files"]) for rep in reports) == len(NAMES)  # (with shards: each file in one share only)
    assert sum(rep["bytes"] for rep in reports) == len(changed)
    # the changed file's bytes came once; the unchanged ones were asked about, never sent
    assert content_gets(hub, "b.bin") == 1 and sent_settled(hub.cdn) == len(changed)
    assert [content_gets(hub, n) for n in ("a.json", "c.bin", "d.json")] == [0, 0, 0]
    assert sent_settled(hub.hub) == 0  # (no file kept in git was sent)
    assert (root / "j/b.bin").read_bytes() == changed
    for n in ("a.json", "c.bin", "d.json"):
        assert stamp(root / "j" / n) == before[n] and (root / "j" / n).read_bytes() == files[n]
    # the lock and the journal are those of one process's --update: every file at the new commit
    assert pins_and_journal(root) == pins_and_journal(one)
    assert {p[3] for p in pins_and_journal(root)["pins"].values()} == {head}
    assert not list((root / ".vlmdata/claims").glob("*.claim"))  # every claim given back
