"""The URL-list path of `vlmdata fetch` honours the retry policy and --timeout (it used to ignore both)."""
from __future__ import annotations

import io
import json

from fetch_helpers import Fault, file_toml

from vlmdata.fetch.orchestrate import FetchOptions, Fetcher
from vlmdata.manifest import load_catalog
from vlmdata.net.retry import RetryPolicy
from vlmdata.state import Root


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(buf, "JPEG")
    return buf.getvalue()


def _url_list(manifests, files_server, root, names: list[str]) -> None:
    """A dataset `t` whose images come from a list at t/list.json under the root, served by files_server."""
    for n in names:
        (files_server.folder / n).write_bytes(_jpeg())
    lst = root / "t/list.json"
    lst.parent.mkdir(parents=True)
    lst.write_text(json.dumps({n.split(".")[0]: {"imageURL": f"{files_server.url}/{n}"} for n in names}))
    manifests.dataset("t", file_toml(
        "images", sources=['{ kind = "urllist", path = "t/list.json", list_format = "json-dict", url_key = "imageURL" }'],
        place='{ kind = "images", to = "t/images", ext = "jpg" }'))


def _fetch(manifests, root, **options):
    cat = load_catalog([manifests.folder])
    return Fetcher(cat, Root(root), FetchOptions(**options)).run(cat.select_files(["t"]))


def test_url_list_uses_the_configured_retry_policy_and_timeout(manifests, files_server, root):
    _url_list(manifests, files_server, root, ["slow.jpg", "busy.jpg", "ok.jpg"])
    files_server.fault("slow.jpg", Fault("slow", times=-1, delay=2.0))  # longer than the timeout, every time
    files_server.fault("busy.jpg", Fault("status", times=-1, status=503))
    report = _fetch(manifests, root, retry=RetryPolicy(attempts=2, base=0.01, cap=0.02), timeout=0.3)
    (outcome,) = report.outcomes
    assert outcome.state == "fetched" and outcome.files == 1
    assert files_server.count("slow.jpg") == 2 and files_server.count("busy.jpg") == 2  # two tries, as configured
    failed = {f["id"]: f["error"] for f in json.loads((root / ".vlmdata/reports/t-urllist.json").read_text())["failed"]}
    assert "after 2 tries" in failed["slow"] and "Timeout" in failed["slow"]  # 0.3 s, not the 60 s default
    assert failed["busy"] == "HTTP 503 after 2 tries"
    assert sorted(p.name for p in (root / "t/images").iterdir()) == ["ok.jpg"]


def test_fetch_timeout_option_reaches_the_url_list(cli, manifests, files_server, root):
    _url_list(manifests, files_server, root, ["a.jpg"])
    files_server.fault("a.jpg", Fault("slow", times=1, delay=2.0))  # the first answer comes too late
    r = cli("fetch", "t", "--timeout", "0.3", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.code == 0, r.err
    assert files_server.count("a.jpg") == 2  # timed out after 0.3 s, then tried again
    assert (root / "t/images/a.jpg").is_file()
