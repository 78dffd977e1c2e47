"""One record at a time: normalisation and every reason a record is dropped."""
from __future__ import annotations

import pytest

from blend_helpers import turns
from vlmdata.blend import validate as v
from vlmdata.blend.records import Normaliser, RowBuffer


def norm(rec, prefix="", source="src", index=7):
    buf = RowBuffer()
    Normaliser(source, prefix).add(rec, index, buf)
    batch, index, fixes = buf.take(source)
    row = batch.to_pylist()[0]
    assert row["source"] == source and len(buf) == 0
    return {**row, "_index": index[0], "_fixes": fixes[0]}


def bad(rec, prefix=""):
    with pytest.raises(v.Bad) as e:
        Normaliser("src", prefix).add(rec, 0, RowBuffer())
    return e.value.reason


def test_llava_single_image():
    r = norm({"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
              "conversations": turns("<image>\nWhat is this?", "A cat.")})
    assert r["id"] == "000000033471"
    assert r["images"] == ["coco/train2017/000000033471.jpg"]
    assert r["conversations"] == [{"from": "human", "value": "<image>\nWhat is this?"},
                                  {"from": "gpt", "value": "A cat."}]
    assert (r["n_images"], r["text_chars"], r["_index"], r["_fixes"]) == (1, 27, 7, 0)


def test_token_at_the_end_is_kept():
    r = norm({"id": "004539375", "image": "00453/004539375.jpg",
              "conversations": turns("Render a clear and concise summary of the photo.\n<image>", "furniture")},
             prefix="LLaVA-Pretrain/images")
    assert r["images"] == ["LLaVA-Pretrain/images/00453/004539375.jpg"]
    assert r["conversations"][0]["value"].endswith("\n<image>")


def test_missing_token_on_single_image_is_added():
    r = norm({"id": "x", "image": "a.jpg", "conversations": turns("What?", "That.")})
    assert r["conversations"][0]["value"] == "<image>\nWhat?"
    assert r["text_chars"] == len("<image>\nWhat?") + len("That.")
    assert r["_fixes"] == 2


def test_text_only_sharegpt_with_extra_keys():
    r = norm({"id": "wgByO4Y_0", "model": "", "conversations": [
        {"from": "human", "value": "hi", "markdown": None}, {"from": "gpt", "value": "hello", "extra": 1}]})
    assert r["images"] == [] and r["n_images"] == 0
    assert r["conversations"] == [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]


def test_ids():
    assert norm({"id": 12, "conversations": turns("q", "a")})["id"] == "12"
    assert norm({"id": 3.0, "conversations": turns("q", "a")})["id"] == "3"
    assert norm({"idx": "heR0vZB", "conversations": turns("q", "a")})["id"] == "heR0vZB"
    assert norm({"conversations": turns("q", "a")}, source="nlp", index=41)["id"] == "nlp:41"
    assert norm({"id": "", "conversations": turns("q", "a")}, index=2)["id"] == "src:2"
    assert bad({"id": ["x"], "conversations": turns("q", "a")}) == v.BAD_ID


def test_image_list_multi_image():
    r = norm({"image": ["a/1.jpg", "a/2.jpg"], "conversations": turns("<image>\n<image>\nCompare.", "Same.")})
    assert r["images"] == ["a/1.jpg", "a/2.jpg"] and r["n_images"] == 2
    assert norm({"image": [], "conversations": turns("q", "a")})["images"] == []
    assert norm({"image": None, "conversations": turns("q", "a")})["images"] == []


def test_leading_non_human_turn_removed():
    r = norm({"id": "x", "conversations": [{"from": "gpt", "value": "Hi!"}] + turns("q", "a")})
    assert [t["value"] for t in r["conversations"]] == ["q", "a"]
    assert r["_fixes"] == 1


def test_paths_are_normalised():
    assert norm({"image": "./coco//1.jpg", "conversations": turns("<image>q", "a")})["images"] == ["coco/1.jpg"]


@pytest.mark.parametrize("rec, reason", [
    (["not", "an", "object"], v.NOT_OBJECT),
    ({"id": "x"}, v.NO_CONVERSATIONS),
    ({"id": "x", "conversations": []}, v.NO_CONVERSATIONS),
    ({"id": "x", "conversations": "hello"}, v.NO_CONVERSATIONS),
    ({"id": "x", "conversations": [{"from": "gpt", "value": "only"}]}, v.NO_CONVERSATIONS),
    ({"id": "x", "conversations": [["human", "q"], ["gpt", "a"]]}, v.BAD_TURN),
    ({"id": "x", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "a"}]}, v.BAD_TURN),
    ({"id": "x", "conversations": [{"from": "human"}, {"from": "gpt", "value": "a"}]}, v.BAD_TURN),
    ({"id": "x", "conversations": [{"from": "human", "value": "q"}, {"from": "system", "value": "a"}]},
     v.UNKNOWN_ROLE),
    ({"id": "x", "conversations": turns("q", "a") + [{"from": "gpt", "value": "again"}, {"from": "human", "value": "q"}]},
     v.NOT_ALTERNATING),
    ({"id": "x", "conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q2"}]},
     v.NOT_ALTERNATING),
    ({"id": "x", "conversations": turns("q", "a", "q2")}, v.ENDS_WITH_HUMAN),
    ({"id": "x", "conversations": turns("q", "")}, v.EMPTY_VALUE),
    ({"id": "x", "conversations": turns(" \n ", "a")}, v.EMPTY_VALUE),
    ({"id": "x", "video": "v.mp4", "conversations": turns("<video>q", "a")}, v.VIDEO),
    ({"id": "x", "image": 5, "conversations": turns("<image>q", "a")}, v.BAD_IMAGE_FIELD),
    ({"id": "x", "image": ["a.jpg", 5], "conversations": turns("<image><image>q", "a")}, v.BAD_IMAGE_FIELD),
    ({"id": "x", "image": "", "conversations": turns("<image>q", "a")}, v.BAD_IMAGE_PATH),
    ({"id": "x", "image": "/abs/a.jpg", "conversations": turns("<image>q", "a")}, v.BAD_IMAGE_PATH),
    ({"id": "x", "image": "C:\\img\\a.jpg", "conversations": turns("<image>q", "a")}, v.BAD_IMAGE_PATH),
    ({"id": "x", "image": "../a.jpg", "conversations": turns("<image>q", "a")}, v.BAD_IMAGE_PATH),
    ({"id": "x", "image": "coco/../../a.jpg", "conversations": turns("<image>q", "a")}, v.BAD_IMAGE_PATH),
    ({"id": "x", "image": "a.jpg", "conversations": turns("<image><image>q", "a")}, v.TOKEN_MISMATCH),
    ({"id": "x", "image": ["a.jpg", "b.jpg"], "conversations": turns("<image>q", "a")}, v.TOKEN_MISMATCH),
    ({"id": "x", "image": ["a.jpg", "b.jpg"], "conversations": turns("q", "a")}, v.TOKEN_MISMATCH),
    ({"id": "x", "conversations": turns("<image>\nq", "a")}, v.TOKEN_TEXT_ONLY),
    ({"id": "x", "image": "a.jpg", "conversations": turns("q", "see <image>")}, v.TOKEN_IN_GPT),
])
def test_bad_records(rec, reason):
    assert bad(rec) == reason


def test_prefix_does_not_let_a_path_escape():
    assert bad({"image": "../x.jpg", "conversations": turns("<image>q", "a")}, prefix="allava") == v.BAD_IMAGE_PATH


def test_a_bad_record_leaves_the_buffer_unchanged():
    buf = RowBuffer()
    n = Normaliser("s")
    n.add({"id": "a", "conversations": turns("q", "a")}, 0, buf)
    with pytest.raises(v.Bad):
        n.add({"id": "b", "image": "x.jpg", "conversations": turns("<image><image>", "a")}, 1, buf)
    assert len(buf) == 1 and buf.take("s")[0].num_rows == 1


def test_long_conversation_takes_the_slow_path():
    r = norm({"id": "x", "conversations": turns(*(["q", "a"] * 150))})
    assert len(r["conversations"]) == 300


def test_batch_path_check_agrees_with_clean_image_path():
    """_all_plain says True only when clean_image_path returns every path unchanged (it may say
    False for a clean batch: then each path is cleaned on its own)."""
    import random

    from vlmdata.blend.records import _all_plain

    rng = random.Random(0)
    alphabet = ["a", "b", "/", ".", ":", "\\", "\n", " ", "é", "x.jpg"]
    for _ in range(20000):
        paths = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(1, 3))]
        if _all_plain(paths):
            for p in paths:
                assert v.clean_image_path(p) == p, paths
    assert _all_plain(["coco/train2017/1.jpg", "gqa/images/2.jpg"])
    for odd in ("", "/abs.jpg", "./x.jpg", "a//b.jpg", "a/./b.jpg", "c:/x.jpg", "a\\b.jpg"):
        assert not _all_plain(["coco/1.jpg", odd]), odd


@pytest.mark.parametrize("model", [None, "", "gpt-4", 'quo"te é \n'])
@pytest.mark.parametrize("rid", ["a", 7, 0, 2 ** 70])
def test_of_struct_is_of_record_for_a_record_with_an_int_id_or_a_model(model, rid):
    from vlmdata.blend import extra

    if model is None and type(rid) is str:
        return  # (the common record: no record_extra at all)
    more = {} if model is None else {"model": model}
    for rec, image in (({"id": rid, "image": "x.jpg", "conversations": [], **more}, "x.jpg"),
                       ({"id": rid, "conversations": [], **more}, None)):
        assert extra.of_struct(rid if type(rid) is int else None, model) == extra.of_record(rec, image)


def test_text_chars_count_characters_not_bytes():
    """text_chars is Python's len of the turns, whether a batch is all ASCII (read from the UTF-8
    column's offsets) or not."""
    buf = RowBuffer()
    n = Normaliser("s")
    n.add({"id": "a", "conversations": turns("héllo 中文", "ok")}, 0, buf)
    n.add({"id": "b", "conversations": turns("plain", "text")}, 1, buf)
    assert buf.take("s")[0].column("text_chars").to_pylist() == [10, 9]
    n.add({"id": "c", "conversations": turns("plain", "text")}, 2, buf)
    assert buf.take("s")[0].column("text_chars").to_pylist() == [9]


def test_row_buffer_keeps_row_order_across_pieces_and_appended_rows():
    """Rows made into a piece at once (a batch of Records that are all good), rows appended one by
    one, another piece: ``take`` hands them out in that order, cutting a piece where the limit
    falls, each piece a chunk of the table as it was made (no copy)."""
    import msgspec
    import numpy as np

    from vlmdata.blend.records import Record

    def records(ids):
        return [msgspec.convert({"id": i, "image": f"c/{i}.jpg", "conversations": turns("<image>\nq", "a")}, Record)
                for i in ids]

    buf, n = RowBuffer(), Normaliser("s")
    assert n.add_all(records(["a", "b", "c"]), 0, buf) == []
    assert len(buf.pieces) == 1
    n.add({"id": "d", "conversations": turns("q", "a")}, 3, buf)
    n.add({"id": "e", "image": "c/e.jpg", "conversations": turns("q", "a")}, 4, buf)
    assert n.add_all(records([6, "g"]), 5, buf) == []
    assert len(buf) == 7
    first, index, fixes = buf.take("s", 4)
    assert first.column("id").to_pylist() == ["a", "b", "c", "d"] and index.tolist() == [0, 1, 2, 3]
    rest, index, fixes = buf.take("s")
    assert rest.column("id").to_pylist() == ["e", "6", "g"] and index.tolist() == [4, 5, 6]
    assert fixes.tolist() == [1 << v.FIXES.index(v.FIX_TOKEN_ADDED), 0, 0]
    assert rest.column("record_extra").to_pylist() == [None, '{"keys":{"id":6}}', None]
    assert rest.column("source").to_pylist() == ["s"] * 3 and len(buf) == 0
    assert buf.take("s")[0].num_rows == 0
    assert np.asarray(first.column("n_images")).tolist() == [1, 1, 1, 0]
    assert [c.num_rows for c in first.to_batches()] == [3, 1] and [c.num_rows for c in rest.to_batches()] == [1, 2]


def test_a_windows_relative_path_is_not_called_absolute():
    """`coco\\train2017\\a.jpg` (a JSON written on Windows) was reported as an 'absolute image
    path', which sends the user looking for a leading '/' that is not there."""
    with pytest.raises(v.Bad) as e:
        v.clean_image_path("coco\\train2017\\a.jpg")
    assert e.value.reason == v.BAD_IMAGE_PATH and "absolute" not in e.value.detail and "'\\' separators" in e.value.detail
    for absolute in ("/abs/a.jpg", "C:\\img\\a.jpg", "C:/img/a.jpg"):
        with pytest.raises(v.Bad) as e:
            v.clean_image_path(absolute)
        assert e.value.detail.startswith("absolute image path")
