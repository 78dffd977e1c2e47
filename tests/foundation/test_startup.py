"""Start-up: commands are imported when they run, the catalog comes from its cache while no
manifest changed. Checked by what is imported and what is read, never by a clock."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import typer

from vlmdata.cli.app import COMMANDS, app, module_commands
from vlmdata.manifest import cache, catalog, load_catalog

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("requests", "urllib3", "http.client", "PIL", "pyarrow", "datasets", "huggingface_hub", "numpy", "pydantic", "aiohttp",
         "tomllib", "tomli", "filelock", "vlmdata.fetch.orchestrate", "vlmdata.fetch.http", "vlmdata.place")


def _modules_after(args: list[str], env: dict[str, str]) -> set[str]:
    """Run `vlmdata ARGS` in a fresh interpreter and return the modules it imported."""
    code = ("import sys, json\nfrom vlmdata.cli.app import main\nsys.argv = ['vlmdata'] + json.loads(sys.argv[1])\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
            "sys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)) + ' CODE ' + str(code) + '\\n')\n")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, **env}, timeout=120)
    line = [x for x in r.stderr.splitlines() if x.startswith("MODULES ")][-1]
    mods, rc = line[len("MODULES "):].rsplit(" CODE ", 1)
    assert rc == "0", r.stderr
    return set(json.loads(mods))


def _heavy(mods: set[str]) -> list[str]:
    return sorted(h for h in HEAVY if h in mods)


def test_the_top_level_help_lists_every_command_as_its_own_docstring_says():
    real: dict[str, str] = {}
    for module in {m for m, _ in COMMANDS.values()}:
        for name, cmd in module_commands(module).items():
            real[name] = cmd.help.strip().split("\n\n")[0].replace("\n", " ")
    assert set(real) == set(COMMANDS)
    assert {name: line for name, (_, line) in COMMANDS.items()} == real


def test_help_imports_no_command(tmp_path):
    mods = _modules_after(["--help"], {"VLMDATA_CACHE_DIR": str(tmp_path), "COLUMNS": "100"})
    assert _heavy(mods) == [] and "rich" not in mods  # (vlmdata.cli.plain_help: click's formatter)
    assert "msgspec" not in mods  # (vlmdata.cli.settings: imported when a command runs)
    assert "typer" not in mods  # (the top-level help from vlmdata/cli/top_help.txt)
    mods = _modules_after(["--help"], {"VLMDATA_CACHE_DIR": str(tmp_path), "COLUMNS": "60"})
    assert "typer" in mods and _heavy(mods) == []  # a narrow terminal: typer wraps it
    assert not any(m.startswith("vlmdata.cli.") and m not in ("vlmdata.cli.app", "vlmdata.cli.common",
                                                               "vlmdata.cli.plain_help", "vlmdata.cli.params",
                                                               "vlmdata.cli.fastparse") for m in mods)


def _age(paths) -> None:
    """Make files look written a minute ago: settled, so their parse may be cached."""
    old = time.time() - 60
    for p in paths:
        os.utime(p, (old, old))


def test_a_fetch_with_nothing_to_do_imports_no_network_stack_and_parses_no_manifest(tmp_path):
    from demo.build_mirror import build_demo_mirror

    demo = build_demo_mirror(tmp_path / "demo")
    _age(demo.manifests.rglob("*.toml"))
    env = {"VLMDATA_CACHE_DIR": str(tmp_path / "cache")}
    args = ["--manifests", str(demo.manifests), "--mirror", str(demo.mirror), "--root", str(tmp_path / "data"),
            "fetch", "coco", "gqa"]
    first = _modules_after(args, env)  # fetches (and caches the catalog)
    assert "vlmdata.fetch.http" in first and "vlmdata.place" in first  # (the probe sees a real fetch's imports)
    assert "http.client" not in first  # a local-folder mirror sends no request: the client never connects
    assert (tmp_path / "data" / "coco").is_dir()
    mods = _modules_after(args, env)  # nothing to do, the catalog from the cache
    assert _heavy(mods) == [] and "rich" not in mods
    assert "typer" not in mods  # a plain command line: vlmdata.cli.fastparse, not typer
    assert "vlmdata.plan" not in mods and "vlmdata.sources.hf" not in mods  # nothing to plan, no source to read


def test_a_download_over_http_imports_neither_requests_nor_urllib3(tmp_path):
    """(vlmdata.net.client: http.client alone; importing requests and urllib3 cost ~0.2 s a command)"""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from demo.build_mirror import build_demo_mirror

    demo = build_demo_mirror(tmp_path / "demo")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(demo.mirror)))
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        mods = _modules_after(["--manifests", str(demo.manifests), "--mirror", f"http://127.0.0.1:{httpd.server_address[1]}",
                               "--root", str(tmp_path / "data"), "fetch", "coco"],
                              {"VLMDATA_CACHE_DIR": str(tmp_path / "cache")})
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=5)
    assert "http.client" in mods and "vlmdata.net.client" in mods
    assert "requests" not in mods and "urllib3" not in mods
    assert any((tmp_path / "data" / "coco").rglob("*.jpg"))


def test_catalog_cache_follows_every_change(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMDATA_CACHE_DIR", str(tmp_path / "cache"))
    parsed: list[Path] = []
    real = catalog._load_dir
    monkeypatch.setattr(catalog, "_load_dir", lambda d, cat: (parsed.append(d), real(d, cat))[1])
    extra = tmp_path / "m"
    toml = extra / "layouts" / "mine.toml"
    toml.parent.mkdir(parents=True)
    toml.write_text('name = "mine"\ntitle = "t"\ndescription = "one"\nimage_folder = "x"\n[[entries]]\npath = "x"\nkind = "mkdir"\n')
    _age([toml])
    first = load_catalog([extra])
    assert first.layouts["mine"].description == "one" and parsed
    assert list((tmp_path / "cache").glob("catalog-*.msgpack"))  # settled files: written
    parsed.clear()
    again = load_catalog([extra])
    assert again.layouts["mine"].description == "one" and not parsed  # from the cache
    assert again == first  # every dataset, file, source and path as parsed (Paths stay Paths, tuples tuples)
    assert isinstance(again.datasets["coco"].origin, Path) and isinstance(again.datasets["coco"].files, tuple)
    # an edit of the same size: a new mtime, parsed again
    toml.write_text(toml.read_text().replace('"one"', '"two"'))
    assert load_catalog([extra]).layouts["mine"].description == "two" and parsed
    # a file that just changed is not cached: it could change again within one tick of its mtime
    parsed.clear()
    assert load_catalog([extra]).layouts["mine"].description == "two" and parsed
    # same content, same (old) mtime, but rewritten: its ctime and inode say so
    _age([toml])
    load_catalog([extra])
    parsed.clear()
    tmp = toml.with_suffix(".new")
    tmp.write_text(toml.read_text().replace('"two"', '"six"'))
    os.utime(tmp, (toml.stat().st_atime, toml.stat().st_mtime))
    os.replace(tmp, toml)
    assert load_catalog([extra]).layouts["mine"].description == "six" and parsed
    # a new manifest, a removed one
    (extra / "layouts" / "more.toml").write_text(toml.read_text().replace('"mine"', '"more"'))
    assert {"mine", "more"} <= set(load_catalog([extra]).layouts)
    toml.unlink()
    assert "mine" not in load_catalog([extra]).layouts


def test_a_broken_or_foreign_cache_is_ignored(tmp_path, monkeypatch):

    monkeypatch.setenv("VLMDATA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("vlmdata.manifest.cache._settled", lambda key, now: True)  # the checkout may be fresh
    good = load_catalog()
    [path] = list(tmp_path.glob("catalog-*.msgpack"))
    path.write_bytes(b"\xc1 not MessagePack")
    assert load_catalog().datasets.keys() == good.datasets.keys()
    path.write_bytes(msgspec.msgpack.encode(([("other key",)], "not a catalog")))
    assert load_catalog().datasets.keys() == good.datasets.keys()
    # this catalog's key, but what follows is not a catalog (other code's cache, a damaged file)
    key = cache.catalog_key(catalog.manifest_dirs([]))
    path.write_bytes(msgspec.msgpack.encode((key, {"datasets": {"coco": "not a dataset"}})))
    assert load_catalog().datasets.keys() == good.datasets.keys()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setenv("VLMDATA_CACHE_DIR", str(ro / "sub"))
    assert load_catalog().datasets.keys() == good.datasets.keys()  # cannot write: still works


def test_the_top_level_help_printed_without_typer_is_what_typer_prints(cli, monkeypatch):
    """vlmdata/cli/top_help.txt is typer's output now (`make docs` writes it; this fails when it is stale)."""
    from tools.docgen.cli import top_help

    for columns in ("80", "200"):  # (click wraps help at 78 columns on any terminal of 80 or more)
        monkeypatch.setenv("COLUMNS", columns)
        for flag in ("--help", "-h"):
            r = cli(flag)
            assert r.code == 0 and r.out == top_help(), (columns, flag)
    monkeypatch.setenv("COLUMNS", "60")  # narrower: typer wraps it to the terminal
    r = cli("--help")
    assert r.code == 0 and r.out != top_help() and "[OPTIONS] COMMAND" in r.out


def test_version_alone_prints_what_the_option_prints_through_typer(cli):
    alone, through_typer = cli("--version"), cli("--root", "r", "--version")  # (the second: typer's eager option)
    assert alone.code == through_typer.code == 0 and alone.out == through_typer.out != ""


def test_lazy_group_runs_commands_like_the_eager_app(cli):
    assert isinstance(app, typer.Typer)
    r = cli("layout", "--help")
    assert r.code == 0 and "check" in r.out and "build" in r.out
    r = cli("nosuchcommand")
    assert r.code == 2 and "No such command" in r.err



def test_blend_leaves_pandas_unimported(tmp_path):
    """pyarrow imports pandas on its first list conversion (~0.2 s); a blend hides it (pandas_hidden),
    except for the one import of `datasets` its metadata needs until that is cached."""
    recs = [{"id": f"r{i}", "image": f"x/{i}.jpg", "model": "",
             "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": f"a{i}"}]}
            for i in range(50)]
    (tmp_path / "in.json").write_text(json.dumps(recs))
    for i in range(50):
        (tmp_path / "imgs" / "x").mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / "x" / f"{i}.jpg").write_bytes(b"x")
    recipe = tmp_path / "mix.toml"
    recipe.write_text(f'name = "mix"\ntitle = "t"\nlayout = "llava"\n[[entries]]\nname = "mine"\n'
                      f'path = "{tmp_path / "in.json"}"\n')
    env = {"VLMDATA_CACHE_DIR": str(tmp_path / "cache")}
    args = ["--root", str(tmp_path / "root"), "--quiet", "blend", str(recipe), "--image-root", str(tmp_path / "imgs")]
    first = _modules_after(args + ["--out", str(tmp_path / "a")], env)
    assert "datasets" in first  # the metadata, not cached yet: datasets (and with it pandas) may load
    second = _modules_after(args + ["--out", str(tmp_path / "b")], env)
    assert "pandas" not in second and "pyarrow" in second
    import pyarrow as pa

    tables = [pa.concat_tables(pa.ipc.open_stream(p.read_bytes()).read_all() for p in sorted(d.glob("data-*.arrow")))
              for d in (tmp_path / "a", tmp_path / "b")]
    assert tables[0].equals(tables[1]) and tables[0].num_rows == 50
    assert json.loads((tmp_path / "b" / "dataset_info.json").read_text()) == \
        json.loads((tmp_path / "a" / "dataset_info.json").read_text())


def _console(tmp_path: Path, args: list[str], before: str = "") -> subprocess.CompletedProcess:
    """The console script's function (``console``) in a fresh interpreter, after ``before``."""
    code = (f"import sys, atexit, threading, time\n{before}\nfrom vlmdata.cli.app import console\n"
            f"sys.argv = ['vlmdata'] + {args!r}\nconsole()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "VLMDATA_CACHE_DIR": str(tmp_path / "cache")})


def test_the_console_script_exits_as_python_would(tmp_path):
    """It skips Python's teardown only: the exit code, all of stdout, the atexit handlers and the
    threads that are not daemons are as with a plain exit."""
    mark, late = tmp_path / "atexit-ran", tmp_path / "thread-finished"
    r = _console(tmp_path, ["list"], before=f"atexit.register(lambda: open({str(mark)!r}, 'w').close())")
    assert r.returncode == 0 and mark.exists()
    assert r.stdout == run_main_in_process(["list"], tmp_path).out  # every byte flushed
    r = _console(tmp_path, ["info", "no-such-thing"])
    assert r.returncode == 2 and "no-such-thing" in r.stderr
    r = _console(tmp_path, ["--help"], before=(  # a thread still running when the command returns
        f"threading.Thread(target=lambda: (time.sleep(1), open({str(late)!r}, 'w').close())).start()"))
    assert r.returncode == 0 and late.exists()


def run_main_in_process(args: list[str], tmp_path: Path):
    from cli_runner import run_main
    from vlmdata.cli.app import main

    return run_main(main, "vlmdata", *args, env={"VLMDATA_CACHE_DIR": str(tmp_path / "cache")})
