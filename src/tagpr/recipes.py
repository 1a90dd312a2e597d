"""YAML recipes: one file, one section per stage (``chains:``, ``sft:``, ``prmu:``, ``rl:``, ``eval:``).

Every ``tagpr`` command that takes ``--config`` reads its own section here, then applies the CLI
overrides that were given (``None`` = not given)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The whole recipe mapping; a clear error naming the file when it cannot be read."""
    import yaml

    p = Path(path)
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{p}: cannot read the recipe ({e})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{p}: a recipe must be a mapping")
    return loaded


def recipe_section(path: str | Path | None, section: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``section`` of the recipe at ``path`` (or the bare mapping when the file has no such section),
    updated by the overrides that are not None."""
    data: dict[str, Any] = {}
    if path is not None:
        loaded = read_recipe(path)
        part = loaded.get(section, loaded)
        if not isinstance(part, dict):
            raise ValueError(f"{path}: section {section!r} must be a mapping")
        data = dict(part)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return data
