"""The CLI's user-facing behaviour: list, info, status, and clear errors with exit code 2."""
from __future__ import annotations

from vlmdata.manifest import load_catalog


def test_list_names_every_dataset_layout_and_recipe(cli):
    r = cli("list")
    assert r.code == 0
    cat = load_catalog()
    for name in list(cat.datasets) + list(cat.layouts) + list(cat.blends):
        assert f"  {name} " in r.out
    doc = cli("list", "--json").json()
    assert len(doc["datasets"]) == len(cat.datasets) >= 14
    assert {x["name"] for x in doc["layouts"]} >= {"llava", "sharegpt4v", "moe-llava", "llava-pretrain-case"}


def test_info_coco_shows_the_real_url_and_size(cli):
    r = cli("info", "coco")
    assert r.code == 0
    assert "http://images.cocodataset.org/zips/train2017.zip" in r.out
    assert "19,336,861,798 bytes" in r.out
    assert "llava:coco/train2017" in r.out  # where it lands in a layout
    doc = cli("info", "coco", "--json").json()
    assert doc["files"][0]["size"] == 19_336_861_798


def test_info_on_layout_and_unknown_name(cli):
    assert "coco/train2017" in cli("info", "llava").out
    r = cli("info", "cocoa")
    assert r.code == 2 and "unknown dataset, layout or blend recipe 'cocoa'" in r.err and "did you mean coco" in r.err
    assert "Traceback" not in r.err


def test_unknown_names_exit_2(cli, tmp_path):
    r = cli("plan", "nosuchdata", "--root", str(tmp_path))
    assert r.code == 2 and "unknown dataset" in r.err
    r = cli("layout", "check", "--layout", "nosuch", str(tmp_path))
    assert r.code == 2 and "unknown layout" in r.err
    r = cli("plan", "coco:nosuch.zip", "--root", str(tmp_path))
    assert r.code == 2 and "has no file" in r.err


def test_root_that_is_a_file_exits_2(cli, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    for args in (["status"], ["plan", "coco"], ["layout", "build", "--layout", "llava"]):
        r = cli(*args, "--root", str(f))
        assert r.code == 2, args
        assert "is a file" in r.err


def test_an_empty_root_is_refused_not_taken_for_the_current_folder(cli, tmp_path, monkeypatch):
    """`--root "$DATA"` with DATA unset: click made "" the current folder, and a fetch filled it."""
    monkeypatch.chdir(tmp_path)
    for args in (["status", "--root", ""], ["--root", "", "status"], ["plan", "coco", "--root", " "],
                 ["layout", "build", "--layout", "llava", "--root", ""]):  # (the last one: through typer)
        r = cli(*args)
        assert r.code == 2, (args, r.err)
        assert "--root is empty (a shell variable that is not set?)" in r.err, (args, r.err)
    # the same for the other folders and addresses: an empty --mirror fetched from the origins
    for flag in ("--mirror", "--manifests", "--hf-endpoint"):
        r = cli("plan", "coco", flag, "")
        assert r.code == 2 and f"{flag} is empty (a shell variable that is not set?)" in r.err, (flag, r.err)
    assert list(tmp_path.iterdir()) == []


def test_root_that_cannot_be_created_exits_2(cli, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    r = cli("fetch", "coco", "--root", str(f / "below"))  # (layout build says the root does not exist)
    assert r.code == 2 and "cannot create the root" in r.err


def test_usage_errors_exit_2(cli):
    assert cli("plan").code == 2
    assert cli("plan", "coco", "--no-such-option").code == 2


def test_missing_manifest_folder_exits_2(cli, tmp_path):
    r = cli("list", "--manifests", str(tmp_path / "nope"))
    assert r.code == 2 and "does not exist" in r.err


def test_options_before_and_after_the_command(cli, tmp_path, manifests):
    a = cli("--manifests", str(manifests), "--root", str(tmp_path), "plan", "tiny", "--json").json()
    b = cli("plan", "tiny", "--manifests", str(manifests), "--root", str(tmp_path), "--json").json()
    assert a["download_bytes"] == b["download_bytes"] == 1200
    env = cli("plan", "tiny", "--json", env={"VLMDATA_MANIFESTS": str(manifests), "VLMDATA_ROOT": str(tmp_path)})
    assert env.json()["download_bytes"] == 1200


def test_status_on_a_fresh_root(cli, tmp_path):
    r = cli("status", "--root", str(tmp_path / "fresh"))
    assert r.code == 0
    assert "coco" in r.out and "absent" in r.out
    rows = cli("status", "--root", str(tmp_path / "fresh"), "--json").json()
    assert {row["state"] for row in rows} == {"absent"}


def test_a_usage_error_of_a_typer_without_typer_exception_exits_2(capsys):
    """typer 0.26-0.27 raise their vendored click's ClickException for usage errors and have no
    TyperException: the handler used to die on `typer.TyperException` (AttributeError) there."""
    import pytest

    import typer  # (run_app looks typer up in sys.modules)
    from vlmdata.errors import run_app

    assert typer is not None

    class ClickException(Exception):  # as click names it, not a subclass of anything typer has
        def format_message(self) -> str:
            return "No such option: --nope"

        def show(self) -> None:
            print("Error: No such option: --nope")

    def invoke():
        raise ClickException()

    with pytest.raises(SystemExit) as e:
        run_app(invoke, interrupted="x")
    assert e.value.code == 2 and "No such option: --nope" in capsys.readouterr().out
