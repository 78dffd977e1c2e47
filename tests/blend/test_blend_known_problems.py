"""The known problems of the real datasets (datasets.md §3, §7, §9, §11; ShareGPT4V §1.6; ALLaVA §3.6;
Vision-Flan §4; MoE-LLaVA §6.5), one record each, shaped as the real files hold them, through a
whole blend: what is kept (and how it is changed), what is dropped (and with which reason, index,
line and id), and that every record read is accounted for in blend.json and dropped.jsonl.

The reference repos' own outcome for each shape, for comparison (llava/train/train.py,
moellava/train/train.py, share4v/train/train.py at the mirrored commits) is in the comment of
each record; docs/blend.md says where vlmdata differs on purpose.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from blend_helpers import rows, turns, write_json
from vlmdata.blend import validate as v
from vlmdata.blend.pipeline import Options, run_blend, run_report
from vlmdata.blend.report import render_blend, render_report
from vlmdata.blend.recipe import resolve
from vlmdata.manifest import load_catalog
from vlmdata.state import Root

COCO = "coco/train2017/000000033471.jpg"


def _image(fmt: str, mode: str = "RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (6, 4), 90 if mode in ("L", "P") else (90, 20, 200) if mode == "RGB" else (1, 2, 3, 4)).save(buf, format=fmt)
    return buf.getvalue()


JPEG = _image("JPEG")
# name -> bytes on disk (paths relative to the image root)
IMAGES: dict[str, bytes] = {
    COCO: JPEG,
    # OCR-VQA: loadDataset.py kept the URL's extension; mirrors named GIF and PNG bytes .jpg (#593, #1618)
    "ocr_vqa/images/1437717772.jpg": _image("GIF", "P"),
    "ocr_vqa/images/0001055178.jpg": _image("PNG"),
    "ocr_vqa/images/0001714600.gif": _image("GIF", "P"),  # the JSON says .jpg: not normalised
    # OCR-VQA book covers in CMYK JPEG
    "ocr_vqa/images/0002007770.jpg": _image("JPEG", "CMYK"),
    # Visual Genome's empty files (#593, #601)
    "vg/VG_100K_2/214.jpg": b"",
    # a download cut short: present, but only --deep finds it
    "gqa/images/2354786.jpg": JPEG[: len(JPEG) // 2],
    "sam/images/sa_545504.jpg": JPEG,
    "llava/llava_pretrain/images/00453/004539375.jpg": JPEG,
    "allava/allava_laion/images/100277305.jpeg": JPEG,
    "train_image_video/llava_image_tune/coco/train2017/000000000009.jpg": JPEG,
    "train_image_video/lvis_tune/a.jpg": JPEG,
    "train_image_video/lvis_tune/b.jpg": JPEG,
}

# (record, fate): fate is "kept", or the drop reason
RECORDS: list[tuple[dict[str, Any], str]] = [
    # mix665k: an int id (#981, #1535): LLaVA json.loads it and never reads it
    ({"id": 4539375, "image": COCO, "conversations": turns("<image>\nWhat is this?", "A cat.", "Color?", "Black.")},
     "kept"),
    # OCR-VQA: GIF / PNG bytes named .jpg; PIL opens them by content, as in LLaVA
    ({"id": "1437717772", "image": "ocr_vqa/images/1437717772.jpg",
      "conversations": turns("<image>\nWho wrote this book?", "Kathleen Mcguire")}, "kept"),
    ({"id": "0001055178", "image": "ocr_vqa/images/0001055178.jpg",
      "conversations": turns("<image>\nWhat is the title of this book?", "Gods of Egypt")}, "kept"),
    ({"id": "0002007770", "image": "ocr_vqa/images/0002007770.jpg",
      "conversations": turns("<image>\nIs this a comedy book?", "No")}, "kept"),
    # OCR-VQA: only <id>.gif on disk, and a dead URL (no file at all): LLaVA raises FileNotFoundError
    ({"id": "0001714600", "image": "ocr_vqa/images/0001714600.jpg",
      "conversations": turns("<image>\nWho is the author?", "Jane")}, v.MISSING_IMAGE),
    ({"id": "0001047973", "image": "ocr_vqa/images/0001047973.jpg",
      "conversations": turns("<image>\nWhat type of book is this?", "Travel")}, v.MISSING_IMAGE),
    # Visual Genome: a 0-byte file (PIL: cannot identify image file)
    ({"id": "214", "image": "vg/VG_100K_2/214.jpg", "conversations": turns("<image>\nWhere is the man?", "Left")},
     v.CORRUPT_IMAGE),
    # a truncated JPEG: kept without --deep (test below)
    ({"id": "2354786", "image": "gqa/images/2354786.jpg", "conversations": turns("<image>\nIs it sunny?", "Yes")},
     "kept"),
    # ShareGPT text-only records of mix665k, with `model` (#546, #835): LLaVA gives them a black image
    ({"id": "wgByO4Y_0", "model": "", "conversations": turns("Write a haiku about rain.", "Soft rain on the roof")},
     "kept"),
    # a conversation that starts with the assistant: LLaVA drops the first turn
    ({"id": "i6IyJda_2", "model": "", "conversations": [{"from": "gpt", "value": "Sure, go on."}]
      + turns("Continue the story.", "The end.")}, "kept"),
    # ... whose dropped turn held the <image>: LLaVA then splices no image (image_features[0:0])
    ({"id": "lead-img", "image": COCO, "conversations": [{"from": "gpt", "value": "<image>\nHello."}]
      + turns("What is on the table?", "A cake.")}, "kept"),
    # a leading system turn: LLaVA's roles[...] raises KeyError('system')
    ({"id": "sys-0", "conversations": [{"from": "system", "value": "Be brief."}] + turns("Hi", "Hello")}, "kept"),
    # odd roles later in the conversation: KeyError in LLaVA, a random other sample in MoE-LLaVA
    ({"id": "bing-1", "conversations": turns("q", "a") + [{"from": "bing", "value": "x"}, {"from": "gpt", "value": "y"}]},
     v.UNKNOWN_ROLE),
    ({"id": "oai-1", "conversations": turns("q", "a") + [{"from": "user", "value": "x"}, {"from": "assistant", "value": "y"}]},
     v.UNKNOWN_ROLE),
    # a last unanswered question: LLaVA's length arithmetic fails, the whole sample trains nothing
    ({"id": "open-q", "conversations": turns("q", "a", "and then?")}, v.ENDS_WITH_HUMAN),
    # an empty answer (Vision-Flan holds one): LLaVA writes "ASSISTANT:" without </s>, a mismatch, no loss
    ({"id": "vflan-empty", "image": COCO, "task_name": "VQA-E", "conversations": turns("<image>\nWhy?", "")},
     v.EMPTY_VALUE),
    ({"id": "blank", "conversations": turns("q", " \n\t")}, v.EMPTY_VALUE),
    # LCS-558K: <image> at the end of the human turn (kept where it is; the templates move it)
    ({"id": "004539375", "image": "llava/llava_pretrain/images/00453/004539375.jpg",
      "conversations": turns("Render a clear and concise summary of the photo.\n<image>",
                             "select luxury furniture 3 - inch gel memory foam mattress topper")}, "kept"),
    # one image and no <image>: LLaVA trains on the text and never splices the image
    ({"id": "no-token", "image": COCO, "conversations": turns("What is this?", "A cat.")}, "kept"),
    # one image, two markers in one turn: LLaVA folds them into one; MoE-LLaVA splices two features for one image
    ({"id": "two-tokens", "image": COCO, "conversations": turns("<image>\n<image>\nWhat is this?", "A cat.")},
     v.TOKEN_MISMATCH),
    # one image, markers in two turns: LLaVA gives the sample the next sample's image features (or IndexError)
    ({"id": "two-turns", "image": COCO, "conversations": turns("<image>\nq", "a", "<image>\nq2", "a2")},
     v.TOKEN_MISMATCH),
    ({"id": "gpt-token", "image": COCO, "conversations": turns("<image>\nq", "It shows <image>.")}, v.TOKEN_IN_GPT),
    ({"id": "text-token", "conversations": turns("What does <image> do in HTML?", "It embeds one.")},
     v.TOKEN_TEXT_ONLY),
    # unicode: kept as it is; a lone surrogate (a cut emoji) cannot be UTF-8
    ({"id": "uni", "conversations": turns("Zoë 🎉 日本語\u200b?", "Ça va — ok")}, "kept"),
    ({"id": "surrogate", "conversations": turns("cut emoji \ud83c", "ok")}, v.NOT_UNICODE),
    # ShareGPT4V: SAM and web-celebrity images (Choi_Min-sik.jpg is missing from the web data, #194)
    ({"id": "sa_545504", "image": "sam/images/sa_545504.jpg", "conversations": turns("<image>\nDescribe.", "A street.")},
     "kept"),
    ({"id": "Choi_Min-sik", "image": "web-celebrity/images/Choi_Min-sik.jpg",
      "conversations": turns("<image>\nWho is this?", "Choi Min-sik")}, v.MISSING_IMAGE),
    # ALLaVA: LAION records carry original_caption and url; Evol-Instruct has idx and no image
    ({"id": "allava_laion_cap_100277305", "image": "allava/allava_laion/images/100277305.jpeg",
      "conversations": turns("<image>\nPlease depict the image in words.", "A red car."),
      "original_caption": "car", "url": "http://x/100277305.jpg"}, "kept"),
    ({"idx": "heR0vZB", "conversations": turns("Explain recursion.", "A function calling itself.")}, "kept"),
    # Vision-Flan: the same id twice (its ids are not unique)
    ({"id": "VQA-E_0", "image": COCO, "task_name": "VQA-E", "conversations": turns("<image>\nq1", "a1")}, "kept"),
    ({"id": "VQA-E_0", "image": COCO, "task_name": "VQA-E", "conversations": turns("<image>\nq2", "a2")}, "kept"),
    # MoE-LLaVA: an image list, no id, and a video record
    ({"image": ["train_image_video/lvis_tune/a.jpg", "train_image_video/lvis_tune/b.jpg"],
      "conversations": turns("<image>\n<image>\nWhat differs?", "The color.")}, "kept"),
    ({"image": "train_image_video/llava_image_tune/coco/train2017/000000000009.jpg",
      "conversations": turns("<image>\nq", "a")}, "kept"),
    ({"id": 7, "video": "videochatgpt_tune/v_1.mp4", "conversations": turns("<video>\nWhat happens?", "Nothing.")},
     v.VIDEO),
]
RECORD_LEVEL = {v.UNKNOWN_ROLE, v.ENDS_WITH_HUMAN, v.EMPTY_VALUE, v.TOKEN_MISMATCH, v.TOKEN_IN_GPT,
                v.TOKEN_TEXT_ONLY, v.NOT_UNICODE, v.VIDEO}


def _blend(tmp_path: Path, **opts: Any):
    images = tmp_path / "images"
    for rel, data in IMAGES.items():
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (images / rel).write_bytes(data)
    src = tmp_path / "known.json"
    if not src.exists():
        # json.dumps escapes the lone surrogate as \ud83c, as the real files spell one
        write_json(src, [r for r, _ in RECORDS], indent=1)
    recipe = tmp_path / "known.toml"
    recipe.write_text('name = "known"\ntitle = "known problems"\nstage = "finetune"\nlayout = "llava"\nseed = 0\n'
                      f'[[entries]]\nname = "mix"\npath = "{src}"\n', encoding="utf-8")
    catalog = load_catalog()
    res = resolve(catalog.blend(str(recipe)), catalog, Root(tmp_path / "root"), image_root=images)
    out = tmp_path / ("out-deep" if opts.get("deep") else "out")
    return run_blend(res, Options(progress=False, max_drop=100.0, jobs=1, **opts), out)


def _written_id(rec: dict[str, Any]) -> str | None:
    """The record's own id as dropped.jsonl writes it (a lone surrogate escaped, as JSON spells it)."""
    rid = rec.get("id", rec.get("idx"))
    return None if rid is None else str(rid).encode("utf-8", "backslashreplace").decode()


def _at(**match: Any) -> int:
    return next(i for i, (r, _) in enumerate(RECORDS) if all(r.get(k) == x for k, x in match.items()))


def _fates(res) -> tuple[dict[int, str], list[dict[str, Any]], list[dict[str, Any]]]:
    dropped = [json.loads(x) for x in (res.out / "dropped.jsonl").read_text().splitlines()]
    fates = {d["index"]: d["reason"] for d in dropped}
    return fates, dropped, rows(res.out)


def test_every_known_problem_has_its_fate_and_every_record_is_counted(tmp_path):
    res = _blend(tmp_path)
    fates, dropped, kept = _fates(res)
    want = {i: fate for i, (_, fate) in enumerate(RECORDS) if fate != "kept"}
    assert fates == want
    counts = res.meta["counts"]["mix"]
    assert counts["read"] == counts["sampled"] == len(RECORDS)
    assert counts["kept"] == len(kept) == len(RECORDS) - len(want)
    assert sum(counts["dropped"].values()) == len(dropped) == len(want)  # nothing dropped uncounted
    for d in dropped:  # each drop says where: index, id, and the line for what the reading found
        rec = RECORDS[d["index"]][0]
        assert d["id"] == _written_id(rec), d
        assert (d["line"] is not None) == (d["reason"] in RECORD_LEVEL), d
        assert d["detail"]
    assert counts["fixed"] == {v.FIX_LEADING_TURN: 3, v.FIX_TOKEN_ADDED: 2}
    assert counts["images"]["missing"] == 3 and counts["images"]["corrupt"] == 1


def test_kept_records_are_what_the_trainer_should_see(tmp_path):
    _, _, kept = _fates(_blend(tmp_path))
    by_id = {r["id"]: r for r in kept}
    assert by_id["4539375"]["conversations"][0]["value"] == "<image>\nWhat is this?"
    assert by_id["wgByO4Y_0"]["images"] == [] and by_id["wgByO4Y_0"]["n_images"] == 0
    assert [t["from"] for t in by_id["i6IyJda_2"]["conversations"]] == ["human", "gpt"]
    assert [t["value"] for t in by_id["sys-0"]["conversations"]] == ["Hi", "Hello"]
    # the marker of the dropped leading turn is put back at the start of the first human turn
    assert by_id["lead-img"]["conversations"][0]["value"] == "<image>\nWhat is on the table?"
    assert by_id["no-token"]["conversations"][0]["value"] == "<image>\nWhat is this?"
    assert by_id["004539375"]["conversations"][0]["value"].endswith("photo.\n<image>")
    assert by_id["uni"]["conversations"][0]["value"] == "Zoë 🎉 日本語\u200b?"
    assert by_id["heR0vZB"]["images"] == []
    assert json.loads(by_id["allava_laion_cap_100277305"]["record_extra"])["keys"] == {
        "original_caption": "car", "url": "http://x/100277305.jpg"}
    # the repeated Vision-Flan id is made unique; MoE-LLaVA's id-less records get <source>:<index>
    first = _at(id="VQA-E_0")
    assert {f"mix:VQA-E_0#{first}", f"mix:VQA-E_0#{first + 1}"} <= set(by_id) and "VQA-E_0" not in by_id
    listed = f"mix:{_at(image=['train_image_video/lvis_tune/a.jpg', 'train_image_video/lvis_tune/b.jpg'])}"
    assert by_id[listed]["images"] == ["train_image_video/lvis_tune/a.jpg", "train_image_video/lvis_tune/b.jpg"]
    assert by_id[listed]["n_images"] == 2
    assert len(set(by_id)) == len(kept)


def test_deep_finds_the_truncated_jpeg_and_decodes_gif_png_and_cmyk_named_jpg(tmp_path):
    shallow, _, _ = _fates(_blend(tmp_path))
    deep_res = _blend(tmp_path, deep=True)
    deep, dropped, _ = _fates(deep_res)
    gqa = _at(id="2354786")
    assert gqa not in shallow and deep[gqa] == v.CORRUPT_IMAGE
    assert {i: r for i, r in deep.items() if i != gqa} == shallow  # GIF, PNG and CMYK bytes named .jpg decode
    assert deep_res.meta["counts"]["mix"]["images"]["corrupt"] == 2


def test_missing_keep_keeps_and_counts_them(tmp_path):
    res = _blend(tmp_path, missing="keep")
    fates, _, _ = _fates(res)
    assert v.MISSING_IMAGE not in fates.values() and v.CORRUPT_IMAGE not in fates.values()
    assert res.meta["counts"]["mix"]["kept_with_missing_or_corrupt_images"] == 4


def test_a_bad_turn_is_named_by_its_place_in_the_record_as_written(tmp_path):
    """After a leading non-human turn is removed, the turn a drop's detail names is still counted from the
    record's first turn (it named the turn after the one at fault: 'turn 0: 'from' is 'assistant'' for an
    OpenAI-style record whose turn 0 is 'user')."""
    from vlmdata.blend.records import Normaliser, RowBuffer

    def detail(conversations):
        try:
            Normaliser("s").add({"id": "x", "conversations": conversations}, 0, RowBuffer())
        except v.Bad as e:
            return e.detail
        raise AssertionError("kept")

    openai = [{"from": "user", "value": "q"}, {"from": "assistant", "value": "a"}]
    assert detail(openai).startswith("turn 1: 'from' is 'assistant'")
    lead = [{"from": "gpt", "value": "Hi"}]
    assert detail(lead + turns("", "a")) == "turn 1 (human) has an empty value"
    assert detail(lead + turns("q", "a", "q2", "a2 <image>")) == "turn 4 (gpt) contains <image>"
    assert detail(lead + [{"from": "human", "value": 3}, {"from": "gpt", "value": "a"}]).startswith("turn 1: 'value' is int")
    assert detail(turns("q", "")) == "turn 1 (gpt) has an empty value"  # (no leading turn: as before)


def test_a_missing_jpg_whose_gif_or_png_is_there_says_so(tmp_path):
    """OCR-VQA's loadDataset.py saved 901 covers as <id>.gif / <id>.png where every record names <id>.jpg
    (datasets.md §3, TinyLLaVA #91): such a record is dropped as a missing image like a dead URL's, and
    its detail says the image is there under another extension and what converts it; a record whose
    image is nowhere keeps the bare path."""
    res = _blend(tmp_path)
    _, dropped, _ = _fates(res)
    detail = {d["id"]: d["detail"] for d in dropped}
    assert detail["0001047973"] == "ocr_vqa/images/0001047973.jpg"
    assert detail["0001714600"].startswith("ocr_vqa/images/0001714600.jpg (")
    assert "0001714600.gif is there" in detail["0001714600"] and "vlmdata normalize" in detail["0001714600"]
    assert detail["Choi_Min-sik"] == "web-celebrity/images/Choi_Min-sik.jpg"
    assert res.meta["totals"]["images_missing_under_other_extension"] == 1
    assert "1 missing image(s) are there under another extension" in render_blend(res.meta, str(res.out))
    # the report, and the reason a blend stops, say it too
    catalog = load_catalog()
    resolved = resolve(catalog.blend(str(tmp_path / "known.toml")), catalog, Root(tmp_path / "root"),
                       image_root=tmp_path / "images")
    rep = run_report(resolved, Options(progress=False, jobs=1))
    assert rep["missing_under_other_extension"] == {
        "count": 1, "examples": [{"path": "ocr_vqa/images/0001714600.jpg", "there": "0001714600.gif"}]}
    text = render_report(rep)
    assert "ocr_vqa/images/0001714600.jpg: 0001714600.gif is there" in text and "vlmdata normalize" in text
    assert "0001714600.gif is there): `vlmdata normalize" in rep["blend_would_stop"]["hint"]


def test_nothing_is_said_when_no_missing_image_has_another_extension(tmp_path):
    import pyarrow as pa

    from vlmdata.blend.images_index import other_extensions, split_paths

    (tmp_path / "f").mkdir()
    for name in ("1.gif", "2.jpg", "3.png.jpg", "noext"):
        (tmp_path / "f" / name).write_bytes(b"x")
    def found(paths):
        return other_extensions(tmp_path, *split_paths(pa.array(paths, pa.string())))

    assert found(["f/1.jpg", "f/2.jpg.png", "f/3.png", "f/4.jpg", "g/1.jpg", "noext.jpg"]) == {"f/1.jpg": "1.gif"}
    assert found([]) == {} and found(["g/1.jpg"]) == {}
