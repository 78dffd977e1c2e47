"""HF_TOKEN as environments hand it over: with a trailing newline (a Kubernetes secret, an --env-file, a
token file read with $(< file) in some shells). huggingface_hub strips it when it reads the variable itself;
vlmdata passes the token explicitly, so it must do the same."""
from __future__ import annotations

import os

import pytest
from fetch_helpers import HubServer, file_toml

pytestmark = pytest.mark.usefixtures("hub_online")  # (the loopback hub is asked)

REPO_ID = "demo-org/demo-set"


def _hf(path: str) -> str:
    return f'{{ kind = "hf", repo_type = "dataset", repo_id = "{REPO_ID}", revision = "main", path = "{path}" }}'


@pytest.mark.parametrize("token", ["hf_" + "N" * 30, "mirror-token-" + "N" * 24])  # the Hub's kind, a mirror's
def test_a_token_with_a_trailing_newline_is_used_and_never_shown(cli, manifests, root, token):
    """Found in the security audit: the token went into the Authorization header as it was, the request
    failed with 'Illegal header value b\\'Bearer <token>\\\\n\\'', and that message named the token whole
    when it did not look like a Hub token (hf_...), which is all that redact() recognised in it."""
    hub = HubServer(token=token).start()
    try:
        data = os.urandom(3000)
        hub.add(REPO_ID, "meta.json", data, lfs=False)
        manifests.dataset("t", file_toml("meta.json", size=len(data), sources=[_hf("meta.json")],
                                         place='{ kind = "file", to = "t/meta.json" }'))
        r = cli("fetch", "t", "--manifests", str(manifests.folder), "--root", str(root), "--hf-endpoint", hub.hub.url,
                env={"HF_TOKEN": token + "\r\n"})
        assert r.code == 0, r.err
        assert (root / "t/meta.json").read_bytes() == data
        assert token not in r.out + r.err
    finally:
        hub.stop()
