"""Claims, the shared root's sessions and the journal / lock file written by several processes at once.

Processes stand in for machines where it matters: a claim's holder is killed with SIGKILL, and a
claim "from another machine" is a claim file that names another host (only its age can make it stale).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vlmdata.errors import OperationError
from vlmdata.state import Journal, LockFile, Root
from vlmdata.state.claims import Claim, Holder, read_holder

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _holding(root: Root, mode: str, what: str) -> subprocess.Popen:
    """A process that holds ``root`` (``mode``: sharing or exclusive) until it is killed, once it holds it."""
    proc = _python("""
        import sys, time
        from vlmdata.state import Root
        with getattr(Root(sys.argv[1]), sys.argv[2])(sys.argv[3]):
            print("held", flush=True)
            time.sleep(60)
    """, str(root.path), mode, what)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _foreign(path: Path, age: float) -> None:
    """A claim held by a process of another machine whose last heartbeat was ``age`` seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = Holder("elsewhere", "other-boot", 4242, "", "f" * 32, "fetching", time.time() - age, time.time() - age)
    path.write_text(json.dumps(h.__dict__))
    os.utime(path, (time.time() - age,) * 2)


def test_a_claim_is_exclusive_and_says_who_holds_it(tmp_path):
    path = tmp_path / "claims" / "coco%3Atrain2017.zip.claim"
    a = Claim(path, "fetching coco:train2017.zip")
    assert a.acquire(wait=False) is None
    h = read_holder(path)
    assert h.pid == os.getpid() and h.ours() and h.what == "fetching coco:train2017.zip"
    other = Claim(path).acquire(wait=False)  # another thread of this process: it waits like anyone else
    assert other is not None and other.nonce == a.holder.nonce
    a.release()
    assert not path.exists()
    b = Claim(path)
    assert b.acquire(wait=False) is None
    b.release()


def test_the_claim_of_a_killed_process_is_taken_over_at_once(tmp_path):
    path = tmp_path / "c.claim"
    proc = _python("""
        import sys, time
        from vlmdata.state.claims import Claim
        Claim(sys.argv[1]).acquire()
        print("held", flush=True)
        time.sleep(60)
    """, str(path))
    try:
        assert proc.stdout.readline().strip() == "held"
        assert Claim(path).acquire(wait=False).pid == proc.pid  # alive: held
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    mine = Claim(path)
    t0 = time.monotonic()
    assert mine.acquire(wait=False) is None  # its pid is gone on this machine: stale, no timeout to wait for
    assert time.monotonic() - t0 < 5 and read_holder(path).nonce == mine.holder.nonce
    mine.release()


def test_another_machines_claim_is_stale_only_after_its_timeout(tmp_path):
    path = tmp_path / "c.claim"
    _foreign(path, age=5)
    held = Claim(path, timeout=30).acquire(wait=False)
    assert held is not None and held.host == "elsewhere"  # 5 s without a heartbeat: still working
    _foreign(path, age=60)
    mine = Claim(path, timeout=30)
    assert mine.acquire(wait=False) is None  # 60 s: gone, taken over
    assert read_holder(path).host != "elsewhere"
    mine.release()


def test_the_holder_beats_and_notices_a_takeover(tmp_path):
    path = tmp_path / "c.claim"
    c = Claim(path, timeout=1.5)  # a heartbeat every 0.25 s
    c.acquire()
    first = read_holder(path).heartbeat
    time.sleep(1.0)
    assert read_holder(path).heartbeat > first and not c.lost
    _foreign(path, age=0)  # another process renamed its claim over ours (ours had gone quiet)
    time.sleep(1.0)
    assert c.lost and read_holder(path).host == "elsewhere"  # and ours is not written back over theirs
    c.release()
    assert path.exists()


def test_processes_that_take_over_at_once_hold_the_claim_one_at_a_time(tmp_path):
    path = tmp_path / "c.claim"
    _foreign(path, age=120)  # stale: all of them see it so at once
    log = tmp_path / "held"
    log.mkdir()
    code = """
        import sys, time
        from pathlib import Path
        from vlmdata.state.claims import Claim
        c = Claim(sys.argv[1], timeout=30)
        c.acquire(poll=0.05)
        t0 = time.time(); time.sleep(0.3); t1 = time.time()
        c.release()
        Path(sys.argv[2]).write_text(f"{t0} {t1}")
    """
    procs = [_python(code, str(path), str(log / str(i))) for i in range(4)]
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read()
    spans = sorted(tuple(map(float, f.read_text().split())) for f in log.iterdir())
    assert len(spans) == 4
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans  # no two held it at the same time


def test_two_processes_writing_the_journal_and_the_lock_file_lose_nothing(tmp_path):
    root = Root(tmp_path / "root")
    root.ensure_writable()
    code = """
        import sys
        from vlmdata.state import Journal, JournalEntry, LockEntry, LockFile, Root
        root, who = Root(sys.argv[1]), sys.argv[2]
        j, lock = Journal(root.state_dir), LockFile(root.lock_path)
        for i in range(60):
            j.record(JournalEntry(key=f"{who}:{i}", size=i, sha256=None, source="test", to=f"{who}/{i}"))
            lock.pin(f"{who}:{i}", LockEntry(sha256=f"{i:064x}", size=i, source="test"))
    """
    procs = [_python(code, str(root.path), who) for who in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    expected = {f"{who}:{i}" for who in ("a", "b") for i in range(60)}
    assert set(Journal(root.state_dir).entries()) == expected
    assert set(LockFile(root.lock_path).entries()) == expected
    assert not list(root.claims_dir.glob("*.claim"))  # every mutex was given back


def test_fetches_share_a_root_and_a_command_that_needs_it_alone_waits_for_none(tmp_path):
    root = Root(tmp_path / "root")
    with root.sharing("vlmdata fetch coco"):
        with root.sharing("vlmdata fetch gqa"):  # (the same process: as two machines would)
            pass
        proc = _python("""
            import sys
            from vlmdata.state import Root
            with Root(sys.argv[1]).exclusive("vlmdata layout build --layout llava"):
                pass
        """, str(root.path))
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "another vlmdata command is changing" in err
        assert f"pid {os.getpid()} on this machine (vlmdata fetch coco)" in err
        with root.exclusive("vlmdata fetch coco --layout llava"):  # its own fetch does not count
            pass
    held = _holding(root, "exclusive", "vlmdata layout build --layout llava")
    try:
        with pytest.raises(OperationError, match="layout build"):
            with root.sharing("vlmdata fetch coco"):
                pass
        assert not list(root.sessions_dir.glob("fetch-*"))  # the refused fetch left no session behind
    finally:
        held.send_signal(signal.SIGKILL)
        held.communicate(timeout=10)
    with root.sharing("vlmdata fetch coco"):  # the killed command's claim is stale
        pass


def test_the_session_of_a_killed_fetch_does_not_block_the_root(tmp_path):
    root = Root(tmp_path / "root")
    proc = _holding(root, "sharing", "vlmdata fetch coco")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert len(list(root.sessions_dir.glob("fetch-*"))) == 1
    with root.exclusive("vlmdata layout build --layout llava"):
        pass
    assert not list(root.sessions_dir.glob("fetch-*"))  # removed as stale


def test_status_shows_what_running_fetches_hold_and_skips_stale_claims(tmp_path, cli):
    from vlmdata.state.claims import claim_name

    root = Root(tmp_path / "root")
    root.claims_dir.mkdir(parents=True)
    proc = _python("""
        import sys, time
        from vlmdata.state import Root
        with Root(sys.argv[1]).claim("coco:train2017.zip", "fetching coco:train2017.zip"):
            print("held", flush=True)
            time.sleep(60)
    """, str(root.path))
    try:
        assert proc.stdout.readline().strip() == "held"
        _foreign(root.claims_dir / claim_name("gqa:images.zip"), age=5)  # another machine, beating
        _foreign(root.claims_dir / claim_name("vg:images.zip"), age=3600)  # another machine, gone quiet
        r = cli("status", "--root", str(root.path))
        assert r.code == 0, r.err
        lines = r.out.splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("in progress (2 claim(s)"))
        shown = lines[at + 1:]
        assert any("fetching coco:train2017.zip" in s and f"pid {proc.pid} on this machine" in s for s in shown)
        assert any("pid 4242 on elsewhere" in s for s in shown)
        assert not any("vg:images.zip" in s for s in r.out.splitlines())
        assert (root.claims_dir / claim_name("vg:images.zip")).exists()  # status only reads
    finally:
        proc.kill()
        proc.wait()
    r = cli("status", "--root", str(root.path))
    assert "coco:train2017.zip" not in r.out  # its process is gone: the claim is stale
