"""docs/ci.md's JSON Schema of `vlmdata layout check --json` holds for real outputs, and lists what the code prints."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tests.conftest import run_vlmdata
from tools.docgen.examples import read_blocks

REPO = Path(__file__).resolve().parents[2]
TYPES = {"string": str, "integer": int, "boolean": bool, "object": dict, "array": list, "null": type(None)}


def schema() -> dict:
    blocks = [b for b in read_blocks(REPO / "docs" / "ci.md") if b.lang == "json"]
    assert len(blocks) == 1, "docs/ci.md has one json block: the schema"
    return json.loads(blocks[0].body)


def validate(x, s: dict, where: str = "$") -> list[str]:
    """The subset of JSON Schema the page uses: type, enum, required, properties, additionalProperties, items."""
    errs = []
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(isinstance(x, TYPES[t]) and not (t == "integer" and isinstance(x, bool)) for t in types):
            return [f"{where}: {x!r} is not {types}"]
    if "enum" in s and x not in s["enum"]:
        errs.append(f"{where}: {x!r} not in {s['enum']}")
    if isinstance(x, dict):
        errs += [f"{where}: missing {k}" for k in s.get("required", []) if k not in x]
        props = s.get("properties", {})
        if s.get("additionalProperties") is False:
            errs += [f"{where}: {k} is not in the schema" for k in x if k not in props]
        for k, v in x.items():
            if k in props:
                errs += validate(v, props[k], f"{where}.{k}")
    if isinstance(x, list) and "items" in s:
        for i, v in enumerate(x):
            errs += validate(v, s["items"], f"{where}[{i}]")
    return errs


def test_the_validator_catches_what_it_should():
    s = {"type": "object", "required": ["a"], "additionalProperties": False,
         "properties": {"a": {"type": "integer"}, "b": {"enum": ["x"]}}}
    assert validate({"a": 1}, s) == []
    assert len(validate({"a": True, "b": "y", "c": 0}, s)) == 3
    assert validate({}, s) == ["$: missing a"]


def _manifests(folder: Path) -> None:
    (folder / "datasets").mkdir(parents=True)
    (folder / "layouts").mkdir()
    files = [("imgs.zip", "extract", "d/imgs"), ("more.zip", "extract", "d/more"), ("opt.zip", "extract", "d/opt"),
             ("gone.zip", "extract", "d/gone"), ("link.zip", "extract", "d/link"), ("empty.zip", "extract", "d/empty"), ("zero.zip", "extract", "d/zero"),
             ("z.json", "file", "d/z.json"), ("w.json", "file", "d/w.json")]
    text = 'name = "d"\ntitle = "t"\nlicense = "t"\n'
    for name, kind, to in files:
        inner = ', inner = ""' if kind == "extract" else ""
        text += (f'\n[[files]]\nname = "{name}"\nsize = "unknown"\nsha256 = "unknown"\n'
                 f'sources = [{{ kind = "http", url = "http://127.0.0.1:9/{name}" }}]\n'
                 f'place = {{ kind = "{kind}", to = "{to}"{inner} }}\n')
    (folder / "datasets" / "d.toml").write_text(text)
    entries = [("imgs", "d/imgs", "dir", "count = 2"), ("more", "d/more", "dir", ""), ("opt", "d/opt", "dir", "optional = true"),
               ("gone", "d/gone", "dir", ""), ("link", "d/link", "dir", ""), ("empty", "d/empty", "dir", ""), ("zero", "d/zero", "dir", ""),
               ("z.json", "d/z.json", "file", ""), ("w.json", "d/w.json", "file", "")]
    lay = 'name = "t"\ntitle = "t"\n'
    for path, store, kind, extra in entries:
        lay += f'\n[[entries]]\npath = "{path}"\nstore = "{store}"\ndataset = "d"\nkind = "{kind}"\n{extra}\n'
    lay += '\n[[entries]]\npath = "Output"\nkind = "mkdir"\n'
    (folder / "layouts" / "t.toml").write_text(lay)


def _good(folder: Path) -> None:
    for d in ("imgs", "more", "opt", "gone", "link", "empty", "zero", "Output"):
        (folder / d).mkdir(parents=True)
        if d != "Output":
            (folder / d / "1.jpg").write_bytes(b"x")
    (folder / "imgs" / "2.jpg").write_bytes(b"x")
    (folder / "z.json").write_text("[]")
    (folder / "w.json").write_text("[]")


def test_schema_holds_for_a_passing_and_a_failing_check_and_names_every_status(tmp_path):
    s = schema()
    m = tmp_path / "m"
    _manifests(m)
    good, bad = tmp_path / "good", tmp_path / "bad"
    _good(good)
    r = run_vlmdata("layout", "check", "--layout", "t", str(good), "--manifests", str(m), "--json")
    assert r.code == 0, r.out + r.err
    assert validate(r.json(), s) == [] and r.json()["ok"] is True
    _good(bad)
    (bad / "imgs" / "2.jpg").unlink()                              # count_mismatch
    for f in (bad / "more").iterdir():
        f.unlink()
    (bad / "more").rmdir()
    (bad / "more").write_text("x")                                 # not_a_dir
    (bad / "z.json").unlink()
    (bad / "z.json").mkdir()                                       # not_a_file
    (bad / "w.json").write_text("")                                # empty (file)
    (bad / "empty" / "1.jpg").unlink()                             # empty (dir)
    (bad / "zero" / "0.jpg").write_bytes(b"")                      # empty_files
    for d in ("opt", "gone", "link"):
        (bad / d / "1.jpg").unlink()
        (bad / d).rmdir()                                          # skipped (optional), missing
    os.symlink(tmp_path / "nowhere", bad / "link")                 # broken_link
    r = run_vlmdata("layout", "check", "--layout", "t", str(bad), "--manifests", str(m), "--json")
    assert r.code == 1
    out = r.json()
    assert validate(out, s) == []
    seen = {e["status"] for e in out["entries"]}
    enum = set(s["properties"]["entries"]["items"]["properties"]["status"]["enum"])
    assert seen == enum and out["problems"] == sum(e["status"] not in ("ok", "skipped") for e in out["entries"])


def test_schema_lists_every_status_and_key_the_code_has():
    s = schema()["properties"]["entries"]["items"]
    src = (REPO / "vlmdata" / "layouts" / "check.py").read_text()
    named = set(re.search(r"status: str\s+#\s*(.+)", src).group(1).split(" | "))
    assert named == set(s["properties"]["status"]["enum"])
    from dataclasses import fields

    from vlmdata.layouts.check import EntryResult
    assert {f.name for f in fields(EntryResult)} == set(s["properties"]) == set(s["required"])
