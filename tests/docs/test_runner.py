"""The pieces the examples test stands on: reading blocks and markers, running lines, matching output."""
from __future__ import annotations

from tests.docs.shell import Shell, matches
from tools.docgen.examples import program_paths, read_blocks


def test_blocks_markers_headings_and_console_output(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "# Title\n\n## Fetch it\n\n<!-- example: needs network -->\n```sh\nvlmdata fetch coco \\\n"
        "    --layout llava   # a comment\n```\n\ntext\n\n```console\n$ vlmdata list\nDatasets:\n...\n$ echo hi\nhi\n```\n"
        "\n<!-- example: exit 1 -->\n\n```\nbare\n```\n")
    a, b, c = read_blocks(page)
    assert (a.lang, a.heading, a.skip_reason, a.needs) == ("sh", "Fetch it", "needs network", ["network"])
    assert [x.text for x in a.commands()] == ["vlmdata fetch coco --layout llava"]
    assert b.skip_reason is None and b.marker == ""
    cmds = b.commands()
    assert [(x.text, x.output) for x in cmds] == [("vlmdata list", ["Datasets:", "..."]), ("echo hi", ["hi"])]
    assert c.lang == "" and c.marker == "exit 1"  # blank lines between a marker and its fence are fine


def test_shown_output_must_appear(tmp_path):
    actual = "fetched   coco:train2017.zip   15.6 kB   0.2 s  /x/y.zip\n10 fetched, 0 failed; 1 kB in 0.4 s\n"
    assert matches(["fetched coco:train2017.zip ... 15.6 kB ...", "...", "10 fetched, 0 failed; ..."], actual) == []
    assert matches(["11 fetched, 0 failed; ..."], actual) == ["11 fetched, 0 failed; ..."]
    assert matches(["10 fetched, 0 failed; ...", "10 fetched, 0 failed; ..."], actual) == ["10 fetched, 0 failed; ..."]


def test_shell_state_redirects_absolute_paths_and_bash(tmp_path):
    sh = Shell(tmp_path)
    assert sh.run("export VLMDATA_ROOT=/data/store").code == 0
    assert sh.env["VLMDATA_ROOT"] == f"{tmp_path}/_abs/data/store"
    r = sh.run("vlmdata status --json > status.json")
    assert r.code == 0 and r.how == "in-process" and (tmp_path / "status.json").read_text().startswith("[")
    r = sh.run("vlmdata status")
    assert "root: /data/store" in r.out  # mapped back to the path the page shows
    r = sh.run('mkdir -p /data/x && echo "$VLMDATA_ROOT" | tr a-z A-Z')
    assert r.how == "bash" and r.code == 0 and r.out.strip().endswith("/DATA/STORE")
    assert (tmp_path / "_abs/data/x").is_dir()
    assert sh.run("vlmdata no-such-command").code == 2


def test_program_paths_find_subcommands():
    tree = {"vlmdata": {"layout", "list"}, "vlmdata layout": {"check", "build"}, "vlmtrain": {"run"}}
    assert program_paths("vlmdata --root R layout check --layout llava x", tree) == [["vlmdata", "layout", "check"]]
    assert program_paths("vlmdata list && HF_X=1 vlmtrain run c.yaml", tree) == [["vlmdata", "list"], ["vlmtrain", "run"]]
    assert program_paths("echo vlmdata-like", tree) == []
