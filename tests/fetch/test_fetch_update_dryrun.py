"""`fetch --update` before and after the run: the dry run, and a Hub repo's outcome.

`fetch --update --dry-run` sends no request, so it cannot know whether a placed Hub file changed on
the branch: it shows every placed pinned file (and repo) as ``check``, with its download unknown and
at the branch's revision rather than the pinned commit, and its totals are those of the line the real
run says first. A Hub repo's outcome under ``--update`` says how many of its files were downloaded
and how many re-pinned unchanged (``repo_files`` in ``--json``), its bytes are those downloaded, and a
repo none of whose files changed is ``repinned``, with nothing downloaded. The loopback hub of
tests/fetch/server.py; requests and bytes are counted on its servers.
"""
from __future__ import annotations

import os
import re

import pytest
from fetch_helpers import HubServer, sent_settled
from test_fetch_repo import REPO_ID, model_files, repo_toml
from test_fetch_update_report import DS_ID, NAMES, announced, args, fetch, published

from vlmdata.state import Journal
from vlmdata.units import human_bytes

pytestmark = pytest.mark.usefixtures("hub_online")  # (the loopback hub is asked)

REPO_KEY = f"tiny:{REPO_ID}"
CHECK_LINE = ("to check for updates: {n} pinned Hub file(s), asked about at the branch's newest commit: re-pinned "
              "without a download if unchanged, downloaded if changed (the bytes are known once the Hub answers)")


def asked(hub: HubServer) -> list[str]:
    return [p for _, p, _ in hub.hub.requests + hub.cdn.requests]


def rows(out: str) -> dict[str, list[str]]:
    """The plan's table: per file, its state, download, disk and source columns."""
    table = {}
    for line in out.splitlines()[1:]:
        if not line.strip():
            break
        key, state, rest = line.split(None, 2)
        table[key] = [state, *re.split(r"\s{2,}", rest.strip(), maxsplit=2)]
    return table


# ---------------------------------------------------------------------------------------------- the dry run
@pytest.mark.parametrize("changed", [[], ["b.bin"]], ids=["none-changed", "one-changed"])
def test_the_dry_run_of_an_update_says_placed_hub_files_are_to_check_and_asks_nothing(
        cli, manifests, root, hub, changed):
    published(cli, manifests, root, hub)
    hub.push(DS_ID, {"other.txt": b"x", **{n: os.urandom(25_000) for n in changed}})
    hub.hub.reset()
    hub.cdn.reset()
    before = fetch(cli, manifests, root, hub, "--dry-run")  # (as ever: placed at the pinned commit)
    assert before.code == 0, before.err
    assert {k: v[0] for k, v in rows(before.out).items()} == {f"j:{n}": "present" for n in NAMES}
    assert all("pinned in vlmdata.lock" in v[3] for v in rows(before.out).values())
    r = fetch(cli, manifests, root, hub, "--update", "--dry-run")
    assert r.code == 0, r.err
    assert asked(hub) == []  # a dry run sends no request, with --update too
    table = rows(r.out)
    assert {k: v[:2] for k, v in table.items()} == {f"j:{n}": ["check", "unknown"] for n in NAMES}
    assert all(v[3].startswith(f"hf://datasets/{DS_ID}@main/") and "pinned" not in v[3] for v in table.values())
    assert "to download: 0 B (0 bytes)" in r.out and CHECK_LINE.format(n=4) in r.out
    assert "size unknown" not in r.out
    doc = fetch(cli, manifests, root, hub, "--update", "--dry-run", "--json").json()
    assert asked(hub) == []
    assert [(i["key"], i["state"], i["download_bytes"]) for i in doc["items"]] == \
        [(f"j:{n}", "check", None) for n in NAMES]
    assert doc["to_check"] == [f"j:{n}" for n in NAMES] and doc["download_bytes"] == 0
    assert doc["unknown_sizes"] == [] and doc["fits"] is True
    # the real run's line before it counts the same, and then the hub tells what changed
    real = fetch(cli, manifests, root, hub, "--update")
    assert real.code == 0, real.err
    assert announced(real.err).startswith(f"checking 4 of 4 file(s) in {root} for updates (pinned Hub files): ")
    assert (f"{len(changed)} fetched, {4 - len(changed)} re-pinned without a download (unchanged)") in real.err


def test_the_dry_run_of_an_update_counts_what_the_run_says_before_it(cli, manifests, root, hub):
    published(cli, manifests, root, hub)
    (root / "j/c.bin").unlink()  # (placed no more: downloaded at the new commit, whose size only the hub knows)
    hub.push(DS_ID, {"a.json": os.urandom(25_000)})
    hub.hub.reset()
    hub.cdn.reset()
    r = fetch(cli, manifests, root, hub, "--update", "--dry-run")
    assert r.code == 0, r.err
    assert asked(hub) == []
    table = rows(r.out)
    assert {k: v[:2] for k, v in table.items()} == {"j:a.json": ["check", "unknown"], "j:b.bin": ["check", "unknown"],
                                                    "j:c.bin": ["missing", "unknown"],
                                                    "j:d.json": ["check", "unknown"]}
    assert "to download: 0 B (0 bytes)" in r.out and CHECK_LINE.format(n=3) in r.out
    assert "size unknown for 1 file(s), not counted: j:c.bin" in r.out
    doc = fetch(cli, manifests, root, hub, "--update", "--dry-run", "--json").json()
    assert doc["to_check"] == ["j:a.json", "j:b.bin", "j:d.json"] and doc["unknown_sizes"] == ["j:c.bin"]
    real = fetch(cli, manifests, root, hub, "--update")
    assert real.code == 0, real.err
    assert announced(real.err) == (
        f"fetching 1 of 4 file(s) into {root} (0 B to download, 1 of unknown size); checking 3 pinned Hub file(s) "
        "for updates: re-pinned without a download if unchanged, downloaded if changed (the bytes are known once "
        "the Hub answers)")
    assert "2 fetched, 2 re-pinned without a download (unchanged), 0 already present, 0 failed; 45.0 kB" in real.err


def test_plan_with_update_or_refetch_prints_what_the_fetch_dry_run_does(cli, manifests, root, hub):
    published(cli, manifests, root, hub)
    hub.push(DS_ID, {"b.bin": os.urandom(25_000)})
    hub.hub.reset()
    hub.cdn.reset()
    for flags in (["--update"], ["--refetch"], ["--update", "--refetch"], []):
        dry = fetch(cli, manifests, root, hub, *flags, "--dry-run", "--json")
        plan = cli("plan", *args(manifests, root, hub, *flags)[1:], "--json", env={"HF_TOKEN": hub.token or ""})
        assert dry.code == plan.code == 0, (flags, dry.err, plan.err)
        same = [{k: v for k, v in d.json().items() if k != "free_bytes"} for d in (plan, dry)]  # (the disk moves on)
        assert same[0] == same[1], flags
    assert plan.json()["items"][0]["state"] == "present"  # (no flag: the pinned files are there)
    assert {i["state"] for i in fetch(cli, manifests, root, hub, "--update", "--dry-run", "--json").json()["items"]} \
        == {"check"}
    assert asked(hub) == []  # neither sends a request


def test_a_refetch_dry_run_with_update_checks_nothing(cli, manifests, root, hub):
    published(cli, manifests, root, hub)
    doc = fetch(cli, manifests, root, hub, "--update", "--refetch", "--dry-run", "--json").json()
    assert {i["state"] for i in doc["items"]} == {"missing"} and "to_check" not in doc  # (everything downloaded)


# ---------------------------------------------------------------------------------------------- a Hub repo
def fetched_repo(cli, manifests, root, hub) -> dict[str, bytes]:
    files = model_files(hub)  # (README.md is not selected: a push of it alone changes nothing placed)
    manifests.dataset("tiny", repo_toml())
    r = fetch_repo(cli, manifests, root, hub, "--json")
    assert r.code == 0, r.err
    (out,) = r.json()["files"]
    assert out["state"] == "fetched" and "repo_files" not in out  # (no --update: the report as it always was)
    return files


def fetch_repo(cli, manifests, root, hub, *extra):
    return cli("fetch", "tiny", *extra, "--manifests", str(manifests.folder), "--root", str(root), "--hf-endpoint",
               hub.hub.url, env={"HF_TOKEN": hub.token or ""})


def summary_of(err: str) -> list[str]:
    """The outcome lines and the counts after a run (timings left out)."""
    lines = err.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  ") and REPO_KEY in line)
    return [re.sub(r"\s+[0-9.]+ s\s+.*$| in [0-9.]+ s$", "", line) for line in lines[start:]]


def test_an_update_of_a_repo_where_nothing_changed_re_pins_it_and_downloads_nothing(cli, manifests, root, hub):
    fetched_repo(cli, manifests, root, hub)
    size = sum(e.size for k, e in Journal(root / ".vlmdata").entries().items() if k.startswith(REPO_KEY + "/"))
    head = hub.push(REPO_ID, {"README.md": b"# new words\n"}, repo_type="model")
    hub.hub.reset()
    hub.cdn.reset()
    dry = fetch_repo(cli, manifests, root, hub, "--update", "--dry-run")
    assert dry.code == 0 and asked(hub) == []
    assert rows(dry.out)[REPO_KEY][:2] == ["check", "unknown"] and CHECK_LINE.format(n=1) in dry.out
    r = fetch_repo(cli, manifests, root, hub, "--update", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    (out,) = doc["files"]
    assert (out["state"], out["bytes"], doc["bytes"]) == ("repinned", 0, 0)
    assert out["repo_files"] == {"downloaded": 0, "repinned": 4, "removed": 0} and out["files"] == 4
    assert out["size"] == size and head in out["source"]
    assert [p for m, p, _ in hub.hub.requests + hub.cdn.requests if m == "GET" and "/resolve/" in p] == []
    assert sent_settled(hub.cdn) == 0
    assert f"none of its 4 file(s) changed at commit {head}: re-pinned, nothing downloaded" in r.err
    assert Journal(root / ".vlmdata").get(REPO_KEY).extra["revision"] == head
    # in words: the repo re-pinned, no byte downloaded
    head = hub.push(REPO_ID, {"README.md": b"# newer words\n"}, repo_type="model")
    r = fetch_repo(cli, manifests, root, hub, "--update")
    assert r.code == 0, r.err
    assert summary_of(r.err) == [
        f"  repinned  {REPO_KEY:<48} {human_bytes(size):>10}",
        "            0 of 4 file(s) downloaded (0 B), 4 re-pinned without a download (unchanged)",
        "0 fetched, 1 re-pinned without a download (unchanged), 0 already present, 0 failed; 0 B downloaded"]


def test_an_update_of_a_repo_with_one_changed_file_downloads_that_file_only(cli, manifests, root, hub):
    files = fetched_repo(cli, manifests, root, hub)
    size = sum(len(v) for k, v in files.items() if k != "README.md")
    new = os.urandom(70_000)  # the same size, other bytes: only the LFS hash tells them apart
    head = hub.push(REPO_ID, {"sub/extra.safetensors": new}, repo_type="model")
    hub.hub.reset()
    hub.cdn.reset()
    dry = fetch_repo(cli, manifests, root, hub, "--update", "--dry-run", "--json")
    assert dry.code == 0 and asked(hub) == []  # (the same plan as with nothing changed: only the hub could tell)
    assert [(i["state"], i["download_bytes"]) for i in dry.json()["items"]] == [("check", None)]
    r = fetch_repo(cli, manifests, root, hub, "--update", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    (out,) = doc["files"]
    assert (out["state"], out["bytes"], doc["bytes"]) == ("fetched", len(new), len(new))
    assert out["repo_files"] == {"downloaded": 1, "repinned": 3, "removed": 0} and out["files"] == 4
    assert out["size"] == size and head in out["source"]
    assert sent_settled(hub.cdn) == len(new)  # that file's bytes, and no other's
    assert (root / "models/tiny-model/sub/extra.safetensors").read_bytes() == new
    # in words: the repo's size, then what of it came; the bytes downloaded are that file's
    config = b'{"model_type": "llama", "hidden_size": 16}'
    hub.push(REPO_ID, {"config.json": config}, repo_type="model")
    r = fetch_repo(cli, manifests, root, hub, "--update")
    assert r.code == 0, r.err
    size += len(config) - len(files["config.json"])
    assert summary_of(r.err) == [
        f"  fetched   {REPO_KEY:<48} {human_bytes(size):>10}",
        f"            1 of 4 file(s) downloaded ({human_bytes(len(config))}), 3 re-pinned without a download "
        "(unchanged)",
        f"1 fetched (3 unchanged file(s) in them only re-pinned), 0 re-pinned without a download (unchanged), "
        f"0 already present, 0 failed; "
        f"{human_bytes(len(config))} downloaded"]
    assert f"done {REPO_KEY}: 1 of 4 file(s) downloaded ({human_bytes(len(config))})" in r.err


def test_an_update_of_a_repo_that_only_lost_a_file_is_no_re_pin(cli, manifests, root, hub):
    fetched_repo(cli, manifests, root, hub)
    hub.push(REPO_ID, {"tokenizer.json": None}, repo_type="model")
    r = fetch_repo(cli, manifests, root, hub, "--update", "--json")
    assert r.code == 0, r.err
    (out,) = r.json()["files"]
    assert (out["state"], out["bytes"]) == ("fetched", 0)  # (its folder changed: views that link it are renewed)
    assert out["repo_files"] == {"downloaded": 0, "repinned": 3, "removed": 1}
    assert not (root / "models/tiny-model/tokenizer.json").exists()
