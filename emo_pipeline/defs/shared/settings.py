"""Dagster config for a model family, derived from the family's settings dataclass in the library.

Each family's settings are written once, as a library dataclass (`EmotionModelConfig`, `ESMConfig`,
`MLPConfig`, ...); the profiles give its values. The asset's Dagster `Config` is made from that
dataclass here: one optional field per setting, unset by default, so the launchpad shows every setting
and a run changes only what it sets. A new setting in the dataclass appears in the launchpad as is.
The nested training settings (`training: TrainConfig`) appear beside the family's own, by their names
(`epochs`, `lr`, ...), so a run config reads `{"epochs": 5}` rather than `{"training": {"epochs": 5}}`.
A family with a `recipe` (a named bundle of settings, applied by its `with_recipe` method) takes a
`recipe` override first, then the single settings a run also sets.
"""

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any, TypeVar

import dagster as dg
import pydantic

Settings = TypeVar("Settings")


def _config_type(annotation: Any) -> Any:
    """Dagster config has lists, not tuples: `tuple[float, ...]` becomes `list[float]`. A setting typed
    `X | None` (None: set by the family's recipe) is X here: every override field is optional anyway."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return _config_type(args[0])
    if typing.get_origin(annotation) is tuple:
        return list[typing.get_args(annotation)[0]]
    return annotation


def _fields(settings_cls: type) -> dict[str, Any]:
    """Every setting of `settings_cls` by name with its type, nested dataclasses' settings inlined."""
    hints = typing.get_type_hints(settings_cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings_cls):
        out.update(_fields(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else {f.name: hints[f.name]})
    return out


def overrides_config(settings_cls: type, name: str, *, exclude: Iterable[str] = ()) -> type[dg.Config]:
    """A `dg.Config` class with one optional field per setting of `settings_cls` (less `exclude`)."""
    skipped = set(exclude)
    fields = {key: (_config_type(kind) | None, None) for key, kind in _fields(settings_cls).items()
              if key not in skipped}
    doc = (f"Overrides of the profile's {settings_cls.__name__} (see {settings_cls.__module__}); "
           "an unset field keeps the profile's value.")
    return pydantic.create_model(name, __base__=dg.Config, __doc__=doc, **fields)


def replace_settings(settings: Settings, values: dict[str, Any]) -> Settings:
    """`settings` with `values` replaced, each in the (nested) dataclass that holds it; others ignored.

    A `recipe` among `values` is applied first (`settings.with_recipe`), so the settings it bundles take
    its values unless `values` sets them too."""
    if values.get("recipe") is not None and hasattr(settings, "with_recipe"):
        settings = settings.with_recipe(values["recipe"])
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        current = getattr(settings, f.name)
        if dataclasses.is_dataclass(current):
            changes[f.name] = replace_settings(current, values)
        elif f.name in values:
            changes[f.name] = tuple(values[f.name]) if isinstance(values[f.name], list) else values[f.name]
    return dataclasses.replace(settings, **changes)


def apply_overrides(settings: Settings, config: dg.Config) -> Settings:
    """`settings` with every setting the user set in `config` (a class from `overrides_config`, possibly
    extended with fields of the asset's own, which are left out here) replaced."""
    return replace_settings(settings, {k: v for k, v in config.model_dump().items() if v is not None})
