"""The settings a command runs with: the shared options (vlmdata.cli.common), resolved.

Its own module so that `vlmdata --help`, which resolves no settings, does not import msgspec;
the manifest classes a command reads next are msgspec Structs too (cheap to define at start-up).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from vlmdata.cli import common
from vlmdata.cli.echo import echo

if TYPE_CHECKING:
    from vlmdata.manifest import Catalog
    from vlmdata.state import Root

DEFAULT_ROOT = "data"


class Settings(msgspec.Struct):
    root: Path = Path(DEFAULT_ROOT)
    manifests: list[str] = msgspec.field(default_factory=list)
    mirror: str | None = None
    hf_endpoint: str | None = None
    json: bool = False
    verbose: int = 0
    quiet: bool = False
    _catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from vlmdata.manifest import load_catalog

            self._catalog = load_catalog(self.manifests)
        return self._catalog

    @property
    def data_root(self) -> Root:
        from vlmdata.state import Root

        return Root(self.root)

    def emit_json(self, obj: Any) -> None:
        sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
        common.json_emitted()

    @property
    def progress(self) -> bool:
        """Progress bars: only on a terminal (a log file or CI would get every frame), never under
        --json or --quiet."""
        return not self.json and not self.quiet and sys.stderr.isatty()

    def info(self, msg: str) -> None:
        """A human line on stderr; silent under --json (stdout stays machine-readable) and --quiet."""
        if not self.json and not self.quiet:
            echo(msg, err=True)

    def result(self, msg: str) -> None:
        """What a command that changes things did, on stdout; --quiet leaves it out (the exit code says it)."""
        if not self.quiet:
            echo(msg)

    def debug(self, msg: str) -> None:
        if self.verbose:
            echo(msg, err=True)
