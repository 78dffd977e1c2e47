"""An HF_ENDPOINT behind basic auth (``http://user:password@mirror``): huggingface_hub's errors quote the URL they
failed on, credentials and all; what vlmdata shows of them must not."""
from __future__ import annotations

import pytest
from fetch_helpers import HubServer, file_toml

pytestmark = pytest.mark.usefixtures("hub_online")  # (the loopback hub is asked)

SECRET = "pw-" + "E" * 18


def test_a_hub_error_never_shows_the_endpoints_password(cli, manifests, root):
    """Found in the security audit: a plain 404 (or 409, 451, 5xx) from the endpoint failed with "HfHubHTTPError: Client
    error '404 Not Found' for url 'http://user:<password>@host/...'", hidden only where it looked like a Hub token."""
    hub = HubServer().start()
    try:
        def broken(h, method, path):
            if "broken" not in path and not path.startswith("api/"):
                return False
            h.send_plain(404, b"not in this mirror")  # (a plain 404: no X-Error-Code, as a proxy answers)
            return True

        hub.hub.routes.insert(0, broken)
        file_src = '{ kind = "hf", repo_type = "dataset", repo_id = "o/r", revision = "main", path = "broken.bin" }'
        repo_src = '{ kind = "hfrepo", repo_type = "dataset", repo_id = "o/r", revision = "main" }'
        manifests.dataset("t", file_toml("broken.bin", sources=[file_src], place='{ kind = "file", to = "t/b.bin" }'),
                          file_toml("repo", sources=[repo_src], place='{ kind = "repo", to = "t/repo" }'))
        endpoint = hub.hub.url.replace("://", f"://someone:{SECRET}@", 1)
        r = cli("fetch", "t", "--json", "--manifests", str(manifests.folder), "--root", str(root),
                env={"HF_ENDPOINT": endpoint, "HF_TOKEN": ""})
        assert r.code == 1
        assert "404" in r.err and "…@" in r.err  # (the failures are there, the endpoint shown without its password)
        assert SECRET not in r.out + r.err
    finally:
        hub.stop()
