"""Per-image downloads from an OCR-VQA-style dataset.json against a loopback server."""
from __future__ import annotations

import json
import os
import time

import pytest

from vlmdata.manifest import Source
from vlmdata.net.retry import RetryPolicy
from vlmdata.net.client import Client
from vlmdata.fetch.urllist import fetch_url_list

from place_helpers import decodes_as_jpeg, image_bytes, make_spec

FAST = RetryPolicy(attempts=3, base=0.01, cap=0.05)
SOURCE = Source("urllist", path="ocr_vqa/dataset.json", list_format="json-dict", url_key="imageURL")
SPEC = make_spec(kind="images", to="ocr_vqa/images", dataset="ocr_vqa", name="images-from-urls", ext="jpg",
                 count=7, sources=(SOURCE,))


def book(url: str) -> dict:
    return {"imageURL": url, "questions": ["Who wrote this book?"], "answers": ["someone"], "title": "t"}


@pytest.fixture
def ocr(server, root):
    jpeg = image_bytes("jpeg")
    routes = {
        "/images/I/1.jpg": [(200, jpeg)],
        "/images/I/2.gif": [(200, image_bytes("gif"))],
        "/images/I/3.png": [(200, image_bytes("png"))],
        "/images/I/4.jpg": [(404, b"gone")],
        "/images/I/5.jpg": [(410, b"gone for good")],
        "/images/I/6.jpg": [(200, jpeg[: len(jpeg) // 2])],  # corrupt: cut in half
        "/images/I/7.jpg": [(500, b"oops"), (200, jpeg)],  # transient
    }
    server.routes.update(routes)
    ids = {"0001": "1.jpg", "0002": "2.gif", "0003": "3.png", "0004": "4.jpg", "0005": "5.jpg", "0006": "6.jpg",
           "0007": "7.jpg", "0008": "4.jpg"}  # two records share a dead URL
    data = {rid: book(server.url(f"/images/I/{name}")) for rid, name in ids.items()}
    lst = root.store_path("ocr_vqa/dataset.json")
    lst.parent.mkdir(parents=True)
    lst.write_text(json.dumps(data))
    return server


def run(root, **kw):
    kw.setdefault("mirror", None)
    return fetch_url_list(kw.pop("spec", SPEC), kw.pop("source", SOURCE), root, session=Client(), jobs=8,
                          policy=FAST, **kw)


def test_url_list_saves_converts_and_reports(ocr, root):
    calls = []
    res = run(root, progress=calls.append)
    folder = root.store_path("ocr_vqa/images")
    assert sorted(p.name for p in folder.iterdir()) == ["0001.jpg", "0002.jpg", "0003.jpg", "0007.jpg"]
    for p in folder.iterdir():
        decodes_as_jpeg(p)
    assert (folder / "0001.jpg").read_bytes() == ocr.routes["/images/I/1.jpg"][0][1]  # a JPEG is kept as is
    assert (res.saved, res.skipped, res.converted, res.total) == (4, 0, 2, 8)
    assert [(d.url.rsplit("/", 1)[1], d.status, d.ids) for d in res.dead] == [("4.jpg", 404, ["0004", "0008"]),
                                                                              ("5.jpg", 410, ["0005"])]
    assert [(f.id, f.error.split(" ")[0]) for f in res.failed] == [("0006", "truncated")]
    assert res.failed[0].again is False  # the server serves it cut: fetching again gets the same
    assert ocr.hits["/images/I/7.jpg"] == 2  # 500 then 200: retried once
    assert calls == [1] * 8  # one tick per record

    report = json.loads(res.report_path.read_text())
    assert res.report_path == root.state_dir / "reports" / "ocr_vqa-urllist.json"
    assert report["dead_records"] == 3
    assert {d["status"]: sorted(d["ids"]) for d in report["dead"]} == {404: ["0004", "0008"], 410: ["0005"]}
    assert report["failed"][0]["id"] == "0006" and "truncated" in report["failed"][0]["error"]
    assert report["converted_from"] == {"gif": 1, "png": 1}
    assert [c["id"] for c in report["conversions"]] == ["0002", "0003"]


def test_an_image_whose_retries_ran_out_may_be_tried_again(server, root):
    server.routes["/images/I/1.jpg"] = [(503, b"busy")] * 20
    lst = root.store_path("ocr_vqa/dataset.json")
    lst.parent.mkdir(parents=True)
    lst.write_text(json.dumps({"0001": book(server.url("/images/I/1.jpg"))}))
    res = run(root)
    assert [(f.id, f.again) for f in res.failed] == [("0001", True)] and "503" in res.failed[0].error


def test_second_run_skips_everything_already_there(ocr, root):
    run(root)
    before = dict(ocr.hits)
    res = run(root)
    assert res.saved == 0 and res.skipped == 4
    for path in ("/images/I/1.jpg", "/images/I/2.gif", "/images/I/3.png", "/images/I/7.jpg"):
        assert ocr.hits[path] == before[path]  # not requested again
    assert len(res.dead) == 2 and len(res.failed) == 1  # still reported


def test_empty_leftover_is_fetched_again(ocr, root):
    folder = root.store_path("ocr_vqa/images")
    folder.mkdir(parents=True)
    (folder / "0001.jpg").write_bytes(b"")
    (folder / ".tmp-0002.jpg.123").write_bytes(b"half")
    os.utime(folder / ".tmp-0002.jpg.123", (time.time() - 3600,) * 2)  # a killed run's, an hour ago
    (folder / ".tmp-0003.jpg.456").write_bytes(b"in flight")  # another process's, being written now
    res = run(root)
    assert res.saved == 4
    decodes_as_jpeg(folder / "0001.jpg")
    assert [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")] == [".tmp-0003.jpg.456"]


def test_local_folder_mirror(ocr, root, tmp_path):
    mirror = tmp_path / "mirror"
    host = ocr.base.split("//", 1)[1]
    for path in ("/images/I/1.jpg", "/images/I/2.gif"):
        p = mirror / host / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(ocr.routes[path][0][1])
    hits = sum(ocr.hits.values())
    res = run(root, mirror=str(mirror))
    folder = root.store_path("ocr_vqa/images")
    assert sorted(p.name for p in folder.iterdir()) == ["0001.jpg", "0002.jpg"]
    decodes_as_jpeg(folder / "0002.jpg")
    assert sum(ocr.hits.values()) == hits  # the server was never asked
    assert sorted(i for d in res.dead for i in d.ids) == ["0003", "0004", "0005", "0006", "0007", "0008"]
    assert all(d.status is None for d in res.dead)


def test_http_mirror_and_list_downloaded_from_a_url(server, root):
    jpeg = image_bytes("jpeg")
    origin = "http://ecx.images-amazon.test"
    data = {"42": book(f"{origin}/images/I/42.gif"), "43": book(f"{origin}/images/I/43.jpg")}
    server.routes["/m/ecx.images-amazon.test/images/I/42.gif"] = [(200, image_bytes("gif"))]
    server.routes["/m/ecx.images-amazon.test/images/I/43.jpg"] = [(200, jpeg)]
    server.routes["/m/drive.test/ocr/dataset.json"] = [(200, json.dumps(data).encode())]
    src = Source("urllist", url="http://drive.test/ocr/dataset.json", list_format="json-dict", url_key="imageURL")
    res = run(root, source=src, mirror=server.url("/m"))
    folder = root.store_path("ocr_vqa/images")
    assert sorted(p.name for p in folder.iterdir()) == ["42.jpg", "43.jpg"]
    assert res.converted == 1 and (folder / "43.jpg").read_bytes() == jpeg
    assert root.download_path("ocr_vqa", "dataset.json").is_file()


def test_missing_list_says_where_to_put_it(root):
    from vlmdata.errors import OperationError

    with pytest.raises(OperationError, match="dataset.json"):
        run(root)


def test_unsafe_record_ids_are_not_written(server, root):
    server.routes["/x.jpg"] = [(200, image_bytes("jpeg"))]
    lst = root.store_path("ocr_vqa/dataset.json")
    lst.parent.mkdir(parents=True)
    lst.write_text(json.dumps({"../evil": book(server.url("/x.jpg")), "ok": book(server.url("/x.jpg"))}))
    res = run(root)
    assert [f.id for f in res.failed] == ["../evil"]
    assert sorted(p.name for p in root.store_path("ocr_vqa/images").iterdir()) == ["ok.jpg"]
    assert not (root.store_path("ocr_vqa") / "evil.jpg").exists()


def test_without_a_forced_extension_the_bytes_and_url_extension_are_kept(server, root):
    gif = image_bytes("gif")
    server.routes["/c/9.gif"] = [(200, gif)]
    lst = root.store_path("ocr_vqa/dataset.json")
    lst.parent.mkdir(parents=True)
    lst.write_text(json.dumps({"9": book(server.url("/c/9.gif"))}))
    spec = make_spec(kind="images", to="ocr_vqa/images", dataset="ocr_vqa", name="x", ext=None, sources=(SOURCE,))
    res = run(root, spec=spec)
    assert res.saved == 1 and res.converted == 0
    assert (root.store_path("ocr_vqa/images") / "9.gif").read_bytes() == gif


def test_an_http_proxy_from_the_environment_is_used(server, root, monkeypatch):
    origin = "http://ocr.invalid"  # never resolves: only the proxy can answer
    server.routes[f"{origin}/a.jpg"] = [(200, image_bytes("jpeg"))]  # a proxy is asked for the absolute URL
    server.routes[f"{origin}/b.gif"] = [(500, b""), (200, image_bytes("gif"))]
    lst = root.store_path("ocr_vqa/dataset.json")
    lst.parent.mkdir(parents=True)
    lst.write_text(json.dumps({"1": book(f"{origin}/a.jpg"), "2": book(f"{origin}/b.gif")}))
    for var in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.base)
    res = run(root)
    assert (res.saved, res.converted, res.dead, res.failed) == (2, 1, [], [])
    assert server.hits[f"{origin}/a.jpg"] == 1 and server.hits[f"{origin}/b.gif"] == 2
    for p in root.store_path("ocr_vqa/images").iterdir():
        decodes_as_jpeg(p)


def test_the_list_is_read_as_a_stream(ocr, root, monkeypatch):
    # records are taken from the list as requests free up, never loaded whole
    import vlmdata.jsonstream as jsonstream

    seen = []
    real = jsonstream.RecordReader.members

    def members(self):
        for k, v in real(self):
            seen.append(k)
            yield k, v

    monkeypatch.setattr(jsonstream.RecordReader, "members", members)
    progress = []
    res = fetch_url_list(SPEC, SOURCE, root, session=Client(), jobs=2, mirror=None, policy=FAST,
                         progress=lambda n: progress.append(len(seen)))
    assert res.total == 8 and res.saved == 4
    assert progress[0] < 8  # the first record was done before the list was read to its end


def test_a_broken_list_is_a_clear_error_that_keeps_what_was_saved(ocr, root):
    from vlmdata.errors import UserError

    lst = root.store_path("ocr_vqa/dataset.json")
    lst.write_text(lst.read_text()[:-40])  # cut off: the last record is not whole
    with pytest.raises(UserError, match="not a readable JSON object") as e:
        fetch_url_list(SPEC, SOURCE, root, session=Client(), jobs=2, mirror=None, policy=FAST)
    assert "dataset.json" in str(e.value) and "line" in str(e.value)
    kept = sorted(p.name for p in root.store_path("ocr_vqa/images").iterdir())
    assert kept and all(not n.startswith(".tmp-") for n in kept)


def test_a_body_over_the_image_limit_is_refused_not_held(server, root, monkeypatch):
    from vlmdata.fetch import urllist_client

    big = image_bytes("jpeg", size=(400, 300))
    small = image_bytes("jpeg")
    monkeypatch.setattr(urllist_client, "MAX_IMAGE_BYTES", len(big) - 1)
    half = len(big) // 2
    server.routes.update({"/i/big.jpg": [(200, big)],  # Content-Length says it: refused before reading
                          "/i/big-chunked.jpg": [(200, [big[:half], big[half:]])],  # found while reading
                          "/i/small-chunked.jpg": [(200, [small[:100], small[100:]])]})
    data = {"0001": book(server.url("/i/big.jpg")), "0002": book(server.url("/i/big-chunked.jpg")),
            "0003": book(server.url("/i/small-chunked.jpg"))}
    lst = root.store_path("ocr_vqa/dataset.json")
    lst.parent.mkdir(parents=True)
    lst.write_text(json.dumps(data))
    res = run(root)
    assert sorted(p.name for p in root.store_path("ocr_vqa/images").iterdir()) == ["0003.jpg"]
    assert (root.store_path("ocr_vqa/images") / "0003.jpg").read_bytes() == small
    assert sorted((f.id, "larger than" in f.error) for f in res.failed) == [("0001", True), ("0002", True)]
    assert server.hits["/i/big.jpg"] == 1  # a refusal is final, not retried


def _thirty_jpegs(server, root) -> bytes:
    jpeg = image_bytes("jpeg")
    for i in range(30):
        server.routes[f"/j/{i}.jpg"] = [(200, jpeg)]
    lst = root.store_path("ocr_vqa/dataset.json")
    lst.parent.mkdir(parents=True)
    lst.write_text(json.dumps({f"{i:04d}": book(server.url(f"/j/{i}.jpg")) for i in range(30)}))
    return jpeg


def _writers(root, monkeypatch, delay=lambda n: 0.0) -> list[str]:
    """Fetch the thirty JPEGs; the name of the thread that wrote each (``delay(n)``: seconds the n-th write takes)."""
    import threading
    import time

    import vlmdata.place.images as images

    writers = []
    real_write = images._write

    def noted(data, final):
        writers.append(threading.current_thread().name)
        time.sleep(delay(len(writers)))
        return real_write(data, final)

    monkeypatch.setattr(images, "_write", noted)
    res = run(root, spec=make_spec(kind="images", to="ocr_vqa/images", dataset="ocr_vqa", name="x", ext="jpg",
                                   count=30, sources=(SOURCE,)))
    assert res.saved == 30 and not res.failed and len(writers) == 30
    return writers


def test_jpegs_are_written_by_the_loop_until_the_folder_is_slow(server, root, monkeypatch):
    # Whole JPEGs are written on the event loop; once writes are slow on average the saver threads
    # write them (a network file system must not stall every request); either way the same files.
    import vlmdata.fetch.urllist_client as client

    jpeg = _thirty_jpegs(server, root)
    monkeypatch.setattr(client, "SLOW_WRITE", -1.0)  # every write counts as slow
    writers = _writers(root, monkeypatch)
    assert not writers[0].startswith("vlmdata-image")  # the first by the loop's thread: the average rises past
    assert all(w.startswith("vlmdata-image") for w in writers[1:])  # the limit and the threads write the rest
    assert sorted(p.read_bytes() == jpeg for p in root.store_path("ocr_vqa/images").iterdir()) == [True] * 30


def test_one_slow_write_does_not_send_the_images_to_threads(server, root, monkeypatch):
    # (a write that waited for a busy core is not a slow file system)
    _thirty_jpegs(server, root)
    writers = _writers(root, monkeypatch, delay=lambda n: 0.03 if n == 3 else 0.0)
    assert not any(w.startswith("vlmdata-image") for w in writers)


def test_the_event_loop_is_uvloops_where_installed_else_asyncios(monkeypatch):
    """The client's loop (its CPU) is uvloop's; without uvloop (Windows) asyncio's runs the same code."""
    import asyncio
    import sys

    from vlmdata.fetch.urllist_client import _run_loop

    seen: list[str] = []

    async def which() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    _run_loop(which())
    pytest.importorskip("uvloop")
    assert seen[-1].startswith("uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # (an import of it now fails)
    _run_loop(which())
    assert seen[-1].startswith("asyncio")


def test_a_redirect_from_https_to_plain_http_is_refused(root, tmp_path, monkeypatch):
    # an image has no hash to check it by: once the address is plain http, anyone on the path could swap it
    from tests.tls_cert import self_signed
    from place_server import LoopbackServer

    cert, tls = self_signed(tmp_path)
    secure, plain = LoopbackServer(tls=tls).start(), LoopbackServer().start()
    try:
        jpeg = image_bytes("jpeg")
        plain.routes["/1.jpg"] = [(200, jpeg)]
        secure.routes["/1.jpg"] = [(302, b"", {"Location": plain.url("/1.jpg")})]
        secure.routes["/2.jpg"] = [(302, b"", {"Location": secure.url("/moved/2.jpg")})]  # https to https: kept
        secure.routes["/moved/2.jpg"] = [(200, jpeg)]
        # https -> http -> https: the last address is secure, the hop before it was not (found in review)
        secure.routes["/3.jpg"] = [(302, b"", {"Location": plain.url("/hop/3.jpg")})]
        plain.routes["/hop/3.jpg"] = [(302, b"", {"Location": secure.url("/moved/2.jpg")})]
        lst = root.store_path("ocr_vqa/dataset.json")
        lst.parent.mkdir(parents=True)
        lst.write_text(json.dumps({"0001": book(secure.url("/1.jpg")), "0002": book(secure.url("/2.jpg")),
                                   "0003": book(secure.url("/3.jpg"))}))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        res = run(root)
        folder = root.store_path("ocr_vqa/images")
        assert sorted(p.name for p in folder.iterdir()) == ["0002.jpg"]
        assert [f.id for f in res.failed] == ["0001", "0003"]
        assert "not HTTPS: refused" in res.failed[0].error and plain.url("/1.jpg") in res.failed[0].error
        assert "not HTTPS: refused" in res.failed[1].error and plain.url("/hop/3.jpg") in res.failed[1].error
        assert secure.hits["/1.jpg"] == 1 and secure.hits["/3.jpg"] == 1  # said once, not retried
    finally:
        secure.stop()
        plain.stop()
