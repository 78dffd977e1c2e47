"""Credentials in URLs (a signed link's query string, a user:password@ in a mirror URL) reach no file and
no message: the paths the end-to-end tests of test_fetch_cli.py do not take (a download cut before its
end, a URL list that cannot be downloaded, an image whose server redirects badly)."""
from __future__ import annotations

import os

from fetch_helpers import Blob, Fault, LoopbackServer

from vlmdata.errors import OperationError
from vlmdata.fetch.http import HttpEngine
from vlmdata.fetch.urllist import _get_list
from vlmdata.fetch.urllist_client import fetch_images
from vlmdata.net.client import Client
from vlmdata.net.errors import SourceFailed
from vlmdata.net.retry import RetryPolicy

SECRET = "SECRETSIG" + "Q" * 12
ONCE = RetryPolicy(attempts=1, base=0.01)


def _files_holding(folder, secret: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_cut_download_keeps_no_signed_query_in_its_part_state(tmp_path, files_server):
    """Found in the security audit: the .part.state sidecar kept the whole URL, X-Amz-Signature and all
    (a Hub file's CDN location, an SA-1B link), for as long as the download stayed unfinished."""
    files_server.blobs["cdn/f.bin"] = Blob(data=os.urandom(1 << 20))
    files_server.fault("cdn/f.bin", Fault("drop", times=-1, after=100_000))
    url = f"{files_server.url.replace('://', f'://who:{SECRET}@', 1)}/cdn/f.bin?X-Amz-Signature={SECRET}&token={SECRET}"
    for conns in (1, 4):  # one connection, and segments (whose state also records the ranges done)
        dest = tmp_path / f"dl{conns}" / "f.bin"
        engine = HttpEngine(retry=ONCE, connections=conns, min_split=1 << 16)
        try:
            engine.download(url, dest)
        except SourceFailed as e:
            assert SECRET not in str(e)
        else:
            raise AssertionError("the cut download succeeded")
        state = dest.with_name("f.bin.part.state")
        assert state.is_file() and "/cdn/f.bin" in state.read_text()  # (kept for the resume, with where it came from)
        assert _files_holding(tmp_path, SECRET) == []


def test_a_url_list_that_cannot_be_downloaded_is_named_without_credentials(files_server):
    """Found in the security audit: its error named the URL as requested, a mirror's user:password and a
    signed query included, and a redirect loop's last (signed) location."""
    host = files_server.url.split("://", 1)[1]

    files_server.redirect("loop", f"{files_server.url}/loop?X-Amz-Signature={SECRET}")
    cases = [(f"{files_server.url}/list.json?sig={SECRET}", None),  # 404
             ("https://example.org/list.json", f"http://who:{SECRET}@{host}/m"),  # 404 on the mirror
             (f"{files_server.url}/loop", None)]  # more than 30 redirects
    for url, mirror in cases:
        try:
            _get_list(url, Client(), mirror, ONCE, 5.0)
        except OperationError as e:
            assert "cannot download the URL list" in str(e) and SECRET not in str(e), str(e)
        else:
            raise AssertionError(f"{url} was downloaded")


def test_an_image_whose_redirect_is_bad_is_reported_without_its_secrets(tmp_path, files_server):
    """Found in the security audit: aiohttp's error for a redirect to a malformed location quotes it whole
    (a token in its query), and that text went into the report of the list."""
    files_server.redirect("bad", f"http://[::1/x.jpg?token={SECRET}")
    host = files_server.url.split("://", 1)[1]
    res = fetch_images([("a", f"{files_server.url}/bad"), ("b", f"http://who:{SECRET}@{host}/gone.jpg?sig={SECRET}")],
                       tmp_path / "imgs", ext="jpg", jobs=2, mirror=None, policy=ONCE, timeout=5.0)
    assert [f.id for f in res.failed] == ["a"] and "Redirect" in res.failed[0].error
    assert [d.ids for d in res.dead.values()] == [["b"]]
    said = repr(res.failed) + repr(list(res.dead.values()))
    assert SECRET not in said, said
    assert f"{host}/gone.jpg" in said  # (still says which image is gone)


def test_a_password_with_an_at_sign_is_hidden_whole():
    """Found in the security audit: a password holding a raw '@' (which urllib and the client accept: the
    host is what follows the last '@') was shown cut at its first '@', the rest of it left in the message."""
    from vlmdata.net.urls import scrub, shown

    url = f"https://who:p@{SECRET}@host.example.org:8443/x.tar?sig={SECRET}"
    assert shown(url) == "https://…@host.example.org:8443/x.tar?…"
    assert scrub(f"failed for url '{url}' (write to me@example.org)") == \
        "failed for url 'https://…@host.example.org:8443/x.tar?…' (write to me@example.org)"


def test_a_url_list_named_by_a_signed_url_leaves_no_signature_under_the_root(cli, manifests, files_server, root):
    """Found in the security audit: the urllist source described itself with its URL as written (the journal's
    `source`, the report's `list`), a presigned bucket URL's signature included."""
    import io
    import json

    from fetch_helpers import file_toml
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(buf, "JPEG")
    (files_server.folder / "a.jpg").write_bytes(buf.getvalue())
    (files_server.folder / "list.json").write_text(json.dumps({"a": {"imageURL": f"{files_server.url}/a.jpg"}}))
    src = (f'{{ kind = "urllist", url = "{files_server.url}/list.json?X-Amz-Signature={SECRET}", '
           'list_format = "json-dict", url_key = "imageURL" }')
    manifests.dataset("t", file_toml("images", sources=[src], place='{ kind = "images", to = "t/images", ext = "jpg" }'))
    r = cli("fetch", "t", "--json", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.code == 0, r.err
    assert (root / "t/images/a.jpg").is_file()
    assert SECRET not in r.out + r.err
    assert _files_holding(root, SECRET) == []
