"""`vlmdata mirror build` and a links table of signed links (SA-1B's): the mirror carries the table, which the
far root needs to name its files, without the signatures, which are the licensee's credentials."""
from __future__ import annotations

import os

from fetch_helpers import file_toml, sha256

from vlmdata.state import Journal

SECRET = "SECRETSIG" + "K" * 12


def test_the_mirror_keeps_the_links_table_without_its_signatures(cli, manifests, files_server, tmp_path):
    """Found in the security audit: the table was hard-linked into DIR/linkfiles/ as it was, signed query
    strings (and any user:password) included, in a folder meant to be carried about or served over HTTP."""
    near, far, out = tmp_path / "near", tmp_path / "far", tmp_path / "mirror"
    data = os.urandom(5000)
    (files_server.folder / "x.bin").write_bytes(data)
    host = files_server.url.split("://", 1)[1]
    table = ("file_name\tcdn_link\n"
             f"x.bin\thttp://who:{SECRET}@{host}/x.bin?oh={SECRET}&oe=65AB\n"
             f"y.bin\t{files_server.url}/y.bin?oh={SECRET}\n")
    for r in (near, far):
        (r / "sam").mkdir(parents=True)
    (near / "sam/links.tsv").write_text(table)
    link = '{ kind = "linkfile", path = "sam/links.tsv", name_column = "file_name", url_column = "cdn_link" }'
    manifests.dataset("t", file_toml("x.bin", size=len(data), sha=sha256(data), sources=[link],
                                     place='{ kind = "file", to = "t/x.bin" }'))
    common = ["--manifests", str(manifests.folder)]
    assert cli("fetch", "t", "--root", str(near), *common).code == 0
    built = cli("mirror", "build", str(out), "--root", str(near), *common, "--json")
    assert built.code == 0, built.out
    assert built.json()["linkfiles"] == ["sam/links.tsv"]
    carried = (out / "linkfiles/sam/links.tsv").read_text()
    assert carried == f"file_name\tcdn_link\nx.bin\thttp://{host}/x.bin\ny.bin\t{files_server.url}/y.bin\n"
    assert [p for p in out.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()] == []
    assert SECRET in (near / "sam/links.tsv").read_text()  # (the root's own table is left as it was)
    # the far root, given the carried table, fetches from the mirror alone
    (far / "sam/links.tsv").write_text(carried)
    files_server.reset()
    r = cli("fetch", "t", "--root", str(far), *common, "--mirror", str(out))
    assert r.code == 0, r.err
    assert (far / "t/x.bin").read_bytes() == data and files_server.requests == []
    assert Journal(far / ".vlmdata").get("t:x.bin").sha256 == sha256(data)
    # built again: the carried table is already right
    again = cli("mirror", "build", str(out), "--root", str(near), *common)
    assert again.code == 0 and (out / "linkfiles/sam/links.tsv").read_text() == carried
