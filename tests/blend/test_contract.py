"""The dataset contract (vlmdata.contract): what `vlmdata blend` writes is what the reader checks."""
from __future__ import annotations

import json

import pytest

from vlmdata import contract


def test_blend_output_is_what_the_contract_reads(tree, tmp_path):
    """`vlmdata blend` writes the contract's schema and version; the contract's reader accepts it."""
    import datasets

    tree.place_recipe("llava-665k")
    res = tree.blend("llava-665k", out=tmp_path / "o")
    meta = contract.read_blend_meta(res.out)
    assert meta["schema_version"] == contract.SCHEMA_VERSION and meta["image_root"]
    ds = datasets.load_from_disk(str(res.out))
    assert ds.features.arrow_schema.remove_metadata() == contract.BLEND_SCHEMA
    assert not contract.missing_columns(ds.column_names)


def test_reader_accepts_known_and_legacy_versions(tmp_path):
    assert contract.read_blend_meta(tmp_path) == {}  # no blend.json: nothing to check
    (tmp_path / "blend.json").write_text(json.dumps({"image_root": "/x"}))
    assert contract.read_blend_meta(tmp_path)["image_root"] == "/x"  # written before the version was read: 1
    contract.write_blend_meta(tmp_path, contract.blend_meta(image_root="/y", recipe="r"))
    meta = contract.read_blend_meta(tmp_path)
    assert meta["schema_version"] == contract.SCHEMA_VERSION and meta["image_root"] == "/y"


@pytest.mark.parametrize("text, words", [
    ('{"schema_version": 99}', "schema_version 99 is unknown"),
    ('{"schema_version": true}', "must be an integer"),
    ("[1]", "must be a JSON object"),
    ("{", "cannot read it as JSON"),
])
def test_reader_refuses_what_it_cannot_read(tmp_path, text, words):
    (tmp_path / "blend.json").write_text(text)
    with pytest.raises(contract.ContractError) as e:
        contract.read_blend_meta(tmp_path)
    assert words in e.value.render() and str(tmp_path / "blend.json") in e.value.render()
    assert e.value.exit_code == 2


def test_newer_version_says_upgrade(tmp_path):
    (tmp_path / "blend.json").write_text(json.dumps({"schema_version": contract.SCHEMA_VERSION + 1}))
    with pytest.raises(contract.ContractError, match="upgrade"):
        contract.read_blend_meta(tmp_path)


def test_schema_and_features_agree():
    feats = contract.features(contract.arrow_schema(sizes=True, embed=True))
    assert list(feats) == [*contract.REQUIRED_NAMES, contract.IMAGE_WIDTHS, contract.IMAGE_HEIGHTS, contract.IMAGE_BYTES]
    assert feats.arrow_schema.field(contract.CONVERSATIONS).type == contract.CONVERSATIONS_TYPE
    assert contract.missing_columns(["id", "images"]) == ["source", "conversations", "n_images", "text_chars"]


def test_dataset_info_is_what_datasets_writes_and_is_remembered(tmp_path, monkeypatch):
    """The writer's dataset_info.json equals what `datasets` makes for the schema; once made it comes
    from the cache folder (a blend then never imports `datasets`); another schema is made anew."""
    import datasets
    from datasets import arrow_dataset

    from vlmdata.blend import writer

    monkeypatch.setenv("VLMDATA_CACHE_DIR", str(tmp_path / "cache"))
    schema = contract.arrow_schema(extra=True, sizes=False, embed=False)
    info = arrow_dataset.asdict(datasets.DatasetInfo(features=contract.features(schema)))
    expected = json.dumps({k: info[k] for k in sorted(info)}, indent=2)
    assert writer.datasets_needed(schema)
    assert writer.dataset_info_text(schema) == expected
    assert not writer.datasets_needed(schema)
    cached = list((tmp_path / "cache").glob("dataset-info-*.json"))
    assert len(cached) == 1 and cached[0].read_text() == expected
    monkeypatch.setattr(contract, "features", lambda s: pytest.fail("datasets asked again"))
    assert writer.dataset_info_text(schema) == expected
    embedded = contract.arrow_schema(extra=True, sizes=False, embed=True)
    assert writer.datasets_needed(embedded)
