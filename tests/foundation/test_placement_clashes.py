"""Two files of the catalog that would place onto one path are refused when the manifests load,
naming both files, their TOMLs and the path; several archives filling one folder stay allowed."""
from __future__ import annotations

from pathlib import Path

import pytest

from vlmdata.errors import UserError
from vlmdata.manifest import load_catalog

HEAD = 'name = "{name}"\ntitle = "t"\nlicense = "l"\n'


def _file(name: str, place: str) -> str:
    return (f'\n[[files]]\nname = "{name}"\nsize = 10\nsha256 = "unknown"\n'
            f'sources = [{{ kind = "http", url = "http://x.org/{name}" }}]\nplace = {place}\n')


def _dataset(folder: Path, name: str, *files: str) -> Path:
    path = folder / "datasets" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD.format(name=name) + "".join(files))
    return path


def _refused(*folders: Path) -> UserError:
    with pytest.raises(UserError) as e:
        load_catalog(list(folders))
    assert e.value.exit_code == 2
    return e.value


def test_two_files_of_one_dataset_placed_at_one_path(tmp_path):
    toml = _dataset(tmp_path / "m", "clash", _file("a.json", '{ kind = "file", to = "clash/a.json" }'),
                    _file("b.json", '{ kind = "file", to = "clash/a.json" }'))
    err = str(_refused(tmp_path / "m"))
    assert f"{toml}: key 'files[1].place.to'" in err
    assert "clash:b.json places a file at 'clash/a.json', where clash:a.json" in err and "would overwrite" in err


def test_two_datasets_in_two_folders_placed_at_one_path(tmp_path):
    first = _dataset(tmp_path / "m1", "one", _file("a.json", '{ kind = "file", to = "shared/a.json" }'))
    second = _dataset(tmp_path / "m2", "two", _file("b.json", '{ kind = "file", to = "shared/a.json" }'))
    err = str(_refused(tmp_path / "m1", tmp_path / "m2"))
    assert "two:b.json" in err and "one:a.json" in err and "'shared/a.json'" in err
    assert str(first) in err and str(second) in err


def test_a_shipped_path_taken_by_a_user_file(tmp_path):
    """A user dataset placing a file where the shipped llava_instruct puts its JSON."""
    _dataset(tmp_path / "m", "mine", _file("x.json", '{ kind = "file", to = "LLaVA-Instruct-150K/llava_v1_5_mix665k.json" }'))
    err = str(_refused(tmp_path / "m"))
    assert "mine:x.json" in err and "llava_instruct:llava_v1_5_mix665k.json" in err


@pytest.mark.parametrize("first,second,needle", [
    ('{ kind = "extract", inner = "", to = "c/imgs" }', '{ kind = "file", to = "c/imgs/a.json" }', "inside 'c/imgs'"),
    ('{ kind = "images", to = "c/imgs" }', '{ kind = "file", to = "c/imgs/sub/a.json" }', "inside 'c/imgs'"),
    ('{ kind = "extract", inner = "", to = "c/imgs" }', '{ kind = "file", to = "c/imgs" }', "a file and a folder"),
    ('{ kind = "file", to = "c/a.json" }', '{ kind = "extract", inner = "", to = "c/a.json/x" }', "under 'c/a.json'"),
    ('{ kind = "file", to = "c/a.json" }', '{ kind = "file", to = "c/a.json/b.json" }', "under 'c/a.json'"),
])
def test_a_file_and_a_folder_that_overlap(tmp_path, first, second, needle):
    _dataset(tmp_path / "m", "c", _file("one", first), _file("two", second))
    err = str(_refused(tmp_path / "m"))
    assert needle in err and "c:one" in err and "c:two" in err


def test_folders_filled_together_and_neighbours_load(tmp_path):
    """Several archives and a URL list into one folder (ALLaVA, OCR-VQA), files beside it, and a file
    the repo lacks put into a model's folder are all allowed."""
    _dataset(tmp_path / "m", "ok",
             _file("a.zip", '{ kind = "extract", inner = "", to = "ok/images" }'),
             _file("b.tar", '{ kind = "extract", inner = "", to = "ok/images" }'),
             _file("c.json", '{ kind = "file", to = "ok/images.json" }'),
             _file("d.json", '{ kind = "file", to = "ok/d.json" }'))
    cat = load_catalog([tmp_path / "m"])
    assert [f.place.to for f in cat.dataset("ok").files] == ["ok/images", "ok/images", "ok/images.json", "ok/d.json"]


def test_a_file_inside_a_repo_folder_is_allowed(tmp_path):
    repo = ('\n[[files]]\nname = "org/model"\nsize = "unknown"\nsha256 = "unknown"\n'
            'sources = [{ kind = "hfrepo", repo_type = "model", repo_id = "org/model", revision = "main" }]\n'
            'place = { kind = "repo", to = "models/m" }\n')
    _dataset(tmp_path / "m", "model", repo, _file("extra.json", '{ kind = "file", to = "models/m/extra.json" }'))
    assert load_catalog([tmp_path / "m"]).dataset("model").file("extra.json").place.to == "models/m/extra.json"


def test_the_cli_refuses_a_clash_with_exit_2(tmp_path, cli):
    _dataset(tmp_path / "m", "clash", _file("a.json", '{ kind = "file", to = "clash/a.json" }'),
             _file("b.json", '{ kind = "file", to = "clash/a.json" }'))
    r = cli("--manifests", str(tmp_path / "m"), "info", "clash")
    assert r.code == 2 and "clash:b.json places a file at 'clash/a.json'" in r.err and "Traceback" not in r.err
