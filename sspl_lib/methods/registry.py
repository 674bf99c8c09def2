"""The methods by name (`cfg.method`), one line each, and the model of a config."""

from __future__ import annotations

import difflib

from ..config import ConfigError, SSPLConfig
from ..model import SSPL, load_encoders
from .base import Method
from .contrastive import Contrastive
from .ezvsl import EZVSL, EZVSLGated
from .sacl import SACL
from .sspl import SSPLMethod

REGISTRY: dict[str, type[Method]] = {
    "sspl": SSPLMethod,
    "contrastive": Contrastive,
    "ezvsl": EZVSL,
    "ezvsl_gated": EZVSLGated,
    "sacl": SACL,
}


def build_method(cfg: SSPLConfig) -> Method:
    """The method of `cfg.method`; ConfigError for an unknown name or a PCM it cannot use."""
    if cfg.method not in REGISTRY:
        close = difflib.get_close_matches(cfg.method, REGISTRY, n=1, cutoff=0.0)
        raise ConfigError(f"method={cfg.method!r}: expected one of {list(REGISTRY)}"
                          + (f" (did you mean {close[0]!r}?)" if close else ""))
    cls = REGISTRY[cfg.method]
    if cfg.use_pcm and not cls.uses_pcm:
        raise ConfigError(f"method={cfg.method!r} with use_pcm=true: it compares each frame with every clip of the "
                          "batch and has no PCM (a pass per image-audio pair); set use_pcm=false")
    return cls.from_config(cfg)


def build_model(cfg: SSPLConfig) -> SSPL:
    """The shared streams with `cfg.method`; small encoders and a visual PCA load `cfg.encoders_checkpoint`."""
    model = SSPL(cfg, build_method(cfg))
    if cfg.encoders_checkpoint and (cfg.visual_encoder == "small" or cfg.visual_pca_dim):
        load_encoders(model, cfg.encoders_checkpoint)
    return model
