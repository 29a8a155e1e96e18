"""Typed configs composed by hydra.

Every command has a dataclass schema (its fields documented in the docstring) and a YAML preset in
`configs/`. `compose(name, overrides, Schema)` loads `configs/<name>.yaml` with hydra's compose API,
applies trailing `key=value` overrides, validates against the schema (unknown keys raise) and returns
a dataclass instance, so `__post_init__` cross-field checks run.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim2real.errors import Sim2RealError

T = TypeVar("T")

CONFIG_DIR = Path(os.environ.get("SIM2REAL_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs"))


def compose(name: str, overrides: list[str] | None, schema: type[T], **explicit: Any) -> T:
    """Compose `configs/<name>.yaml` + overrides into `schema`.

    `explicit` values (from named CLI options such as `--out`) are set after the overrides without
    going through hydra's override grammar, so paths with `=` or `,` in them survive.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    overrides = list(overrides or [])
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise Sim2RealError(f"overrides must look like key=value; got {bad}")
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            preset = hydra_compose(config_name=name)
            cfg = hydra_compose(config_name=name, overrides=[_add_missing(o, preset) for o in overrides])
        for key, value in explicit.items():
            if value is not None:
                OmegaConf.update(cfg, key, _plain(value), merge=False, force_add=True)
        values = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        first = str(e).strip().splitlines()[0]
        raise Sim2RealError(f"config '{name}': {first}") from e
    try:
        return build(schema, values)
    except (ValueError, TypeError) as e:  # unknown keys, wrong types, __post_init__ checks
        raise Sim2RealError(f"config '{name}': {e}") from e


def build(schema: type[T], values: dict, where: str = "") -> T:
    """Instantiate dataclass `schema` from plain `values`, strictly: unknown keys and values outside a
    `Literal` raise (OmegaConf's structured configs cannot check `Literal`, so we do it here)."""
    if not isinstance(values, dict):
        raise TypeError(f"{where or 'config'} must be a mapping; got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TypeError(f"unknown key(s) {', '.join(where + k for k in unknown)}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(schema)
    kwargs = {k: _coerce(hints[k], v, f"{where}{k}") for k, v in values.items()}
    return schema(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, where)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise TypeError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where + ".")
    if tp is Path:
        return Path(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise TypeError(f"{where} must be {tp.__name__}; got {value!r}")
    if origin is list and args and isinstance(value, list):
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _add_missing(override: str, preset: Any) -> str:
    """A schema field the YAML preset leaves at its default needs hydra's `+key=value` form."""
    key = override.split("=", 1)[0]
    if key[:1] in "+~" or OmegaConf.select(preset, key, default="__missing__") != "__missing__":
        return override
    return "+" + override


def to_dict(cfg: Any) -> dict:
    """A JSON/YAML-friendly dict of a config dataclass (paths as strings)."""
    return {k: _plain(v) for k, v in dataclasses.asdict(cfg).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
