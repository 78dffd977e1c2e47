"""`vlmdata fetch --ray`: a local Ray cluster of three nodes on this machine, the loopback mirror as origin.

One cluster for the module (a head and two workers, one CPU each, no dashboard, everything on
127.0.0.1), the demo datasets plus a file in three parts, and the same fetch on one machine as
the reference: the Ray fetch must equal it file for file and byte for byte, also after a worker
node is killed mid-run and the same command is run again.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from fetch_helpers import LoopbackServer, Manifests, kill, root_state, split_dataset, start_fetch, store_tree, wait_for

from tests.conftest import run_vlmdata
from vlmdata.state.claims import read_holder

SETS = ["coco", "gqa", "ocr_vqa", "textvqa", "vg", "llava_instruct", "llava_pretrain", "sam", "split"]
NODE = dict(num_cpus=1, object_store_memory=80 << 20)


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # every node on the loopback address, not the machine's outward one: the variable for the processes
    # Ray starts (and the drivers the tests start), the constant it set at import for this one
    old = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_TMPDIR")}
    old_cluster = ray_constants.ENABLE_RAY_CLUSTER
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    temp = tempfile.mkdtemp(prefix="vlmray-", dir="/tmp")  # (short: Ray's sockets live there)
    # Ray also writes "the current cluster" into RAY_TMPDIR/ray, /tmp/ray by default, a folder only an
    # earlier Ray run makes: a fresh machine has none. Ours, inside the cluster's own folder.
    os.environ["RAY_TMPDIR"] = temp
    os.makedirs(os.path.join(temp, "ray"))
    c = Cluster(initialize_head=True, head_node_args=dict(include_dashboard=False, temp_dir=temp, **NODE))
    c.workers = [c.add_node(**NODE) for _ in range(2)]
    c.wait_for_nodes()
    assert c.address.startswith("127.0.0.1:"), c.address
    yield c
    c.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
    ray_constants.ENABLE_RAY_CLUSTER = old_cluster
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def origin(demo, tmp_path_factory):
    srv = LoopbackServer(demo.mirror).start()
    extra = Manifests(tmp_path_factory.mktemp("manifests"))
    split_dataset(extra, srv)
    srv.manifests = f"{demo.manifests}{os.pathsep}{extra.folder}"
    yield srv
    srv.stop()


def _args(demo, origin, root: Path, *extra: str) -> list[str]:
    if not (root / "sam/sa1b_links.txt").exists():
        (root / "sam").mkdir(parents=True)
        shutil.copy(demo.sam_links, root / "sam/sa1b_links.txt")
    return ["fetch", *SETS, "--manifests", origin.manifests, "--root", str(root), "--mirror", origin.url, *extra]


@pytest.fixture(scope="module")
def reference(demo, origin, tmp_path_factory):
    """The same fetch on one machine, no Ray."""
    root = tmp_path_factory.mktemp("one") / "root"
    origin.reset()
    r = run_vlmdata(*_args(demo, origin, root, "--json"))
    assert r.code == 0, r.err
    return SimpleNamespace(root=root, report=r.json(), sent=dict(origin.bytes_sent))


def _files(report: dict) -> list[tuple]:
    """A report's files, less what differs from run to run (times, sources)."""
    return [(f["key"], f["state"], f["to"], f["size"], f["sha256"], f["files"]) for f in report["files"]]


def test_a_ray_fetch_equals_a_one_machine_fetch(cluster, demo, origin, reference, tmp_path):
    root = tmp_path / "root"
    r = run_vlmdata(*_args(demo, origin, root, "--ray", cluster.address, "--url-chunk", "2", "--json"))
    assert r.code == 0, r.err
    assert store_tree(root) == store_tree(reference.root)  # file for file, byte for byte
    assert root_state(root) == root_state(reference.root)  # the same journal, pins and URL-list report
    rep = r.json()
    assert _files(rep) == _files(reference.report)  # one report, the same as the one machine's
    assert len(rep["nodes"]) >= 2 and sum(n["tasks"] for n in rep["nodes"].values()) >= len(SETS)
    assert "tasks" in r.err and "img/s" in r.err and "nodes:" in r.err  # the driver's one progress view
    assert not list((root / ".vlmdata/claims").glob("*.claim"))


def test_a_one_machine_fetch_and_a_ray_fetch_share_a_root(cluster, demo, origin, reference, tmp_path):
    root = tmp_path / "root"
    origin.reset()
    origin.default_throttle = 12 << 10  # both are still at work when the other starts
    local = start_fetch(*_args(demo, origin, root))
    try:
        r = run_vlmdata(*_args(demo, origin, root, "--ray", cluster.address, "--url-chunk", "2"))
        _, err = local.communicate(timeout=120)
    finally:
        origin.default_throttle = 0
        if local.poll() is None:
            kill(local)
    assert r.code == 0 and local.returncode == 0, r.err + err.decode()
    # between them, every byte once (each waited for what the other held), but for images that are never saved
    # (corrupt ones): the second to reach the list tries them again, as any later run of an unfinished list does
    unsaved = {_path(f["url"]) for rep in root_state(reference.root)["reports"].values() for f in rep["failed"]}
    twice = {k: (v, reference.sent.get(k)) for k, v in origin.bytes_sent.items()
             if v != reference.sent.get(k) and k not in unsaved}
    assert twice == {}, r.err + err.decode()
    assert store_tree(root) == store_tree(reference.root)
    state, ref = root_state(root), root_state(reference.root)
    assert state["journal"] == ref["journal"] and state["pins"] == ref["pins"]
    # (which of the two wrote the list's report, and so which images it counts as saved or already there, varies)
    assert [{k: rep[k] for k in ("total", "dead", "failed")} for rep in state["reports"].values()] == \
        [{k: rep[k] for k in ("total", "dead", "failed")} for rep in ref["reports"].values()]


def _path(url: str) -> str:
    """Where the mirror serves ``url`` (host/path)."""
    parts = urlsplit(url)
    return parts.netloc + parts.path


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _worker_on_a_task(cluster, claims: Path):
    """A worker node one of whose processes holds a claim right now (is downloading), and the claim's name."""
    raylets = {w.all_processes["raylet"][0].process.pid: w for w in cluster.workers}
    for p in sorted(claims.glob("*%3A*.claim")):  # a file's, a part's or a chunk's (not the journal's mutex)
        holder = read_holder(p)
        node = raylets.get(_parent(holder.pid)) if holder is not None else None
        if node is not None:
            return node, p.name
    return None


def test_a_worker_node_killed_mid_task_loses_nothing_but_time(cluster, demo, origin, reference, tmp_path):
    root = tmp_path / "root"
    args = _args(demo, origin, root, "--ray", cluster.address, "--url-chunk", "2", "--json")
    origin.default_throttle = 12 << 10  # ~1-4 s a file: time to see who works on what
    proc = start_fetch(*args)
    try:
        busy = []
        wait_for(lambda: busy.append(_worker_on_a_task(cluster, root / ".vlmdata/claims")) or busy[-1], timeout=60,
                 what="a worker node busy with a task")
        victim, claim = busy[-1]
        cluster.workers.remove(victim)
        cluster.remove_node(victim, allow_graceful=False)  # its raylet and workers killed, mid-download
        out, err = proc.communicate(timeout=120)
    finally:
        origin.default_throttle = 0
        if proc.poll() is None:
            kill(proc)
    err = err.decode()
    assert proc.returncode in (0, 1) and "Traceback" not in err, err  # finished through Ray's retries, or
    again = run_vlmdata(*args)                                         # said to run the same command again
    assert again.code == 0, again.err
    assert store_tree(root) == store_tree(reference.root)
    assert root_state(root) == root_state(reference.root)
    assert not (root / ".vlmdata/claims" / claim).exists()
    cluster.workers.append(cluster.add_node(**NODE))  # (the cluster as the next test expects it)


def test_ray_not_installed_says_how_to_install_it(demo, origin, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as without the extra
    r = run_vlmdata(*_args(demo, origin, tmp_path / "root", "--ray", "auto"))
    assert r.code == 2
    assert "pip install 'vlmdata[ray]'" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "root/.vlmdata").exists()


def test_a_bad_address_is_refused_with_the_right_forms(demo, origin, tmp_path):
    r = run_vlmdata(*_args(demo, origin, tmp_path / "root", "--ray", "coco"))
    assert r.code == 2 and "not a Ray cluster address" in r.err and "vlmdata fetch --ray auto coco" in r.err


def test_a_head_address_where_nothing_listens_fails_at_once(demo, origin, tmp_path):
    """Found by trying: ray.init given a HOST:PORT with nothing behind it waited for minutes and
    ignored Ctrl-C and SIGTERM; a probe of the port says so first."""
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    r = run_vlmdata(*_args(demo, origin, tmp_path / "root", "--ray", f"127.0.0.1:{port}"))
    assert r.code == 1, r.err
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}: the connection was refused" in r.err
    assert "ray start --head" in r.err and time.monotonic() - t0 < 30
