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
