"""Issue 13, trainer side: `vlmtrain` tried as a new user would (config keys, flags, help, version)."""
from __future__ import annotations

import re

import pytest
import yaml

from train_helpers import REPO, run_vlmtrain


def _tiny(*sets: str, extra: tuple[str, ...] = ()):
    args = ["run", "configs/tiny-cpu.yaml", "--dry-run"]
    for s in sets:
        args += ["--set", s]
    return run_vlmtrain(*args, *extra)


# -- item 2: nested model keys ------------------------------------------------------------------
@pytest.mark.parametrize("override,wrong,right", [
    ("text_config.num_hidden_layer=2", "text_config.num_hidden_layer", "num_hidden_layers"),
    ("text_config.hidden_sise=64", "text_config.hidden_sise", "hidden_size"),
    ("vision_config.image_sizes=32", "vision_config.image_sizes", "image_size"),
])
def test_typo_in_a_nested_model_key_is_refused_with_did_you_mean(override, wrong, right):
    r = _tiny(override)
    assert r.code == 2, r.err
    assert f"unknown key `{wrong}`" in r.err and f"did you mean `{right}`?" in r.err


def test_typo_in_a_model_key_inside_the_yaml_names_the_file(tmp_path):
    raw = yaml.safe_load((REPO / "configs" / "tiny-cpu.yaml").read_text())
    raw["text_config"]["num_hidden_layer"] = 2
    p = tmp_path / "typo.yaml"
    p.write_text(yaml.safe_dump(raw))
    r = run_vlmtrain("run", p, "--dry-run")
    assert r.code == 2 and str(p) in r.err and "did you mean `num_hidden_layers`?" in r.err


def test_unknown_model_type_gets_did_you_mean():
    r = _tiny("text_config.model_type=lama")
    assert r.code == 2 and "'lama'" in r.err and "did you mean 'llama'?" in r.err


def test_legacy_config_json_keys_are_still_accepted():
    """Keys that real config.json files carry and transformers converts (rope_theta, torch_dtype) are known."""
    r = _tiny("text_config.rope_theta=10000.0", "text_config.torch_dtype=float32", "text_config.num_hidden_layers=3")
    assert r.code == 0, r.err
    from vlmtrain.config import load_config
    from vlmtrain.model.build import text_config

    cfg = load_config(REPO / "configs" / "tiny-cpu.yaml", ["text_config.num_hidden_layers=3"])
    assert text_config(cfg).num_hidden_layers == 3


def test_overrides_of_a_pretrained_config_are_checked_too(tmp_path):
    """model_name_or_path + text_config overrides (no model_type): checked against the downloaded config's class."""
    from transformers import LlamaConfig

    from vlmdata.errors import UserError
    from vlmtrain.config import load_config
    from vlmtrain.model.build import text_config

    LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2).save_pretrained(tmp_path / "llm")
    raw = {"model_name_or_path": str(tmp_path / "llm"), "vision_tower": "x", "text_config": {"num_hidden_layer": 1},
           "dataset_dir": "x"}
    cfg = load_config(None, raw=raw)
    with pytest.raises(UserError) as e:
        text_config(cfg)
    assert "`text_config.num_hidden_layer`" in e.value.render() and "num_hidden_layers" in e.value.render()
    raw["text_config"] = {"num_hidden_layers": 1}
    assert text_config(load_config(None, raw=raw)).num_hidden_layers == 1


# -- item 20: LLaVA users' keys -----------------------------------------------------------------
def test_report_to_as_a_plain_string():
    from vlmtrain.config import load_config

    cfg = load_config(REPO / "configs" / "tiny-cpu.yaml", ["report_to=tensorboard"])
    assert cfg.report_to == ["tensorboard"]
    assert load_config(REPO / "configs" / "tiny-cpu.yaml", ["report_to=none"]).report_to == []
    r = _tiny("report_to=wandbb")
    assert r.code == 2 and "did you mean 'wandb'?" in r.err


def test_report_to_an_integration_that_is_not_installed_stops_before_the_model(instruct_blend, make_config):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    r = run_vlmtrain("run", make_config(instruct_blend, report_to="wandb"))
    assert r.code == 2 and "`report_to` names wandb, but it is not installed" in r.err and "pip install wandb" in r.err


def test_llava_eval_and_save_keys_are_accepted_with_a_note(tmp_path):
    from vlmtrain.config import load_config

    raw = yaml.safe_load((REPO / "configs" / "tiny-cpu.yaml").read_text())
    raw.update({"evaluation_strategy": "no", "per_device_eval_batch_size": 4, "save_strategy": "steps",
                "report_to": "tensorboard"})
    p = tmp_path / "llava-keys.yaml"
    p.write_text(yaml.safe_dump(raw))
    r = run_vlmtrain("run", p, "--dry-run", "--set", "eval_strategy=no")
    assert r.code == 0, r.err
    assert "note: ignored: evaluation_strategy, eval_strategy, per_device_eval_batch_size (vlmtrain runs no " \
           "evaluation)" in r.err
    cfg = load_config(p)
    assert cfg.save_strategy == "steps" and cfg.report_to == ["tensorboard"]
    assert "evaluation_strategy" not in cfg.to_dict() and "_notes" not in cfg.to_dict()
    assert load_config(p, ["save_strategy=no"]).save_strategy == "no"
    r = run_vlmtrain("run", p, "--dry-run", "--set", "save_strategy=sometimes")
    assert r.code == 2 and "steps, epoch, no" in r.err


def test_save_strategy_reaches_the_trainer(instruct_blend, make_config, tmp_path, monkeypatch):
    from vlmtrain.config import load_config

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))  # _training_args would set it for good
    from vlmtrain.train.run import _training_args

    assert _training_args(load_config(make_config(instruct_blend, save_strategy="epoch"))).save_strategy == "epoch"


@pytest.mark.parametrize("flag,want", [
    (["--data_path", "/data/llava_v1_5_mix665k.json"], "--set data_path=/data/llava_v1_5_mix665k.json"),
    (["--learning_rate=2e-5"], "--set learning_rate=2e-5"),
    (["--image-folder", "/data/img"], "--set image_folder=/data/img"),
    (["--per_device_eval_batch_size", "4"], "--set per_device_eval_batch_size=4"),
])
def test_llava_command_line_flags_answer_with_the_set_form(flag, want):
    r = run_vlmtrain("run", "configs/tiny-cpu.yaml", *flag)
    assert r.code == 2 and want in r.err and "Traceback" not in r.err, r.err


def test_an_unknown_flag_that_is_no_key_keeps_clicks_message():
    r = run_vlmtrain("run", "configs/tiny-cpu.yaml", "--frobnicate")
    assert r.code == 2 and "No such option: --frobnicate" in r.err


# -- item 16: --version --------------------------------------------------------------------------
def test_version():
    from importlib.metadata import version

    r = run_vlmtrain("--version")
    assert r.code == 0 and r.out.startswith(f"vlmtrain {version('vlmdata')} (torch ")


# -- item 19: help ----------------------------------------------------------------------------------
def _examples(text: str) -> list[str]:
    """Example lines, and the continuation lines of an example that ends with a backslash."""
    out, cont = [], False
    for ln in text.splitlines():
        if ln.strip().startswith("vlmtrain ") or cont:
            out.append(ln.split("#")[0].strip())
        cont = ln.rstrip().endswith("\\")
    return out


@pytest.mark.parametrize("command", ["", "run", "make-tiny-data", "plot", "generate", "export-moe-llava"])
def test_help_examples_fit_80_columns_and_choices_are_listed(command):
    import typer.main

    from vlmtrain.cli import app

    group = typer.main.get_command(app)
    source = group.help if not command else group.commands[command].help
    examples = _examples(source)
    assert examples, f"`vlmtrain {command} --help` has no examples"
    r = run_vlmtrain(*([command] if command else []), "--help", env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert r.code == 0
    lines = [ln.strip() for ln in r.out.splitlines()]
    assert max(len(ln) for ln in r.out.splitlines()) <= 80
    for ex in examples:
        assert any(ln.startswith(ex) for ln in lines), f"example wraps at 80 columns: {ex!r}\n{r.out}"
    if command == "make-tiny-data":
        assert re.search(r"instruct\|caption", r.out)


def test_make_tiny_data_rejects_an_unknown_kind_with_the_choices(tmp_path):
    r = run_vlmtrain("make-tiny-data", tmp_path / "d", "--kind", "captions")
    assert r.code == 2 and "instruct" in r.err and "caption" in r.err and not (tmp_path / "d").exists()


# -- found by trying: make-tiny-data ------------------------------------------------------------
def test_make_tiny_data_bad_targets_are_clear_errors(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = run_vlmtrain("make-tiny-data", f)
    assert r.code == 2 and "is a file, not a folder" in r.err and f.read_text() == "x"
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    r = run_vlmtrain("make-tiny-data", home, "--n", "4")
    assert r.code == 2 and "not empty and holds no tiny dataset" in r.err
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]
    r = run_vlmtrain("make-tiny-data", f / "sub", "--n", "4")
    assert r.code == 2 and "Traceback" not in r.err and "cannot create a folder beside" in r.err


def test_make_tiny_data_replaces_its_own_output_and_can_be_moved(tmp_path):
    from vlmtrain.data.dataset import open_blend

    d = tmp_path / "tiny"
    assert run_vlmtrain("make-tiny-data", d, "--n", "6").code == 0
    r = run_vlmtrain("make-tiny-data", d, "--n", "4", "--kind", "caption")
    assert r.code == 0, r.err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    moved = tmp_path / "elsewhere"
    d.rename(moved)
    ds, _, root = open_blend(moved, None)
    assert len(ds) == 4 and root == moved / "images" and all((root / p).is_file() for row in ds["images"] for p in row)


def test_a_key_folded_into_a_nested_setting_is_known_even_when_also_kept_flat():
    """transformers 5.17 moves StableLM's `partial_rotary_factor` into rope_parameters and keeps a flat copy
    too (5.25 keeps none): our check called the shipped StableLM shape's key unknown there."""
    from vlmtrain.config_check import unknown_fields

    class FoldsAndKeeps:  # a config written as a plain class, as 5.17's StableLmConfig behaves
        def __init__(self, hidden_size: int = 8, **kwargs):
            self.hidden_size = hidden_size
            self.rope_parameters = {"rope_type": "default", **{k: v for k, v in kwargs.items() if k.startswith("rope_")
                                                                or k == "partial_rotary_factor"}}
            for k, v in kwargs.items():
                setattr(self, k, v)

    fields = {"hidden_size": 16, "partial_rotary_factor": 0.25, "rope_theta": 1e4, "hidden_sise": 3}
    assert unknown_fields(FoldsAndKeeps, fields) == ["hidden_sise"]
