"""Layouts on disk: checking a tree against a layout, and building a layout's view of links."""
