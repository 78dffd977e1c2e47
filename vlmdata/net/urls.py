"""URLs as vlmdata shows and mirrors them.

``shown`` / ``scrub``: a URL or an error message with its query string cut off (signed links carry
credentials there), for messages and the journal.

``rewrite``: the ``--mirror`` rule, ``scheme://[user:password@]host/path`` -> ``BASE/host/path``. BASE is an
http(s) URL (a caching proxy or a copy served over HTTP) or a local folder (``file://`` or a
plain path: a cluster's pre-downloaded copy on a shared filesystem). Query strings are dropped:
a mirror is a static tree, and signed-URL parameters (SA-1B) mean nothing there.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from vlmdata.errors import UserError


def shown(url: str) -> str:
    """A URL for messages, the journal and the lock: signed query strings (credentials for a while) and a
    ``user:password@`` written into it (an HF_ENDPOINT or a mirror behind basic auth) cut off."""
    base, sep, _ = url.partition("?")
    return _USERINFO.sub(r"\1…@", base, count=1) + ("?…" if sep else "")


def host_of(url: str) -> str:
    """``url``'s host and port, for messages: its netloc less a ``user:password@``."""
    return urlsplit(url).netloc.rpartition("@")[2]


_QUERY = re.compile(r"\?[^\s'\")]+")
# (up to the last '@' before the path: a password may hold a raw '@', and the host is what follows the last one)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s?#'\")]+@")


def scrub(text: str) -> str:
    """Cut query strings and credentials out of a message (urllib3's errors quote the URL they failed on)."""
    return _USERINFO.sub(r"\1…@", _QUERY.sub("?…", text))


def is_local(base: str) -> bool:
    return not base.startswith(("http://", "https://"))


def local_base(base: str) -> Path:
    return Path(unquote(base[len("file://"):])) if base.startswith("file://") else Path(base).expanduser()


def check_base(base: str) -> None:
    if base.startswith(("http://", "https://")):
        return
    if base.startswith(("ftp://", "s3://", "gs://")):
        raise UserError(f"mirror {base!r}: only http(s) URLs and local folders are supported")
    if not local_base(base).is_dir():
        raise UserError(f"mirror folder {local_base(base)} does not exist", hint="--mirror takes an http(s) URL or an existing folder")


def rewrite(url: str, base: str) -> str:
    """The mirrored location of ``url``: a URL when BASE is http(s), a filesystem path otherwise."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise UserError(f"cannot mirror {shown(url)}: not an absolute URL")
    rel = f"{host_of(url)}{parts.path}"  # (a user:password is the origin's: not a folder name, not sent to a mirror)
    if is_local(base):
        path = unquote(rel)
        if ".." in PurePosixPath(path).parts or "\0" in path:
            # (a folder is read, or written by `mirror build`, at this path: it must stay under BASE/host)
            raise UserError(f"cannot mirror {shown(url)}: its path has a '..' part (or a NUL byte), which would leave "
                            "its host's folder")
        return str(local_base(base) / path)
    return base.rstrip("/") + "/" + quote(rel, safe="/:@!$&'()*+,;=-._~")
