"""`--shard I/N` on a URL list named by a URL (OCR-VQA's dataset.json straight from its host): the
list is downloaded once, under its claim, by one shard; the others wait for that claim and read the
list it stored (never a half-written one); a claim left by a killed shard is taken over.

The list's GET is held at the server until the test lets it go, so the second shard is certainly
there while the first downloads; every wait is bounded.
"""
from __future__ import annotations

import io
import json
import threading

import pytest
from fetch_helpers import file_toml, root_state, start_fetch, store_tree, wait_for

from vlmdata import atomic
from vlmdata.manifest import load_catalog
from vlmdata.state import Root

LIST = "lists/dataset.json"
WAIT = 60.0  # seconds any one step may take before the test gives up


def _image(fmt: str, colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, fmt)
    return buf.getvalue()


class Gate:
    """A route of the server that holds every GET of the list until ``open()``."""

    def __init__(self, server) -> None:
        self.server = server
        self.event = threading.Event()
        self.event.set()
        server.routes.append(self._route)

    def _route(self, handler, method: str, path: str) -> bool:
        if path == LIST and method == "GET":
            self.event.wait(WAIT)
        return False  # (then served as usual)

    def close(self) -> None:
        self.event.clear()

    def open(self) -> None:
        self.event.set()

    def gets(self) -> int:
        return self.server.count(LIST, "GET")


class Run:
    """A `vlmdata fetch` child whose stdout and stderr are read while it runs."""

    def __init__(self, *args: str) -> None:
        self.proc = start_fetch(*args)
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self._readers = [threading.Thread(target=self._read, args=(s, into), daemon=True)
                         for s, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream, into: list[bytes]) -> None:
        for line in iter(stream.readline, b""):
            into.append(line)

    def stderr(self) -> str:
        return b"".join(list(self.err)).decode(errors="replace")

    def finish(self) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout=120)
        for t in self._readers:
            t.join(timeout=10)
        return rc, b"".join(self.out).decode(errors="replace"), self.stderr()

    def stop(self) -> None:
        """Killed (SIGKILL) if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=20)


@pytest.fixture
def urls(manifests, files_server):
    """A dataset `t` of 7 images (some PNG and GIF, converted) whose list is downloaded from a URL;
    ``args(root, *extra)`` its fetch command line; ``.gate`` holds the list's GETs."""
    images = {}
    for i in range(7):
        fmt, ext = [("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif")][i % 3]
        name = f"img/{i:02d}.{ext}"
        images[name] = _image(fmt, (30 * i, 200, 10))
        (files_server.folder / name).parent.mkdir(exist_ok=True)
        (files_server.folder / name).write_bytes(images[name])
    listing = {f"{i:02d}": {"imageURL": f"{files_server.url}/{n}"} for i, n in enumerate(images)}
    (files_server.folder / LIST).parent.mkdir()
    (files_server.folder / LIST).write_text(json.dumps(listing))
    manifests.dataset("t", file_toml(
        "images", sources=[f'{{ kind = "urllist", url = "{files_server.url}/{LIST}", list_format = "json-dict", '
                           'url_key = "imageURL" }'],
        place='{ kind = "images", to = "t/images", ext = "jpg" }'))

    def args(root, *extra: str) -> list[str]:
        return ["fetch", "t", "--manifests", str(manifests.folder), "--root", str(root), *extra]

    args.gate = Gate(files_server)
    args.listing = (files_server.folder / LIST).read_bytes()
    args.spec = load_catalog([manifests.folder]).dataset("t").file("images")
    return args


def _single_run(urls, cli, root) -> None:
    r = cli(*urls(root))
    assert r.code == 0, r.err
    assert urls.gate.gets() == 1


def _claims_left(root) -> list[str]:
    return sorted(p.name for p in (root / ".vlmdata/claims").glob("*.claim"))


def test_two_shards_started_together_download_the_list_once(urls, files_server, tmp_path, cli):
    one, many = tmp_path / "one", tmp_path / "many"
    _single_run(urls, cli, one)
    files_server.reset()
    urls.gate.close()
    runs = []
    try:
        runs = [Run(*urls(many, "--shard", f"{i}/2", "--url-chunk", "2", "--json")) for i in range(2)]
        wait_for(lambda: urls.gate.gets() >= 1, WAIT, "the first shard to ask for the list")
        # the other shard: waiting for the list's claim (or, were it not claimed, asking for the list too)
        wait_for(lambda: urls.gate.gets() >= 2 or any("waiting for t:dataset.json#list" in r.stderr() for r in runs),
                 WAIT, "the second shard to want the list")
        urls.gate.open()
        reports = []
        for r in runs:
            rc, out, err = r.finish()
            assert rc == 0, err
            reports.append(json.loads(out))
    finally:
        urls.gate.open()
        for r in runs:
            r.stop()
    assert urls.gate.gets() == 1  # downloaded by one shard, read by both
    assert store_tree(many) == store_tree(one)  # every image, byte for byte; the list itself as one run stores it
    assert root_state(many) == root_state(one)  # the same journal entry and URL-list report
    stored = Root(many).download_path("t", "dataset.json")
    assert stored.read_bytes() == urls.listing
    assert all(rep["files"] for rep in reports)
    assert not _claims_left(many)
    assert [p.name for p in stored.parent.iterdir()] == ["dataset.json"]  # no temporary left beside it


def test_a_shard_waits_for_the_lists_claim_then_reads_the_stored_list(urls, files_server, tmp_path, cli):
    from vlmdata.fetch.urllist import list_claim_key, list_path

    one, many = tmp_path / "one", tmp_path / "many"
    _single_run(urls, cli, one)
    files_server.reset()
    root = Root(many)
    spec = urls.spec
    src = spec.sources[0]
    first = root.claim(list_claim_key(spec, src), "another shard downloading the list", 60.0)
    assert first.acquire(wait=False) is None  # (this test is the first shard)
    run = None
    try:
        run = Run(*urls(many, "--shard", "0/1", "--url-chunk", "3"))
        waits = "waiting for t:dataset.json#list"
        wait_for(lambda: waits in run.stderr() or urls.gate.gets() or run.proc.poll() is not None,
                 WAIT, "the shard to wait for the claim")
        assert waits in run.stderr(), run.stderr()
        assert not list_path(spec, src, root).exists() and urls.gate.gets() == 0
        atomic.write_bytes(list_path(spec, src, root), urls.listing)  # what the first shard stores
        first.release()
        rc, _, err = run.finish()
        assert rc == 0, err
    finally:
        first.release()
        if run is not None:
            run.stop()
    assert urls.gate.gets() == 0  # it used the stored list
    assert store_tree(many) == store_tree(one)
    assert root_state(many) == root_state(one)
    assert not _claims_left(many)


def test_the_list_claim_of_a_killed_shard_is_taken_over(urls, files_server, tmp_path, cli):
    one, many = tmp_path / "one", tmp_path / "many"
    _single_run(urls, cli, one)
    files_server.reset()
    urls.gate.close()
    dead = Run(*urls(many, "--shard", "0/1", "--url-chunk", "2"))
    try:
        wait_for(lambda: urls.gate.gets() == 1, WAIT, "the shard to ask for the list")
        assert [n for n in _claims_left(many) if n.endswith("%23list.claim")]  # it holds the list's claim
        dead.stop()  # killed mid-download: its claim stays behind, its list was never stored
    finally:
        urls.gate.open()
        dead.stop()
    assert [n for n in _claims_left(many) if n.endswith("%23list.claim")]
    stored = Root(many).download_path("t", "dataset.json")
    assert not stored.exists()
    # as a shard killed while writing the list leaves it (atomic_open's temporary, half written)
    stored.parent.mkdir(parents=True, exist_ok=True)
    (stored.parent / ".tmp-dataset.json.k1ll3d").write_bytes(urls.listing[:10])
    (stored.parent / ".tmp-other.bin.x").write_bytes(b"not the list's")  # another file's: left alone
    again = Run(*urls(many, "--shard", "0/1", "--url-chunk", "2"))
    try:
        rc, _, err = again.finish()  # (its holder is gone: taken over at once, on this machine)
    finally:
        again.stop()
    assert rc == 0, err
    assert urls.gate.gets() == 2  # the killed one's try, and the one that completed
    assert sorted(p.name for p in stored.parent.iterdir()) == [".tmp-other.bin.x", "dataset.json"]
    (stored.parent / ".tmp-other.bin.x").unlink()
    assert store_tree(many) == store_tree(one)
    assert root_state(many) == root_state(one)
    assert not _claims_left(many)
