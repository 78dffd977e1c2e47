"""The --mirror rule and a source URL with a user:password in it: the mirror is asked for ``BASE/host/path``,
never ``BASE/user:password@host/path`` (the origin's password in a request line and a mirror's logs, and as a
folder name in a mirror built by `vlmdata mirror build`)."""
from __future__ import annotations

import os

from fetch_helpers import file_toml, http, sha256

from vlmdata.net.urls import rewrite

SECRET = "pw-" + "M" * 16


def test_the_rule_drops_the_origins_credentials():
    """Found in the security audit: ``rewrite`` kept the whole netloc."""
    url = f"https://who:{SECRET}@data.example.org:8443/a/b.zip?sig=1"
    assert rewrite(url, "http://mirror.lan/m") == "http://mirror.lan/m/data.example.org:8443/a/b.zip"
    assert rewrite(url, "/srv/mirror") == "/srv/mirror/data.example.org:8443/a/b.zip"


def test_a_fetch_through_a_mirror_sends_no_origin_password(cli, manifests, files_server, root):
    data = os.urandom(4000)
    (files_server.folder / "origin.example.org").mkdir()
    (files_server.folder / "origin.example.org/x.bin").write_bytes(data)
    manifests.dataset("t", file_toml("x.bin", size=len(data), sha=sha256(data),
                                     sources=[http(f"https://who:{SECRET}@origin.example.org/x.bin")],
                                     place='{ kind = "file", to = "t/x.bin" }'))
    r = cli("fetch", "t", "--manifests", str(manifests.folder), "--root", str(root), "--mirror", files_server.url)
    assert r.code == 0, r.err
    assert (root / "t/x.bin").read_bytes() == data
    assert [p for _, p, _ in files_server.requests] == ["origin.example.org/x.bin"]
