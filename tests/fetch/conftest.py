"""Fixtures for the fetch tests: the demo mirror, loopback servers, a root, small manifests."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_helpers import HubServer, LoopbackServer, Manifests  # noqa: E402

from demo.build_mirror import build_demo_mirror  # noqa: E402


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    return build_demo_mirror(tmp_path_factory.mktemp("demo"), n_per_set=8)


@pytest.fixture
def server(demo):
    """The demo mirror served over HTTP on 127.0.0.1 (a fresh server, counters at zero)."""
    srv = LoopbackServer(demo.mirror).start()
    yield srv
    srv.stop()


@pytest.fixture
def files_server(tmp_path):
    """An empty folder served over HTTP; tests put their own files in it."""
    folder = tmp_path / "srv"
    folder.mkdir()
    srv = LoopbackServer(folder).start()
    yield srv
    srv.stop()


@pytest.fixture
def hub():
    h = HubServer(token="hf_" + "T" * 30).start()
    yield h
    h.stop()


@pytest.fixture
def root(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def manifests(tmp_path):
    return Manifests(tmp_path / "manifests")


@pytest.fixture(params=["splice", "recv"])
def body_path(request, monkeypatch):
    """A test on both ways a body reaches its file: spliced by the kernel (plain HTTP on Linux,
    vlmdata.net.splice) and received into the hasher's buffers (TLS, chunked, other systems). A
    module takes it with ``pytestmark = pytest.mark.usefixtures("body_path")``."""
    from vlmdata.net import splice

    if request.param == "recv":
        monkeypatch.setenv("VLMDATA_NO_SPLICE", "1")
    else:
        monkeypatch.delenv("VLMDATA_NO_SPLICE", raising=False)
        if not splice.available():
            pytest.skip("no splice on this system")
    return request.param


@pytest.fixture
def hub_online(monkeypatch):
    """The Hub tests' own loopback hub may be asked: the test suite sets HF_HUB_OFFLINE for everything
    else. A module takes it with ``pytestmark = pytest.mark.usefixtures("hub_online")``."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
