"""The .part.state sidecar is written through a temporary of a fixed name (NAME.part.state.tmp) in the
downloads folder, which a root shared by several users may let others write: a symlink planted under that
name must not make a fetch overwrite the file it points to."""
from __future__ import annotations

import os

from fetch_helpers import Blob, Fault

from vlmdata.fetch.http import HttpEngine
from vlmdata.net.errors import SourceFailed
from vlmdata.net.retry import RetryPolicy


def test_a_symlink_planted_at_the_state_temporary_is_not_written_through(tmp_path, files_server):
    """Found in the security audit: PartState.save wrote the temporary with Path.write_text, which follows
    a symlink there and truncates its target."""
    files_server.blobs["f.bin"] = Blob(data=os.urandom(1 << 20))
    files_server.fault("f.bin", Fault("drop", times=-1, after=100_000))
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's file\n")
    dest = tmp_path / "downloads" / "f.bin"
    dest.parent.mkdir()
    os.symlink(victim, dest.with_name("f.bin.part.state.tmp"))
    try:
        HttpEngine(retry=RetryPolicy(attempts=1, base=0.01)).download(f"{files_server.url}/f.bin", dest)
    except SourceFailed:
        pass
    assert victim.read_text() == "someone's file\n"
    state = dest.with_name("f.bin.part.state")
    assert state.is_file() and not state.is_symlink() and '"size": 1048576' in state.read_text()


def test_a_symlink_planted_at_the_joining_temporary_is_not_written_through(cli, manifests, files_server, root):
    """Found in the security audit: a file published in parts was joined into NAME.joining opened with
    open(..., "wb"), which writes through a symlink there (and the link then became the download)."""
    from fetch_helpers import http, sha256

    a, b = os.urandom(3000), os.urandom(2000)
    (files_server.folder / "x.001").write_bytes(a)
    (files_server.folder / "x.002").write_bytes(b)
    parts = (f'parts = [{{ name = "x.001", size = {len(a)}, sha256 = "{sha256(a)}", sources = [{http(files_server.url + "/x.001")}] }}, '
             f'{{ name = "x.002", size = {len(b)}, sha256 = "{sha256(b)}", sources = [{http(files_server.url + "/x.002")}] }}]')
    (manifests.folder / "datasets/t.toml").write_text(
        'name = "t"\ntitle = "t"\nlicense = "t"\n\n[[files]]\nname = "x.bin"\n' + parts +
        '\nplace = { kind = "file", to = "t/x.bin" }\n')
    victim = root.parent / "victim.txt"
    victim.write_text("someone's file\n")
    downloads = root / ".vlmdata/downloads/t"
    downloads.mkdir(parents=True)
    os.symlink(victim, downloads / "x.bin.joining")
    r = cli("fetch", "t", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.code == 0, r.err
    assert victim.read_bytes() == b"someone's file\n"
    placed = root / "t/x.bin"
    assert not placed.is_symlink() and placed.read_bytes() == a + b

