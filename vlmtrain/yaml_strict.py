"""YAML for run configs, with one rule PyYAML does not have: a key given twice in one mapping is an error.

PyYAML keeps the last of two equal keys without a word, so a config that sets ``learning_rate``
at the top and again further down trains with whichever comes second, and the reader of the file
may believe the other. The error names both lines.
"""
from __future__ import annotations

from typing import Any

import yaml


class DuplicateKey(yaml.YAMLError):
    """A mapping names the same key twice (``str`` gives the key and both lines)."""


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKey(f"`{key}` is given twice (lines {seen[key]} and {line}); "
                                   f"YAML would silently keep the second")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def load(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
