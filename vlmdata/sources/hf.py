"""``kind = "hf"``: a file of a Hugging Face Hub repo at a revision, located through huggingface_hub.

huggingface_hub resolves the file (HEAD on ``resolve/<revision>/<path>``: the commit, the ETag,
the size, and the redirect to the CDN); our own engine then downloads from that location into
the root's downloads folder, with resume and several connections, so there is no second copy in
``~/.cache/huggingface``. For LFS files the ETag is the file's sha256, which is checked.

Under ``--mirror BASE`` the file is first looked for where the mirror rule puts its resolve URL
(``BASE/huggingface.co/[datasets/]REPO/resolve/REVISION/PATH``, what ``vlmdata mirror build``
writes), then asked of the hub. ``HF_ENDPOINT`` / ``--hf-endpoint`` selects a hub mirror and ``HF_TOKEN`` authenticates. The token
is sent to the hub's own origin only (never to the CDN it redirects to) and never appears in a
message: every error text goes through ``redact``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import msgspec.structs

from vlmdata.manifest import Source
from vlmdata.net.errors import SourceFailed
from vlmdata.net.retry import GaveUp, RetryPolicy, Transient, is_transient_status, is_unreachable, retry, unreachable_reason
from vlmdata.net.urls import host_of, scrub, shown
from vlmdata.sources.base import Candidate, Location, SourceKind
from vlmdata.sources.http import url_candidate

if TYPE_CHECKING:
    from vlmdata.manifest import FileSpec
    from vlmdata.state import LockEntry, Root

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_ENDPOINT = "https://huggingface.co"


def follows_branch(src: Source) -> bool:
    """A Hub source whose revision is a branch or tag (``main``), not a full commit: what it names moves
    when the publisher pushes, so vlmdata.lock pins the commit of the first fetch."""
    return src.kind in ("hf", "hfrepo") and not _COMMIT.match(src.revision or "main")


def moves_on_update(sources: tuple[Source, ...], sha256: str | None) -> bool:
    """A Hub file or repo that only vlmdata.lock pins (no sha256 in the manifest): what `fetch --update`
    asks for at the revision the manifest names now (a branch's newest commit), not at the pinned commit."""
    return sha256 is None and any(s.kind in ("hf", "hfrepo") for s in sources)


def spec_moves_on_update(spec: "FileSpec") -> bool:
    """``moves_on_update`` for a file, or for any of its parts (whose pins the joined file's then follows)."""
    if spec.parts:
        return any(moves_on_update(p.sources, p.sha256) for p in spec.parts)
    return moves_on_update(spec.sources, spec.sha256)


def pinned_revision(src: Source, pin: "LockEntry | None") -> str | None:
    """The commit vlmdata.lock pinned for ``src`` when its revision is a branch: what fetch asks the hub
    for, so the bytes pinned stay the bytes fetched when the branch moves on (None: the manifest's
    revision holds). A file's pin holds for the source that made it (its label, less the endpoint it
    came through); a repo's for its repo."""
    if pin is None or not pin.revision or not follows_branch(src):
        return None
    if src.kind == "hf" and pin.source.split(" via ", 1)[0] != KIND.describe(src):
        return None
    return pin.revision


def repo_page(src: Source) -> str:
    """The repo's page on huggingface.co, where a gated repo's terms are accepted (a mirror has none)."""
    return f"{DEFAULT_ENDPOINT}/{'datasets/' if src.repo_type == 'dataset' else ''}{src.repo_id}"


def hub_hint(e: BaseException, status: int | None, src: Source, token: str | None) -> str:
    """What a person does about a hub that refused ``src`` (401/403, a gated or missing repo) or whose
    certificate is not trusted; "" otherwise."""
    name = type(e).__name__
    if "CERTIFICATE_VERIFY_FAILED" in str(e):
        return (" (the endpoint's certificate is not trusted: for a proxy or mirror with a CA of its own, set "
                "REQUESTS_CA_BUNDLE to that CA's bundle; verification is never turned off)")
    if "Gated" in name:
        if not token:
            return f" (a gated repo: accept its terms on {repo_page(src)}, then set HF_TOKEN to a token of that account)"
        return (f" (a gated repo, and the account of HF_TOKEN has no access yet: accept its terms on "
                f"{repo_page(src)} with that account, or wait for the owner's approval)")
    if "RepositoryNotFound" in name or status == 401:
        return " (the repo does not exist, or it is private/gated: set HF_TOKEN to a token with access)"
    if status == 403:
        return f" (access refused: accept the repo's terms on {repo_page(src)} and set HF_TOKEN to a token with access)"
    return ""


def hub_failure(where: str, e: BaseException, src: Source, token: str | None, *, missing: tuple[str, str],
                missing_status: int | None = None) -> SourceFailed:
    """The SourceFailed for a hub call on ``src`` that raised ``e``: its first line, token redacted, with what
    a person does about it (hub_hint), else ``missing[1]`` when the error names ``missing[0]`` (or has
    ``missing_status``); ``denied`` for a 401/403, which no other source of the same hub will answer."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    name = type(e).__name__
    hint = hub_hint(e, status, src, token)
    if not hint and (missing[0] in name or (missing_status is not None and status == missing_status)):
        hint = missing[1]
    return SourceFailed(redact(f"{where}: {name}: {_first_line(e)}{hint}", token), status=status,
                        denied=status in (401, 403))


_TRUSTED: list[str | None] = [None]  # the bundle huggingface_hub's session was last made under, here


def share_ca_bundle() -> None:
    """Make huggingface_hub's lookups trust the CA bundle our downloads trust (vlmdata.net.client.ca_bundle:
    REQUESTS_CA_BUNDLE first, as docs/airgapped.md says for a company's TLS-inspecting proxy or mirror).
    Recent huggingface_hub releases talk httpx, which reads SSL_CERT_FILE / SSL_CERT_DIR only: a
    bundle given the requests way verified the downloads and failed every Hub lookup, or an image's
    SSL_CERT_FILE won over it. So this process's SSL_CERT_FILE (or _DIR) is set to that one bundle;
    huggingface_hub's session, kept for the process, is made again when the bundle changed."""
    from vlmdata.net.client import ca_bundle

    bundle = ca_bundle()
    if bundle is not None:
        name, other = ("SSL_CERT_DIR", "SSL_CERT_FILE") if os.path.isdir(bundle) else ("SSL_CERT_FILE", "SSL_CERT_DIR")
        os.environ[name] = bundle
        os.environ.pop(other, None)  # (httpx reads SSL_CERT_FILE first)
    if bundle == _TRUSTED[0]:
        return
    _TRUSTED[0] = bundle
    import huggingface_hub

    close = getattr(huggingface_hub, "close_session", None)  # (older releases: requests, no session kept)
    if close is not None:
        close()


@dataclass(frozen=True)
class HubAccess:
    """How to reach the hub: ``endpoint`` (None: HF_ENDPOINT, else huggingface.co) and the token."""

    endpoint: str | None = None
    token: str | None = None


def token_from_env() -> str | None:
    """HF_TOKEN (else HUGGING_FACE_HUB_TOKEN) without the line ends and spaces a secret file or an --env-file
    leaves around it, as huggingface_hub cleans it when it reads the variable itself: passed on as it was,
    it made an illegal header, whose error quoted the token."""
    raw = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or ""
    return raw.replace("\r", "").replace("\n", "").strip() or None


def redact(text: str, token: str | None) -> str:
    """``text`` (a hub error, whose message quotes the URL it failed on) without the token, anything shaped like a
    Hub token, or a URL's query string and user:password (an HF_ENDPOINT behind basic auth)."""
    if token:
        text = text.replace(token, "***")
    return scrub(re.sub(r"hf_[A-Za-z0-9]{20,}", "hf_***", text))


def _origin(url: str) -> tuple[str, str]:
    p = urlsplit(url)
    return p.scheme, p.netloc


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else ""


def resolve(source: Source, endpoint: str | None, token: str | None = None,
            policy: RetryPolicy | None = None) -> Location:
    """Ask the hub where ``source``'s bytes are (the CDN location after the redirect, or the hub URL);
    raises SourceFailed with a clean message."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    token = token if token is not None else token_from_env()
    label = hub_label(source, endpoint)
    if constants.is_offline_mode():
        raise SourceFailed(f"{label}: HF_HUB_OFFLINE is set, so the hub is not contacted "
                           "(unset HF_HUB_OFFLINE to download from the hub)")
    share_ca_bundle()
    url = hf_hub_url(source.repo_id or "", source.path or "", repo_type=source.repo_type,
                     revision=source.revision, endpoint=endpoint)

    def attempt():  # one HEAD; our retry loop (not the hub's, which logs a line per try) decides on more
        try:
            return get_hf_file_metadata(url, token=token or None, endpoint=endpoint, retry_on_errors=False)
        except Exception as e:  # noqa: BLE001 - sorted below: retry, or "try the next source"
            status = getattr(getattr(e, "response", None), "status_code", None)
            if is_unreachable(e):
                raise Transient(f"{label}: cannot reach {host_of(endpoint)}: {unreachable_reason(e)}",
                                unreachable=True) from None
            if (status is not None and is_transient_status(status)) or "Timeout" in type(e).__name__:
                raise Transient(redact(f"{label}: {type(e).__name__}: {_first_line(e)}", token)) from None
            raise

    try:
        meta = retry(attempt, policy or RetryPolicy())
    except GaveUp as e:
        raise SourceFailed(redact(str(e.last) if e.unreachable else f"{e.last} (gave up after {e.tries} tries)", token),
                           unreachable=e.unreachable) from None
    except Exception as e:  # noqa: BLE001 - every hub error becomes "try the next source"
        raise hub_failure(label, e, source, token, missing=("EntryNotFound", " (no such file at this revision)"),
                          missing_status=404) from None
    sha = meta.etag if meta.etag and _SHA256.match(meta.etag) else None
    # (a file kept in git: the hub's ETag is its git blob id, 40 hex digits; checked against the bytes before trusted)
    blob = meta.etag if sha is None and meta.etag and _COMMIT.match(meta.etag) else None
    location = meta.location or url
    if urlsplit(endpoint).scheme == "https" and urlsplit(location).scheme != "https":
        # (a downgrade would let anyone on the path swap the bytes of a file that has no LFS hash)
        raise SourceFailed(f"{label}: the hub sent the download to {shown(location)}, which is not HTTPS: refused")
    headers: dict[str, str] = {}
    if token and _origin(location) == _origin(endpoint):
        auth = build_hf_headers(token=token).get("authorization")
        if auth:
            headers["Authorization"] = auth
    return Location(label, url=location, headers=headers, size=meta.size, sha256=sha, revision=meta.commit_hash,
                    blob=blob)


def hub_label(source: Source, endpoint: str | None) -> str:
    """A hub file as messages, the journal and the lock name it: its address at ``source.revision``, and the
    endpoint it came through when that is not the Hub's own (without a user:password written into it)."""
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    what = KIND.describe(source)
    return what if endpoint == DEFAULT_ENDPOINT else f"{what} via {shown(endpoint)}"


def hub_url(source: Source) -> str:
    """The file's resolve URL on huggingface.co: where a mirror (``--mirror``) keeps a copy of it."""
    repo = f"datasets/{source.repo_id}" if source.repo_type == "dataset" else f"{source.repo_id}"
    return f"{DEFAULT_ENDPOINT}/{repo}/resolve/{source.revision}/{source.path}"


@dataclass
class HubFile(Candidate):
    """A hub file: where its bytes are is asked of the hub when fetch gets to it (that needs the network)."""

    def locate(self, hub: HubAccess) -> Location:
        return resolve(self.source, hub.endpoint, hub.token)

    def pinned(self, pin: "LockEntry") -> Candidate:
        commit = pinned_revision(self.source, pin)
        if commit is None:
            return self
        src = msgspec.structs.replace(self.source, revision=commit)
        return HubFile(src, KIND.describe(src))


class HfKind(SourceKind):
    name = "hf"

    def describe(self, src: Source) -> str:
        return f"hf://{src.repo_type}s/{src.repo_id}@{src.revision}/{src.path}"

    def plan_label(self, src: Source, mirror: str | None, hf_endpoint: str | None) -> str:
        return f"{self.describe(src)} via {shown(hf_endpoint)}" if hf_endpoint else self.describe(src)

    def candidate(self, src: Source, name: str, root: "Root", *, download_path: Path,
                  mirror: str | None) -> Candidate:
        return HubFile(src, self.describe(src))

    def candidates(self, src: Source, name: str, root: "Root", *, download_path: Path,
                   mirror: str | None) -> list[Candidate]:
        """Under ``--mirror``, the mirror's copy at the resolve URL's place first, then the hub."""
        hub = self.candidate(src, name, root, download_path=download_path, mirror=mirror)
        if not mirror:
            return [hub]
        return [url_candidate(hub_url(src), src, mirror), hub]


KIND = HfKind()
