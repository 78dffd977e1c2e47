"""URL-list records that are odd one at a time: each is that record's failure, said at once, and the
run goes on with the others (found in review: each of these stopped the whole list, or was retried
for seconds as if a server were busy)."""
from __future__ import annotations

import json

import pytest

from vlmdata.errors import UserError
from vlmdata.fetch.urllist import fetch_url_list, iter_entries
from vlmdata.fetch.urllist_client import BAD_ID, NAME_LIMIT, NOT_HTTP
from vlmdata.manifest import Source
from vlmdata.net.client import Client
from vlmdata.net.retry import RetryPolicy

from place_helpers import image_bytes, make_spec

FAST = RetryPolicy(attempts=3, base=0.01, cap=0.05)
SOURCE = Source("urllist", path="ocr_vqa/dataset.json", list_format="json-dict", url_key="imageURL")
SPEC = make_spec(kind="images", to="ocr_vqa/images", dataset="ocr_vqa", name="images-from-urls", ext="jpg",
                 sources=(SOURCE,))


def write_list(root, records: dict[str, str]) -> None:
    lst = root.store_path("ocr_vqa/dataset.json")
    lst.parent.mkdir(parents=True, exist_ok=True)
    lst.write_text(json.dumps({rid: {"imageURL": url} for rid, url in records.items()}))


def run(root, mirror=None, **kw):
    return fetch_url_list(SPEC, SOURCE, root, session=Client(), jobs=4, mirror=mirror, policy=FAST, **kw)


def saved(root) -> list[str]:
    folder = root.store_path("ocr_vqa/images")
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_urls_that_are_not_http_fail_at_once_for_good(server, root, tmp_path):
    (tmp_path / "local.jpg").write_bytes(image_bytes("jpeg"))
    server.routes["/ok.jpg"] = [(200, image_bytes("jpeg"))]
    write_list(root, {"1": f"file://{tmp_path}/local.jpg", "2": str(tmp_path / "local.jpg"),
                      "3": "ftp://example.invalid/x.jpg", "4": "//cdn.example.invalid/x.jpg",
                      "5": server.url("/ok.jpg")})
    res = run(root)
    assert saved(root) == ["5.jpg"]  # (a file:// URL never reads a local file into the dataset)
    # (the error is the record's own, not "... after 3 tries": nothing was retried)
    assert [(f.id, f.error, f.again) for f in res.failed] == [(i, NOT_HTTP, False) for i in "1234"]


def test_a_record_whose_file_name_would_be_too_long_fails_alone(server, root):
    server.routes["/a.jpg"] = [(200, image_bytes("jpeg"))]
    server.routes["/" + "e" * 300 + ".jpg"] = [(200, image_bytes("jpeg"))]
    spec_ext_from_url = make_spec(kind="images", to="ocr_vqa/images", dataset="ocr_vqa", name="x", ext=None,
                                  sources=(SOURCE,))
    longest = NAME_LIMIT - len(".jpg")
    write_list(root, {"b" * (longest + 1): server.url("/a.jpg"),  # one byte too many
                      "c" * longest: server.url("/a.jpg"),  # the longest name taken
                      "d": server.url("/a.jpg")})
    res = run(root)
    assert saved(root) == sorted(["c" * longest + ".jpg", "d.jpg"])
    assert [(f.id, f.error, f.again) for f in res.failed] == [("b" * (longest + 1), BAD_ID, False)]
    # the extension taken from the URL counts too
    write_list(root, {"e": server.url("/a." + "g" * 300)})
    res = fetch_url_list(spec_ext_from_url, SOURCE, root, session=Client(), jobs=2, mirror=None, policy=FAST)
    assert [(f.id, f.error) for f in res.failed] == [("e", BAD_ID)]


def test_with_a_mirror_an_odd_url_is_its_records_failure_not_the_runs(server, root, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "host.test/i").mkdir(parents=True)
    (mirror / "host.test/i/ok.jpg").write_bytes(image_bytes("jpeg"))
    outside = tmp_path / "secret.jpg"  # beside the mirror, not in it
    outside.write_bytes(image_bytes("jpeg"))
    write_list(root, {"1": "http:///no-host.jpg?sig=SECRET", "2": "http://host.test/../../secret.jpg",
                      "3": "http://host.test/i/%2e%2e/%2e%2e/../secret.jpg", "4": "http://host.test/i/ok.jpg"})
    res = run(root, mirror=str(mirror))
    assert saved(root) == ["4.jpg"]  # nothing read from outside the mirror folder
    failed = {f.id: f for f in res.failed}
    assert sorted(failed) == ["1", "2", "3"] and not any(f.again for f in failed.values())
    assert "not an absolute URL" in failed["1"].error and "SECRET" not in failed["1"].error
    assert all("'..' part" in failed[i].error for i in "23")


def test_mirror_build_leaves_out_an_image_whose_place_is_outside_the_mirror(tmp_path):
    from vlmdata.net.urls import rewrite

    out = tmp_path / "out"
    assert rewrite("http://h.test/a/b.jpg", str(out)) == str(out / "h.test/a/b.jpg")
    for bad in ("http://h.test/a/../../../etc/x", "http://h.test/%2E%2E/x", "http://h.test/a%00b"):
        with pytest.raises(UserError, match="would leave its host's folder"):
            rewrite(bad, str(out))
    # an http(s) mirror is another server's tree: its URL is built as before
    assert rewrite("http://h.test/a/b.jpg", "http://m.test/base") == "http://m.test/base/h.test/a/b.jpg"


TSV = Source("urllist", path="ocr_vqa/list.tsv", list_format="tsv", url_key="url")


def test_a_tsv_list_with_a_short_row_fails_that_row_only(tmp_path):
    tsv = tmp_path / "list.tsv"
    tsv.write_text("url\tid\nhttp://h.test/1.jpg\t1\nhttp://h.test/2.jpg\n\nhttp://h.test/3.jpg\t3\n")
    assert list(iter_entries(tsv, TSV)) == [("1", "http://h.test/1.jpg"), ("", "http://h.test/2.jpg"),
                                            ("3", "http://h.test/3.jpg")]


def test_a_tsv_list_that_is_not_utf8_is_an_error_naming_the_file(tmp_path):
    tsv = tmp_path / "list.tsv"
    tsv.write_bytes(b"id\turl\n1\thttp://h.test/1.jpg\n2\thttp://h.test/\xff.jpg\n")
    with pytest.raises(UserError, match="not UTF-8") as ei:
        list(iter_entries(tsv, TSV))
    assert str(tsv) in str(ei.value)


def test_a_tsv_list_whose_quoting_is_broken_names_its_line(tmp_path):
    import csv

    tsv = tmp_path / "list.tsv"
    tsv.write_text('id\turl\n1\thttp://h.test/1.jpg\n2\t"http://h.test/2.jpg\n'
                   + "".join(f"{i}\thttp://h.test/{i}.jpg\n" for i in range(3, 9)))
    was = csv.field_size_limit(64)  # (a quote never closed swallows the rest: over the limit, csv says so)
    try:
        with pytest.raises(UserError, match="cannot be read") as ei:
            list(iter_entries(tsv, TSV))
    finally:
        csv.field_size_limit(was)
    assert f"{tsv}:" in str(ei.value)
