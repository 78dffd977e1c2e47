"""Placeholder until this command lands; see the issue that builds it."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Adds nothing yet."""
