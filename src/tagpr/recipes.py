"""YAML recipes: one file, one section per stage (``chains:``, ``sft:``, ``prmu:``, ``rl:``, ``eval:``).

Every ``tagpr`` command that takes ``--config`` reads its own section here, then applies the CLI
overrides that were given (``None`` = not given)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator

M = TypeVar("M", bound=BaseModel)


SECTIONS = ("run", "chains", "sft", "prmu", "rl", "eval")  # a ``tagpr run`` recipe's sections, in the order they run


def read_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The whole recipe mapping; a clear error naming the file when it cannot be read.

    ``extends: OTHER.yaml`` (a path relative to the recipe's directory) starts from that recipe: each of
    this file's sections updates the base's section key by key (a key's value, lists included, is replaced
    whole), so a preset states only what it changes."""
    import yaml

    p = Path(path)
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{p}: cannot read the recipe ({e})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{p}: a recipe must be a mapping")
    base_name = loaded.pop("extends", None)
    if base_name is None:
        return loaded
    if not isinstance(base_name, str):
        raise ValueError(f"{p}: extends must be the path of a recipe, not {type(base_name).__name__}")
    base_path = (p.parent / base_name).resolve()
    if base_path in _seen or base_path == p.resolve():
        raise ValueError(f"{p}: extends {base_name!r} makes a cycle")
    merged = read_recipe(base_path, _seen + (p.resolve(),))
    for section, part in loaded.items():
        if isinstance(part, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **part}
        else:
            merged[section] = part
    return merged


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


def load_settings(model: type[M], config: M | str | Path | Mapping[str, Any] | None, section: str,
                  overrides: Mapping[str, Any] | None = None) -> M:
    """A job's settings (a pydantic ``model``): ``config`` (settings of that model, a mapping, or a YAML recipe whose
    ``section`` is read, else its bare mapping) updated by the ``overrides`` that are not None, then validated (an
    unknown key is an error naming the nearest known one).  How the Python API and every ``--config`` option read
    settings: the defaults are the model's own."""
    if isinstance(config, BaseModel):
        data = config.model_dump()
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        return model.model_validate(recipe_section(config, section, overrides))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return model.model_validate(data)


# ------------------------------------------------------------------------------------- strict keys
def unknown_key_message(key: object, known: Iterable[str]) -> str:
    """``unknown key 'max_step'; did you mean 'max_steps'?`` (else the known keys)."""
    import difflib

    known = list(dict.fromkeys(known))  # in the order given (a model's fields as declared)
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    return f"unknown key {key!r}; " + (f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}")


def check_keys(where: str, data: Mapping[str, Any], known: Iterable[str]) -> None:
    """ValueError naming the first key of ``data`` that is not in ``known`` (and the nearest known one)."""
    problem = unknown_keys_problem(data, known)
    if problem:
        raise ValueError(f"{where}: {problem}")


def unknown_keys_problem(data: Mapping[str, Any], known: Iterable[str]) -> str | None:
    """The message for the first key of ``data`` not in ``known`` (with the nearest known one), or None."""
    known = list(known)
    bad = next((key for key in data if key not in known), None)
    return None if bad is None else unknown_key_message(bad, known)


def validation_message(error: Any) -> str:
    """A pydantic ValidationError as one line: ``field: message`` for each error (no help URL, no "Value error, ")."""
    parts = []
    for err in error.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


class StrictModel(BaseModel):
    """A settings model that refuses keys it does not know (a misspelt ``max_step:`` is an error naming
    ``max_steps``, not a setting silently ignored)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            problem = unknown_keys_problem(data, [*cls.model_fields, *(f.alias for f in cls.model_fields.values() if f.alias)])
            if problem:
                raise ValueError(problem)
        return data
