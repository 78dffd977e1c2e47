"""``python -m tools.docgen``: write the generated pages; ``--check``: list those that are stale (exit 1)."""
from __future__ import annotations

import sys

from tools.docgen.pages import REPO, generate, generated_files, reference_pages, stale


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        bad = stale()
        for path in bad:
            print(f"{path} differs from what the generator writes now", file=sys.stderr)
        if bad:
            print("run `make docs` (python -m tools.docgen) and commit the pages", file=sys.stderr)
        return 1 if bad else 0
    pages = generate()
    for path in sorted(reference_pages() - set(pages)):  # a command that is gone
        (REPO / path).unlink()
        print(f"removed {path}")
    for path, text in {**pages, **generated_files()}.items():
        target = REPO / path
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
