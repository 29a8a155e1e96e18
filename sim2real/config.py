"""Typed configs composed by hydra.

Every command has a dataclass schema (its fields documented in the docstring) and a YAML preset in
`configs/`. `compose(name, overrides, Schema)` loads `configs/<name>.yaml` with hydra's compose API,
applies trailing `key=value` overrides, validates against the schema (unknown keys raise) and returns
a dataclass instance, so `__post_init__` cross-field checks run.
"""

from __future__ import annotations

import dataclasses
import os
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
            cfg = hydra_compose(config_name=name, overrides=overrides)
        base = OmegaConf.structured(schema)
        merged = OmegaConf.merge(base, cfg)
        for key, value in explicit.items():
            if value is not None:
                OmegaConf.update(merged, key, _plain(value), merge=False)
        obj = OmegaConf.to_object(merged)
    except (HydraException, OmegaConfBaseException) as e:
        first = str(e).strip().splitlines()[0]
        raise Sim2RealError(f"config '{name}': {first}") from e
    except (ValueError, TypeError) as e:  # raised by __post_init__ checks
        raise Sim2RealError(f"config '{name}': {e}") from e
    return obj  # type: ignore[return-value]


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
