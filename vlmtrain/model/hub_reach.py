"""Before a name that is no local folder is read from the Hub: can the Hub be reached at all?

Offline, transformers' first Hub request retries for most of a minute (huggingface_hub's backoff)
before it fails, and a run folder not made yet (``runs/stage2``) reads like a Hub id
(``owner/name``). One TCP connection to the endpoint, with a short timeout, tells at once; the
answer names both readings of the name. Skipped where the answer could mislead: a proxy is set
(the endpoint is reached through it), the user chose offline mode (transformers answers from the
cache at once), or the file is in the cache already.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from vlmtrain.config import ConfigError

PROBE_SECONDS = 3.0
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _cached(name: str, filename: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, filename), str)
    except Exception:  # noqa: BLE001 - not a valid repo id, or an older hub: no cache answer
        return False


def _endpoint() -> tuple[str, int]:
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def require_hub_for(name: str, what: str, filename: str = "config.json") -> None:
    """ConfigError at once when ``name`` is no local folder, its ``filename`` is not in the Hub
    cache, and the Hub cannot be reached."""
    if Path(os.path.expanduser(name)).exists() or _cached(name, filename):
        return
    if any(os.environ.get(v) for v in _PROXY_VARS) or \
            any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS):
        return
    host, port = _endpoint()
    try:
        socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
    except OSError as e:
        raise ConfigError(
            f"{what} {name!r} is not a local folder, and the Hub ({host}) cannot be reached to read it as a "
            f"Hub id: {e.strerror or e}",
            hint="a run's output folder: run that stage first, or chain the stages in one command; a Hub id: "
                 "connect to the network, set HF_ENDPOINT to a mirror, or HF_HUB_OFFLINE=1 with it in the "
                 "Hugging Face cache; or a model vlmdata fetches (`vlmdata list` names them, e.g. "
                 "vicuna-7b-v1.5), fetched where there is a network or from a --mirror, and its folder "
                 "ROOT/models/NAME given instead") from None
