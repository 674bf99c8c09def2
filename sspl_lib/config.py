"""The experiment configuration: one validated dataclass, saved in the run folder and inside every checkpoint.

Every value is checked when a config is built (types from the annotations, enumerations, ranges), so a
profile YAML, a `--set KEY=VALUE`, a config.json and a checkpoint's config all pass the same checks and an
error names the key, the value received and what was expected. YAML is read with YAML 1.2 floats
(`1e-4` is a number, as in JSON; plain PyYAML reads it as a string).

    cfg = load_profile("quick", epochs=5)                    # params/quick.yaml + overrides
    cfg = load_profile("quick", **parse_overrides(["lr_visual=1e-4", "use_pcm=false"]))
    changed_fields(SSPLConfig.load(run / "config.json"), cfg, allow_longer=True)  # [] = safe to resume
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os
import re
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from types import NoneType, UnionType
from typing import get_args, get_origin, get_type_hints

from .paths import PARAMS_DIR, relative_to_repo, resolve

AMP_MODES = ("auto", "bf16", "none")
LR_SCHEDULES = ("constant", "cosine")
VISUAL_ENCODERS = ("vgg16", "small", "efficientnet_lite0")
# EfficientNet-Lite0's map for the PCM (sspl_lib.efficientnet_lite.FEATURES): 14x14 at img_size 448 / 224 / 224
VISUAL_FEATURES = ("head", "head_dilated", "stride16")
AUDIO_ENCODERS = ("vggish", "small", "yamnet")
DATASETS = ("synthetic", "flickr", "vggsound")
TRAIN_SUBSETS = ("10k", "144k")  # the official unlabeled training sets of a real dataset
CHOICES = {"amp": AMP_MODES, "lr_schedule": LR_SCHEDULES,
           "visual_encoder": VISUAL_ENCODERS, "visual_features": VISUAL_FEATURES, "audio_encoder": AUDIO_ENCODERS,
           "dataset": DATASETS,
           "train_subset": TRAIN_SUBSETS}
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
# settings that do not change what a run computes: a resume may change them
RUN_ONLY = ("threads", "workers", "device", "compile", "seeds")
# a resume with allow_longer=True may raise `epochs` and change `patience`
LONGER = ("epochs", "patience")
# file and folder paths: stored relative to the repository root when inside it (`portable`), compared resolved
PATHS = ("data_root", "source_root", "assets", "encoders_checkpoint", "vgg16_weights", "vggish_weights")


class ConfigError(ValueError):
    """An invalid configuration value, key or file; the message names it and says what was expected."""


class ProfileNotFoundError(ConfigError, FileNotFoundError):
    """No params/<name>.yaml (both a ValueError and a FileNotFoundError); the message lists the profiles."""


@dataclass(kw_only=True)
class SSPLConfig:
    # --- model -------------------------------------------------------------------------------------------
    visual_encoder: str = "small"  # "vgg16" (paper) | "small" (CPU) | "efficientnet_lite0" (ImageNet, CPU)
    visual_features: str = "head_dilated"  # efficientnet_lite0's map: "head_dilated" | "head" (stride 32) | "stride16"
    audio_encoder: str = "small"  # "vggish" (paper) | "small" (CPU) | "yamnet" (AudioSet, CPU)
    img_size: int = 112  # 224 for the paper
    visual_dim: int = 128  # channels of the visual map (VGG16: 512)
    encoder_width: int = 32  # small encoders only
    audio_hidden: int = 512
    out_dim: int = 128  # audio MLP output = PCM output = attention feature (paper: 512)
    use_pcm: bool = True
    pcm_cycles: int = 4
    pcm_a0_init: float = 1.0  # initial error rate a0 of the PCM (official 1.0); small = start near the encoder map
    proj_dim: int = 512  # SimSiam projector (paper: 2048)
    pred_hidden: int = 128  # SimSiam predictor bottleneck (paper: 512)
    method: str = "sspl"  # sspl | contrastive | ezvsl | ezvsl_gated | sacl (sspl_lib.methods.registry)
    ezvsl_tau: float = 0.03  # EZ-VSL's temperature (official 0.03)
    ezvsl_ogl_alpha: float = 0.0  # EZ-VSL's test-time map alpha * AV map + (1 - alpha) * prior (OGL: 0.4); 0 = off
    ezvsl_gated_region: float = 0.0  # ezvsl_gated: the MIL max only where the normalized object prior >= this (0 = off)
    ezvsl_gated_gamma: float = 0.0  # ezvsl_gated: test-time map AV map ** gamma * object prior (0 = off)
    sacl_tau: float = 0.005  # SACL's temperature `tempD` (official 0.005)
    sacl_ratio_neg: float = 0.75  # SACL: fraction of the batch kept as negatives, the least similar clips
    sacl_ratio_retain: float = 0.5  # SACL: fraction of locations below the positive-region threshold
    streams: int = 3  # 3 = the paper's audio + two frame views; 2 = audio + one view (fed twice)
    pretrained: bool = True  # load pretrained backbone weights
    vgg16_weights: str | None = None  # path; default: torch hub cache
    vggish_weights: str | None = None
    encoders_checkpoint: str | None = None  # small encoders pretrained on the labeled synthetic set
    fine_tune: bool = False  # train the visual encoder too
    from_scratch: bool = False  # random visual encoder, trained
    # --- data --------------------------------------------------------------------------------------------
    dataset: str = "synthetic"  # "synthetic" | "flickr" | "vggsound"
    data_root: str = "data/synthetic/quick"  # the packed splits (generated, or packed from source_root)
    source_root: str = "data"  # real datasets: the folder holding SoundNet_Flickr/ or VGG-Sound/ (official layout)
    train_subset: str = "10k"  # real datasets: the official unlabeled training set, "10k" | "144k"
    train_split: str = "train"
    val_split: str = "val"
    val_samples: int = 0  # validation samples used for model selection (0 = all)
    # the generated benchmark (dataset == "synthetic")
    assets: str | None = None  # folder of real cut-outs / recordings; None = drawn shapes and synthesized sounds
    data_seed: int = 0
    n_train: int = 3000
    n_val: int = 500
    n_test: int = 500
    n_labeled: int = 2000
    n_swap: int = 0  # swap split: multi-object scenes, each heard once per visible object (0 = none)
    n_extended: int = 0  # extended split: visible, off-screen and silent sound sources (SLAVC's protocol; 0 = none)
    frame_size: int = 128
    n_classes: int = 8
    # --- optimisation (the official defaults for SSPL w/ PCM) ----------------------------------------------
    epochs: int = 20
    batch_size: int = 128
    lr_visual: float = 2e-5  # the PCM, a visual projection and a trainable visual encoder (official `lr_frame`)
    lr_sound: float = 2e-5
    lr_head: float = 5e-5
    beta1: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0  # linear lr warmup (official: none)
    lr_schedule: str = "constant"  # "constant" (official) | "cosine" (to 0 at the last epoch, after warmup)
    patience: int = 0  # early stopping on validation cIoU; 0 = off
    amp: str = "auto"  # "auto" (bf16 on CUDA) | "bf16" | "none"
    pretrain_epochs: int = 6  # label pretraining of the small encoders (pretrain.py)
    pretrain_lr: float = 2e-3  # Adam lr of the label pretraining
    pretrain_batch_size: int = 64
    pretrain_loc_weight: float = 1.0  # weight of the per-location (box vs background) classification loss
    # --- run ---------------------------------------------------------------------------------------------
    seed: int = 1234  # this run's seed
    seeds: tuple[int, ...] = (1234,)  # the seeds of a study (seeds.py, ablation)
    workers: int = 2
    threads: int = 0  # torch.set_num_threads in fit/pretrain (0 = leave torch's default)
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self):
        hints = _hints()
        errors = []
        for f in fields(self):
            try:
                setattr(self, f.name, _typed(f.name, getattr(self, f.name), hints[f.name]))
            except ConfigError as e:
                errors.append(str(e))
        errors = errors or _value_errors(self)
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
        """The same config with its PATHS inside the repository written relative to it (a moved checkout, or
        runs and data moved with it, keeps naming the same files)."""
        return self.replace(**{k: relative_to_repo(getattr(self, k)) for k in PATHS if getattr(self, k) is not None})

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON atomically (a temporary file in the same folder, then os.replace)."""
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


# ----------------------------------------------------------------------------- checks
@lru_cache(maxsize=None)
def _hints() -> dict:
    return get_type_hints(SSPLConfig)


_TYPE_TEXT = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _typed(name: str, value, hint):
    """`value` as the field's type (an int for a float field -> float, a list for a tuple -> tuple), or
    ConfigError. Strings are never converted to numbers or booleans."""
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


def _closest(name: str, options) -> str:
    best = difflib.get_close_matches(name, options, n=1, cutoff=0.0)
    return f" (did you mean {best[0]!r}?)" if best else ""


def _check_keys(d: dict) -> None:
    known = [f.name for f in fields(SSPLConfig)]
    unknown = [str(k) for k in d if k not in known]
    if unknown:
        raise ConfigError("; ".join(f"config key {k!r} is now {RENAMED[k][0]!r}" if k in RENAMED else
                                    f"unknown config key {k!r}{_closest(k, known)}" for k in unknown))


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
    """`d` with the keys of `RENAMED` under today's names; EZ-VSL with the object-guided MIL or gate (old
    `ezvsl_prior_region` or `ogl_gamma` > 0) is the method `ezvsl_gated`."""
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


# lower bounds of numeric fields (lr 0 is allowed: a frozen part)
_AT_LEAST = {"img_size": 1, "visual_dim": 1, "encoder_width": 1, "audio_hidden": 1, "out_dim": 1, "proj_dim": 1,
             "pred_hidden": 1, "pcm_cycles": 0, "val_samples": 0, "data_seed": 0, "n_train": 1, "n_val": 0,
             "n_test": 0, "n_labeled": 0, "frame_size": 1, "n_classes": 1, "epochs": 1, "batch_size": 1,
             "lr_visual": 0, "lr_sound": 0, "lr_head": 0, "weight_decay": 0, "warmup_epochs": 0, "patience": 0,
             "pretrain_epochs": 0, "pretrain_lr": 0, "pretrain_batch_size": 1, "pretrain_loc_weight": 0,
             "seed": 0, "workers": 0, "threads": 0}


def _value_errors(cfg: SSPLConfig) -> list[str]:
    """Enumerations and ranges of a config whose types are right: one message per bad value."""
    errors = []
    for name, allowed in CHOICES.items():
        v = getattr(cfg, name)
        if v not in allowed:
            errors.append(f"{name}={v!r}: expected one of {list(allowed)}{_closest(v, allowed)}")
    if not DEVICE.fullmatch(cfg.device):
        errors.append(f"device={cfg.device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    for name, lo in _AT_LEAST.items():
        if getattr(cfg, name) < lo:
            errors.append(f"{name}={getattr(cfg, name)!r}: expected >= {lo}")
    if cfg.streams not in (2, 3):
        errors.append(f"streams={cfg.streams!r}: expected 3 (audio + two frame views, the paper's) or 2 (one view)")
    for name in ("ezvsl_tau", "sacl_tau"):
        if getattr(cfg, name) <= 0:
            errors.append(f"{name}={getattr(cfg, name)!r}: expected a temperature > 0")
    if not 0 <= cfg.sacl_ratio_neg <= 1:
        errors.append(f"sacl_ratio_neg={cfg.sacl_ratio_neg!r}: expected a fraction in [0, 1]")
    if not 0 <= cfg.ezvsl_ogl_alpha <= 1:
        errors.append(f"ezvsl_ogl_alpha={cfg.ezvsl_ogl_alpha!r}: expected a weight in [0, 1] (0 = no object prior)")
    if not 0 <= cfg.ezvsl_gated_region <= 1:
        errors.append(f"ezvsl_gated_region={cfg.ezvsl_gated_region!r}: expected a threshold in [0, 1] (0 = off)")
    if cfg.ezvsl_gated_gamma < 0:
        errors.append(f"ezvsl_gated_gamma={cfg.ezvsl_gated_gamma!r}: expected an exponent >= 0 (0 = no object gate)")
    if not 0 <= cfg.sacl_ratio_retain < 1:
        errors.append(f"sacl_ratio_retain={cfg.sacl_ratio_retain!r}: expected a fraction in [0, 1)")
    if not 0 <= cfg.beta1 < 1:
        errors.append(f"beta1={cfg.beta1!r}: expected a value in [0, 1)")
    if not cfg.seeds or min(cfg.seeds) < 0 or len(set(cfg.seeds)) != len(cfg.seeds):
        errors.append(f"seeds={list(cfg.seeds)!r}: expected a non-empty list of distinct integers >= 0")
    return errors


# ----------------------------------------------------------------------------- profiles, overrides, resume
class DuplicateKey(ValueError):
    """A key given twice in one YAML mapping (PyYAML would silently keep the last value)."""

    def __init__(self, key, line: int, first: int):
        super().__init__(f"line {line}: `{key}` given twice (first at line {first}); keep one")
        self.key, self.line, self.first = key, line, first


@lru_cache(maxsize=None)
def _yaml_loader():
    """PyYAML's SafeLoader plus the YAML 1.2 float forms (`1e-4`, `2E5`) that YAML 1.1 leaves as strings; a key
    given twice in a mapping raises DuplicateKey."""
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
    """Parse YAML text with the loader of profiles and `--set` values."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())


def load_yaml(path: str | os.PathLike) -> SSPLConfig:
    """A profile file as a validated config; errors name the file, key and value.

    A profile is `profile: <its name>` plus `config: {field: value, ...}`: the same two names that every
    notebook's parameters cell declares, so `papermill ... -f params/<profile>.yaml` runs a notebook on it."""
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


def load_profile(name: str, **overrides) -> SSPLConfig:
    """params/<name>.yaml (read once) as a validated config, plus validated `overrides`.

    Raises ConfigError (a ValueError) naming the offending key and value; ProfileNotFoundError (a ValueError
    and a FileNotFoundError) listing the available profiles when there is no such file."""
    path = PARAMS_DIR / f"{name}.yaml"
    if not path.is_file():
        avail = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise ProfileNotFoundError(f"{path}: no such profile (available: {avail})")
    cfg = load_yaml(path)
    try:
        return cfg.replace(**overrides)
    except ConfigError as e:
        raise ConfigError(f"override of profile {name!r}: {e}") from None


def parse_overrides(items: list[str]) -> dict:
    """`--set KEY=VALUE` strings -> {KEY: value}, each value parsed as YAML (`epochs=5` -> 5, `lr_pcm=1e-4` ->
    1e-4, `use_pcm=false` -> False, `seeds=[1,2]` -> [1, 2], `epochs="5"` -> the string "5"). Keys and
    values are validated where they are applied (`load_profile`, `SSPLConfig.replace`)."""
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


def same_path(a: str | None, b: str | None) -> bool:
    """Two path values naming the same file: compared resolved (relative ones from the repository root, symlinks
    followed), so `data/x` and `<repo>/data/x` are one path."""
    if a is None or b is None:
        return a == b
    return os.path.realpath(resolve(a)) == os.path.realpath(resolve(b))


def changed_fields(stored: SSPLConfig, new: SSPLConfig, *, allow_longer: bool = False) -> list[str]:
    """Keys whose difference changes what a resumed run computes (RUN_ONLY settings are ignored; PATHS are
    compared resolved); with `allow_longer`, `epochs` may grow and `patience` may change. Empty = the run may be
    resumed."""
    out = []
    for f in fields(SSPLConfig):
        old, cur = getattr(stored, f.name), getattr(new, f.name)
        if old == cur or f.name in RUN_ONLY or (f.name in PATHS and same_path(old, cur)):
            continue
        if allow_longer and f.name in LONGER and (f.name != "epochs" or cur > old):
            continue
        out.append(f.name)
    return out


def not_none(**values) -> dict:
    """The given keyword values that are not None (a notebook's optional overrides)."""
    return {k: v for k, v in values.items() if v is not None}
