"""The experiment configuration: `SSPLConfig`, flat fields composed of groups by concern (`config_groups`),
validated when built, saved as a run's config.json and in every checkpoint; profiles: `sspl_lib.profiles`."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from types import NoneType, UnionType
from typing import ClassVar, get_args, get_origin, get_type_hints

from .config_groups import DataConfig, ExecutionConfig, MethodConfig, ModelConfig, OptimConfig, closest
from .paths import relative_to_repo, resolve

# settings that do not change what a run computes: a resume may change them
RUN_ONLY = ("threads", "workers", "device", "compile", "seeds")
# a resume with allow_longer=True may raise `epochs` and change `patience`
LONGER = ("epochs", "patience")
# file and folder paths: stored relative to the repository root when inside it (`portable`), compared resolved
PATHS = ("data_root", "source_root", "assets", "encoders_checkpoint", "vgg16_weights", "vggish_weights")


class ConfigError(ValueError):
    """An invalid configuration value, key or file; the message names it and says what was expected."""


@dataclass(kw_only=True)
class SSPLConfig(ExecutionConfig, OptimConfig, DataConfig, MethodConfig, ModelConfig):
    """Every setting of a run (fields in the order model, method, data, optimisation, execution)."""

    GROUPS: ClassVar[tuple] = (ModelConfig, MethodConfig, DataConfig, OptimConfig, ExecutionConfig)

    def __post_init__(self):
        hints, errors = _hints(), []
        for f in fields(self):
            try:
                setattr(self, f.name, _typed(f.name, getattr(self, f.name), hints[f.name]))
            except ConfigError as e:
                errors.append(str(e))
        if not errors:  # values of the right types: enumerations first, then lower bounds, then each group's own
            errors = [e for g in self.GROUPS for e in g.choice_errors(self)]
            errors += [f"{name}={getattr(self, name)!r}: expected >= {lo}"
                       for g in self.GROUPS for name, lo in g.AT_LEAST.items() if getattr(self, name) < lo]
            errors += [e for g in self.GROUPS for e in g.errors(self)]
        if errors:
            raise ConfigError("; ".join(errors))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SSPLConfig":
        """Fields by name; the keys of earlier versions (`RENAMED`) are read too."""
        d = read_renamed(d)
        _check_keys(d)
        return cls(**d)

    def replace(self, **changes) -> "SSPLConfig":
        _check_keys(changes)
        return dataclasses.replace(self, **changes)

    def portable(self) -> "SSPLConfig":
        """The config with its PATHS inside the repository relative to it (moved checkouts keep them)."""
        return self.replace(**{k: relative_to_repo(getattr(self, k)) for k in PATHS if getattr(self, k) is not None})

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(self.to_dict(), indent=2) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SSPLConfig":
        """A config.json; a corrupt, truncated or invalid file raises ConfigError naming it."""
        path = Path(path)
        try:
            d = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not a readable config.json ({e}); the file is corrupt or truncated: "
                              "restore it or start a fresh run") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a JSON object of config keys, got {type(d).__name__}")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


# ----------------------------------------------------------------------------- types and keys
@lru_cache(maxsize=None)
def _hints() -> dict:
    return get_type_hints(SSPLConfig)


_TYPE_TEXT = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _typed(name: str, value, hint):
    """`value` as the field's type (int -> float, list -> tuple) or ConfigError; strings are never converted."""
    if get_origin(hint) is UnionType and NoneType in get_args(hint):
        if value is None:
            return None
        (hint,) = (a for a in get_args(hint) if a is not NoneType)
        expected = _TYPE_TEXT[hint] + " or null"
    elif get_origin(hint) is tuple:
        expected = "a list of integers"
    else:
        expected = _TYPE_TEXT[hint]
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and integral:
        return int(value)
    if hint is float and (integral or isinstance(value, numbers.Real)) and not isinstance(value, bool):
        if not math.isfinite(float(value)):
            raise ConfigError(f"{name}={value!r}: expected a finite number")
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    if get_origin(hint) is tuple and isinstance(value, (list, tuple)) and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        return tuple(int(v) for v in value)
    note = " (a quoted value in YAML? write it without quotes)" if isinstance(value, str) else ""
    raise ConfigError(f"{name}={value!r}: expected {expected}, got {type(value).__name__}{note}")


def _check_keys(d: dict) -> None:
    known = [f.name for f in fields(SSPLConfig)]
    unknown = [str(k) for k in d if k not in known]
    if unknown:
        raise ConfigError("; ".join(f"config key {k!r} is now {RENAMED[k][0]!r}" if k in RENAMED else
                                    f"unknown config key {k!r}{closest(k, known)}" for k in unknown))


# keys of earlier versions (in profiles, config.json and checkpoints of older runs) -> today's key, value map
RENAMED = {
    "objective": ("method", {"simsiam": "sspl", "contrastive": "contrastive", "ezvsl": "ezvsl", "sacl": "sacl"}),
    "ogl_alpha": ("ezvsl_ogl_alpha", None),
    "ogl_gamma": ("ezvsl_gated_gamma", None),
    "ezvsl_prior_region": ("ezvsl_gated_region", None),
    "views": ("streams", {1: 2, 2: 3}),
    "lr_pcm": ("lr_visual", None),
}


def read_renamed(d: dict) -> dict:
    """`d` with the keys of `RENAMED` under today's names (old object-guided EZ-VSL: `ezvsl_gated`)."""
    out = dict(d)
    for old, (new, values) in RENAMED.items():
        if old not in out:
            continue
        if new in out:
            raise ConfigError(f"both {old!r} (the old name) and {new!r} are given: keep {new!r}")
        value = out.pop(old)
        try:
            out[new] = value if values is None else values[value]
        except (KeyError, TypeError):
            raise ConfigError(f"{old}={value!r}: expected one of {list(values)}") from None
    objective = d.get("objective", None if "method" in d else "simsiam")
    if objective == "ezvsl" and (d.get("ezvsl_prior_region") or d.get("ogl_gamma")):
        out["method"] = "ezvsl_gated"
    elif objective not in (None, "ezvsl") and (d.get("ogl_alpha") or d.get("ogl_gamma")):
        raise ConfigError(f"objective={objective!r} with ogl_alpha / ogl_gamma: the object-prior maps are EZ-VSL's "
                          "now (method ezvsl: ezvsl_ogl_alpha; method ezvsl_gated: ezvsl_gated_gamma)")
    return out


# ----------------------------------------------------------------------------- comparing two configs
def same_path(a: str | None, b: str | None) -> bool:
    """Two path values naming the same file (resolved from the repository root, symlinks followed)."""
    if a is None or b is None:
        return a == b
    return os.path.realpath(resolve(a)) == os.path.realpath(resolve(b))


def changed_fields(stored: SSPLConfig, new: SSPLConfig, *, allow_longer: bool = False) -> list[str]:
    """Keys whose difference changes what a resumed run computes (not RUN_ONLY; PATHS resolved;
    `allow_longer`: more epochs, other patience); [] = the run may be resumed."""
    out = []
    for f in fields(SSPLConfig):
        old, cur = getattr(stored, f.name), getattr(new, f.name)
        if old == cur or f.name in RUN_ONLY or (f.name in PATHS and same_path(old, cur)):
            continue
        if allow_longer and f.name in LONGER and (f.name != "epochs" or cur > old):
            continue
        out.append(f.name)
    return out

