"""Items 16 and 21 (vlmdata): --quiet, progress bars only on a terminal and never before an
argument error, one unit system in bars and summaries, errors as JSON under --json (item 18)."""
from __future__ import annotations

import io
import json

from firsthour_helpers import run_in_terminal

from tests.conftest import run_vlmdata
from vlmdata.fetch.progress import Progress
from vlmdata.units import human_bytes


def test_no_progress_frames_when_not_a_terminal(full):
    r = full.run("blend", "llava-665k", "--max-drop", "100")  # stderr is a StringIO here, like a CI log
    assert r.code == 0, r.err
    assert "\r" not in r.err and "it/s" not in r.err and "%|" not in r.err and "row/s" not in r.err
    r = full.run("export", full.root / "blends" / "llava-665k", full.root / "x.json")
    assert r.code == 0 and "\r" not in r.err + r.out


def test_bars_on_a_terminal_but_never_before_an_argument_error(full, tmp_path):
    code, text = run_in_terminal(*full.args("blend", "llava-665k", "--max-drop", "100"))
    assert code == 0 and "\r" in text and "parse" in text  # the control: a terminal does get bars
    code, text = run_in_terminal("export", tmp_path / "not-a-blend", tmp_path / "x.json")
    assert code == 2 and "not a dataset folder" in text
    assert "\r" not in text.replace("\r\n", "\n") and "row" not in text
    code, text = run_in_terminal(*full.args("verify", "cocoo", "--deep"))
    assert code == 2 and "did you mean coco" in text and "decoding" not in text


def test_fetch_bars_use_the_units_of_the_summaries():
    buf = io.StringIO()
    prog = Progress(stream=buf, tty=True, total_bytes=3_000_000)
    bar = prog.file("x:y.zip", 3_000_000)
    bar.update(1_500_000)
    bar.close()
    prog.close()
    assert human_bytes(1_500_000) == "1.5 MB"
    assert "1.50M" in buf.getvalue() and "1.43M" not in buf.getvalue()  # 1,500,000 bytes, not / 1024**2


def test_quiet(empty):
    r = empty.run("-q", "fetch", "llava_instruct", "coco")
    assert r.code == 0 and r.out == "" and r.err == ""
    r = empty.run("blend", "llava-665k", "--max-drop", "100", "--quiet")
    assert r.code == 0 and r.out == "" and r.err == ""
    r = empty.run("blend", "llava-665k", "-q")  # an error is still said
    assert r.code == 1 and "would drop more than --max-drop" in r.err
    assert empty.run("-q", "verify").out == ""
    assert "coco" in empty.run("-q", "status").out  # what a query answers is still printed


def test_dry_run_is_plan(empty):
    a = empty.run("plan", "coco", "gqa", "--json")
    b = empty.run("fetch", "coco", "gqa", "--dry-run", "--json")
    assert a.code == b.code == 0
    da, db = a.json(), b.json()
    da.pop("free_bytes"), db.pop("free_bytes")
    assert da == db and not empty.root.exists()  # nothing fetched, not even the root made


def test_json_errors_are_json_on_stdout(tmp_path, full):
    r = run_vlmdata("--root", tmp_path, "fetch", "cocoo", "--json")
    assert r.code == 2
    err = json.loads(r.out)
    assert err["error"] == "unknown dataset 'cocoo'" and "did you mean coco" in err["hint"] and err["exit_code"] == 2
    assert "did you mean coco" in r.err  # the text is still on stderr
    r = run_vlmdata("--json", "fetch", "--no-such-option")
    assert r.code == 2 and "No such option" in json.loads(r.out)["error"]
    r = full.run("blend", "llava-665k", "--json")  # an operation that fails: exit 1
    assert r.code == 1 and json.loads(r.out)["exit_code"] == 1 and "--max-drop" in json.loads(r.out)["hint"]
    r = full.run("verify", "coco", "sam", "--json")  # a result that says "not ok" stays one document
    assert r.code == 1 and json.loads(r.out)["ok"] is False
    r = run_vlmdata("--root", tmp_path, "fetch", "cocoo")  # without --json: nothing on stdout
    assert r.out == ""


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    """`vlmdata list | head -1`: the pipe's reader is gone before the output is written (here from
    the start, so the first write fails). No traceback; the status a shell gives a SIGPIPE (141)."""
    import os
    import subprocess
    import sys

    from firsthour_helpers import REPO

    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "vlmdata.cli.app", "list"], cwd=REPO, stdout=write,
                          stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    os.close(write)
    assert proc.returncode == 141 and proc.stderr == b"", proc.stderr.decode()[-2000:]
