"""A URL list named by an https:// URL comes over HTTPS or not at all: a redirect to plain http is refused, as
the engine (a file's download), the Hub source and the image client refuse it. The list decides which hosts
every image comes from, and no hash vouches for it."""
from __future__ import annotations

import pytest
from fetch_helpers import Blob, LoopbackServer, self_signed

from vlmdata.errors import OperationError
from vlmdata.fetch.urllist import _get_list
from vlmdata.net.client import Client, RequestError
from vlmdata.net.retry import RetryPolicy, is_transient_error

LIST = b'{"1": {"imageURL": "http://127.0.0.1:9/x.jpg"}}'


@pytest.fixture
def tls_and_plain(tmp_path, monkeypatch):
    cert, ctx = self_signed(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    plain, tls = LoopbackServer().start(), LoopbackServer(tls=ctx).start()
    plain.blobs["list.json"] = Blob(data=LIST)
    tls.blobs["list.json"] = Blob(data=LIST)
    yield tls, plain
    tls.stop()
    plain.stop()


def test_a_list_redirected_from_https_to_http_is_refused(tls_and_plain):
    """Found in the security audit: the list's download followed the redirect and used what plain http
    sent (anyone on the path could hand out a list of their own)."""
    tls, plain = tls_and_plain

    tls.redirect("moved.json", f"{plain.url}/list.json")
    assert _get_list(f"{tls.url}/list.json", Client(), None, RetryPolicy(attempts=1), 5.0) == LIST  # (TLS works)
    with pytest.raises(OperationError, match="not HTTPS: refused") as ei:
        _get_list(f"{tls.url}/moved.json", Client(), None, RetryPolicy(attempts=1), 5.0)
    assert f"{plain.url}/list.json" in str(ei.value)


def test_a_plain_http_hop_between_two_https_addresses_is_refused_before_it_is_asked(tls_and_plain):
    """Found in review: only the last address was looked at, so https -> http -> https passed, after
    the plain hop (and any netrc login for its host) had gone out in the clear, and whoever answered it
    chose where the bytes came from."""
    tls, plain = tls_and_plain
    tls.redirect("a.json", f"{plain.url}/hop.json")
    plain.redirect("hop.json", f"{tls.url}/list.json")
    with Client() as c, pytest.raises(RequestError, match="not HTTPS: refused") as ei:
        c.get(f"{tls.url}/a.json")
    assert f"{plain.url}/hop.json" in str(ei.value) and not is_transient_error(ei.value)
    assert not plain.requests  # the plain address was never asked
    with pytest.raises(OperationError, match="not HTTPS: refused"):
        _get_list(f"{tls.url}/a.json", Client(), None, RetryPolicy(attempts=3, base=0.01), 5.0)
    assert not plain.requests
    # http -> https (an upgrade) is followed as before
    plain.redirect("up.json", f"{tls.url}/list.json")
    assert _get_list(f"{plain.url}/up.json", Client(), None, RetryPolicy(attempts=1), 5.0) == LIST
