"""vlmdata.net.client against loopback servers: kept-alive connections, redirects and credentials,
proxies and netrc from the environment, bodies cut short, certificates verified."""
from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fetch_helpers import _srv, Fault, LoopbackServer, self_signed

from vlmdata.net import client as client_mod
from vlmdata.net.client import Client, RequestError
from vlmdata.net.retry import is_transient_error, is_unreachable


@pytest.fixture
def srv(files_server):
    (files_server.folder / "f.bin").write_bytes(b"x" * 5000)
    files_server.peers = []  # (client port, path, Authorization, Proxy-Authorization) per request

    def record(h, method, path):
        files_server.peers.append((h.client_address[1], path, h.headers.get("Authorization"),
                                   h.headers.get("Proxy-Authorization")))
        return False  # (then served as usual)

    files_server.routes.append(record)
    return files_server


def redirect(server: LoopbackServer, frm: str, to: str, status: int = 302) -> None:
    def route(h, method, path):
        if path != frm:
            return False
        h.send_plain(status, b"moved\n", {"Location": to})
        return True

    server.routes.append(route)  # (after the fixture's recording route)


def basic(user: str, pw: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


@pytest.fixture(autouse=True)
def no_env_proxy(monkeypatch, tmp_path):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_connections_are_kept_alive_and_reused(srv):
    with Client() as c:
        for _ in range(3):
            with c.get(f"{srv.url}/f.bin") as r:
                assert r.status_code == 200 and r.read_all() == b"x" * 5000
    ports = {p for p, *_ in srv.peers}
    assert len(srv.peers) == 3 and len(ports) == 1


def test_spaces_and_non_ascii_in_a_path_are_quoted_and_escapes_kept(srv):
    (srv.folder / "a b-é.bin").write_bytes(b"odd name")
    with Client() as c:
        assert c.get(f"{srv.url}/a b-é.bin").read_all() == b"odd name"
        assert c.get(f"{srv.url}/a%20b-%C3%A9.bin?x=1 2").read_all() == b"odd name"
    assert [p for _, p, *_ in srv.peers] == ["a b-é.bin", "a b-é.bin"]


def test_a_body_left_unread_closes_its_connection(srv):
    with Client() as c:
        r = c.get(f"{srv.url}/f.bin")
        assert r.read(100) == b"x" * 100
        r.close()  # 4,900 bytes never read: the connection cannot carry another answer
        assert c.get(f"{srv.url}/f.bin").read_all() == b"x" * 5000
    assert len({p for p, *_ in srv.peers}) == 2


def test_an_idle_connection_the_server_closed_is_replaced(srv, monkeypatch):
    monkeypatch.setattr(_srv._Handler, "timeout", 0.2)  # the server drops idle connections after 0.2 s
    with Client() as c:
        assert c.get(f"{srv.url}/f.bin").read_all() == b"x" * 5000
        threading.Event().wait(0.6)
        assert c.get(f"{srv.url}/f.bin").read_all() == b"x" * 5000
    assert len({p for p, *_ in srv.peers}) == 2


def test_a_request_on_a_dead_connection_that_looked_alive_is_sent_again(srv, monkeypatch):
    monkeypatch.setattr(_srv._Handler, "timeout", 0.2)
    monkeypatch.setattr(client_mod, "_alive", lambda conn: True)  # (the server closes it just as it is reused)
    with Client() as c:
        assert c.get(f"{srv.url}/f.bin").read_all() == b"x" * 5000
        threading.Event().wait(0.6)
        r = c.get(f"{srv.url}/f.bin")
        assert r.status_code == 200 and r.read_all() == b"x" * 5000
    assert len(srv.peers) == 2


def test_redirects_keep_authorization_on_the_origin_and_drop_it_elsewhere(srv, tmp_path):
    other = LoopbackServer(tmp_path).start()
    try:
        (tmp_path / "g.bin").write_bytes(b"elsewhere")
        redirect(srv, "a", "/b")  # relative, same origin
        redirect(srv, "b", f"{srv.url}/f.bin", status=307)
        redirect(srv, "c", f"{other.url}/g.bin", status=301)
        with Client() as c:
            r = c.get(f"{srv.url}/a", headers={"Authorization": "Bearer tok"})
            assert r.read_all() == b"x" * 5000 and r.url == f"{srv.url}/f.bin"
            assert [(p, a) for _, p, a, _ in srv.peers] == [("a", "Bearer tok"), ("b", "Bearer tok"),
                                                             ("f.bin", "Bearer tok")]
            assert c.get(f"{srv.url}/c", headers={"Authorization": "Bearer tok"}).read_all() == b"elsewhere"
        assert other.auth_seen == [("g.bin", None)]
    finally:
        other.stop()


def test_endless_redirects_are_an_error_not_worth_retrying(srv):
    redirect(srv, "loop", "/loop")
    with Client() as c, pytest.raises(RequestError, match="redirects") as e:
        c.get(f"{srv.url}/loop")
    assert not is_transient_error(e.value)


def test_an_http_proxy_from_the_environment_carries_the_request(srv, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", srv.url.replace("http://", "http://us%40er:p%3Ass@"))
    with Client() as c:  # (a host that exists nowhere: only the proxy can answer)
        r = c.get("http://files.example.invalid:8080/f.bin")
        assert r.status_code == 200 and r.read_all() == b"x" * 5000
    assert srv.peers[-1][1:] == ("f.bin", None, basic("us@er", "p:ss"))


def test_no_proxy_sends_the_request_straight_to_the_server(srv, tmp_path, monkeypatch):
    direct = LoopbackServer(tmp_path).start()
    try:
        (tmp_path / "g.bin").write_bytes(b"direct")
        monkeypatch.setenv("HTTP_PROXY", srv.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with Client() as c:
            assert c.get(f"{direct.url}/g.bin").read_all() == b"direct"
        assert srv.peers == [] and direct.count("g.bin") == 1
    finally:
        direct.stop()


def test_netrc_credentials_for_the_host_unless_the_caller_gives_its_own(srv, tmp_path, monkeypatch):
    rc = tmp_path / "netrc"
    rc.write_text("machine 127.0.0.1 login ann password s3cret\n")
    rc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(rc))
    with Client() as c:
        c.get(f"{srv.url}/f.bin").read_all()
        c.get(f"{srv.url}/f.bin", headers={"Authorization": "Bearer mine"}).read_all()
    assert [a for _, _, a, _ in srv.peers] == [basic("ann", "s3cret"), "Bearer mine"]


def test_a_header_given_in_another_case_replaces_the_default(srv):
    seen = []
    srv.routes.insert(0, lambda h, m, p: seen.append(h.headers.get_all("User-Agent")) or False)
    with Client() as c:
        c.get(f"{srv.url}/f.bin").read_all()
        c.get(f"{srv.url}/f.bin", headers={"user-agent": "mine/1"}).read_all()
    assert seen[0][0].startswith("vlmdata/") and len(seen[0]) == 1 and seen[1] == ["mine/1"]


def test_a_body_cut_short_raises_instead_of_ending_quietly(srv):
    srv.fault("f.bin", Fault("drop", after=1000))
    with Client() as c:
        r = c.get(f"{srv.url}/f.bin")
        got = b""
        with pytest.raises(ConnectionError, match="4000 bytes of the body still to come"):
            while True:
                chunk = r.read(4096)
                got += chunk
        r.close()
    assert got == b"x" * 1000


def test_a_refused_connection_is_unreachable_and_a_bad_url_is_not_retried():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # (nothing listens once it is closed)
    with Client() as c:
        with pytest.raises(RequestError) as e:
            c.get(f"http://127.0.0.1:{port}/x")
        assert is_unreachable(e.value) and is_transient_error(e.value)
        with pytest.raises(RequestError) as e:
            c.get("ftp://127.0.0.1/x")
        assert not is_transient_error(e.value)


# ---------------------------------------------------------------------- TLS

BIG = os.urandom(3 << 20) + b"tail"


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate (made by the openssl tool)."""
    cert, ctx = self_signed(tmp_path)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            body = BIG if self.path == "/big.bin" else b"secret"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", '"v1"')
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}", cert
    httpd.shutdown()
    httpd.server_close()
    t.join(timeout=5)


def test_certificates_are_verified_against_the_bundle_the_environment_names(tls_server, monkeypatch):
    url, cert = tls_server
    with Client() as c, pytest.raises(RequestError, match="CERTIFICATE_VERIFY_FAILED|certificate verify") as e:
        c.get(f"{url}/f")
    assert not is_transient_error(e.value)  # (another try would fail the same way)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    with Client() as c:
        r = c.get(f"{url}/f")
        assert r.status_code == 200 and r.read_all() == b"secret"


def test_the_engine_downloads_over_tls_and_hashes_what_it_wrote(tls_server, monkeypatch, tmp_path):
    from vlmdata.fetch.http import HttpEngine
    from vlmdata.net.retry import RetryPolicy

    url, cert = tls_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    got = HttpEngine(retry=RetryPolicy(attempts=2, base=0.02), timeout=10.0).download(f"{url}/big.bin", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == BIG and got.digests.sha256 == hashlib.sha256(BIG).hexdigest()
