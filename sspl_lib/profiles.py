"""Profiles: `params/<name>.yaml` read once into an `SSPLConfig` (YAML 1.2 floats; a key given twice
refused), and `--set KEY=VALUE` overrides: `load_profile("quick", epochs=5)`."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from .config import ConfigError, SSPLConfig
from .paths import PARAMS_DIR


class ProfileNotFoundError(ConfigError, FileNotFoundError):
    """No params/<name>.yaml (both a ValueError and a FileNotFoundError); the message lists the profiles."""


class DuplicateKey(ValueError):
    def __init__(self, key, line: int, first: int):
        super().__init__(f"line {line}: `{key}` given twice (first at line {first}); keep one")
        self.key, self.line, self.first = key, line, first


@lru_cache(maxsize=None)
def _yaml_loader():
    """PyYAML's SafeLoader with YAML 1.2 floats (`1e-4`); a repeated key raises DuplicateKey."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                if key in first:
                    raise DuplicateKey(key, line, first[key])
                first[key] = line
            return super().construct_mapping(node, deep)

    float12 = re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", float12, list("-+0123456789."))
    return Loader


def read_yaml(text: str):
    import yaml

    return yaml.load(text, Loader=_yaml_loader())


def load_yaml(path: str | os.PathLike) -> SSPLConfig:
    """A profile file (`profile:` and `config:`, as every notebook declares them) as a validated config."""
    import yaml

    path = Path(path)
    try:
        raw = read_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    except DuplicateKey as e:
        if e.key == "config":
            raise ConfigError(f"{path}: line {e.line}: a second `config:` block (the first at line {e.first}); a "
                              "profile has one `config:` mapping: merge the two") from None
        raise ConfigError(f"{path}: {e}") from None
    if not isinstance(raw, dict) or "config" not in raw or set(raw) - {"profile", "config"}:
        keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ConfigError(f"{path}: expected the keys `profile` (its name) and `config` (a mapping of config "
                          f"fields), got {keys}")
    if raw.get("profile") not in (None, path.stem):
        raise ConfigError(f"{path}: `profile: {raw['profile']}` differs from the file's name {path.stem!r}")
    if not isinstance(raw["config"], dict | None):
        raise ConfigError(f"{path}: `config` must be a mapping of config fields, got {type(raw['config']).__name__}")
    try:
        return SSPLConfig.from_dict(raw["config"] or {})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def load_profile(name: str, config=None, /, **overrides) -> SSPLConfig:
    """params/<name>.yaml as a validated config, plus validated overrides: `config` (a mapping or its JSON text,
    as `papermill -p config '{...}'` passes it) and keyword ones."""
    path = PARAMS_DIR / f"{name}.yaml"
    if not path.is_file():
        avail = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise ProfileNotFoundError(f"{path}: no such profile (available: {avail})")
    cfg = load_yaml(path)
    try:
        return cfg.replace(**{**as_mapping(config, "config"), **overrides})
    except ConfigError as e:
        raise ConfigError(f"override of profile {name!r}: {e}") from None


def parse_overrides(items: list[str]) -> dict:
    """`--set KEY=VALUE` strings -> {KEY: value parsed as YAML}; validated where applied."""
    import yaml

    out = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. epochs=5)")
        try:
            out[key.strip()] = read_yaml(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({e})") from None
    return out


def override_keys_help() -> str:
    """Every config key by group, with its type, default and comment: the `--set` list of `--help`."""
    from dataclasses import MISSING, fields

    from .config_groups import field_notes

    lines = ["config keys (--set KEY=VALUE, the value read as YAML: 5, 1e-4, true, null, [1, 2]). The defaults are "
             "SSPLConfig's; a profile (params/<profile>.yaml) sets many of them:"]
    for group in SSPLConfig.GROUPS:
        lines.append(f"  {group.__name__}: {(group.__doc__ or '').strip()}")
        notes = field_notes(group)
        for f in fields(group):
            default = f.default if f.default is not MISSING else f.default_factory()
            note = f"  # {notes[f.name]}" if f.name in notes else ""
            lines.append(f"    {f.name}: {f.type} = {default!r}{note}")
    return "\n".join(lines)


def not_none(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def _json(text: str, name: str, expected: str, example: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{name}={text!r}: not valid JSON ({e.msg} at character {e.pos}); expected {expected}, "
                          f"e.g. {example}") from None


def as_mapping(value, name: str = "config") -> dict:
    """A mapping parameter as given, or parsed from its JSON text ('' and None: {})."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        value = _json(value, name, "a JSON object", "'{\"batch_size\": 32, \"lr_head\": 1e-4}'")
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}={value!r}: expected a mapping of config fields (or its JSON text), "
                          f"got {type(value).__name__}")
    return dict(value)


def as_list(value, name: str, item=str) -> list | None:
    """A list parameter as given, or parsed from its JSON text ('["a", "b"]') or a comma-separated string
    ('a,b'); None stays None; each element converted by `item`."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        value = (_json(text, name, "a JSON list", '\'["sspl", "ezvsl"]\' or sspl,ezvsl') if text.startswith("[")
                 else [v.strip() for v in text.split(",") if v.strip()])
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{name}={value!r}: expected a list (or its JSON text, or comma-separated names)")
    try:
        return [item(v) for v in value]
    except (TypeError, ValueError) as e:
        kind = getattr(item, "__name__", item)
        raise ConfigError(f"{name}={list(value)!r}: an element is not {kind} ({e})") from None
