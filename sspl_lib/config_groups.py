"""The groups of `SSPLConfig`'s fields by concern, each with its checks: `CHOICES`, lower bounds
`AT_LEAST` (lr 0 is allowed: a frozen part) and `errors`, one message per bad value."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import ClassVar

DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def field_notes(group) -> dict[str, str]:
    """{field: the comment beside its line in this module} of a group (for `--help`)."""
    import inspect

    notes = {}
    for line in inspect.getsource(group).splitlines():
        m = re.match(r"\s+(\w+): [^=#]+=[^#]*#\s*(.*)$", line)
        if m:
            notes[m[1]] = m[2]
    return notes


def closest(name: str, options) -> str:
    best = difflib.get_close_matches(name, options, n=1, cutoff=0.0)
    return f" (did you mean {best[0]!r}?)" if best else ""


class _Checked:
    CHOICES: ClassVar[dict] = {}
    AT_LEAST: ClassVar[dict] = {}

    @classmethod
    def choice_errors(cls, cfg) -> list[str]:
        return [f"{name}={getattr(cfg, name)!r}: expected one of {list(allowed)}{closest(getattr(cfg, name), allowed)}"
                for name, allowed in cls.CHOICES.items() if getattr(cfg, name) not in allowed]

    @staticmethod
    def errors(cfg) -> list[str]:
        return []


def _outside(cfg, name: str, lo: float, hi: float, what: str, *, open_hi: bool = False) -> list[str]:
    v = getattr(cfg, name)
    return [f"{name}={v!r}: expected {what}"] if not (lo <= v < hi if open_hi else lo <= v <= hi) else []


@dataclass(kw_only=True)
class ModelConfig(_Checked):
    """The streams: encoders, PCM, attention features and the SimSiam head."""

    visual_encoder: str = "small"  # "vgg16" (paper) | "small" (CPU) | "efficientnet_lite0" (ImageNet, CPU)
    visual_features: str = "head_dilated"  # efficientnet_lite0's map (efficientnet_lite.FEATURES): 14x14 at 224 / 448 / 224 px
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
    streams: int = 3  # 3 = the paper's audio + two frame views; 2 = audio + one view (fed twice)
    pretrained: bool = True  # load pretrained backbone weights
    vgg16_weights: str | None = None  # path; default: torch hub cache
    vggish_weights: str | None = None
    encoders_checkpoint: str | None = None  # small encoders pretrained on the labeled synthetic set
    fine_tune: bool = False  # train the visual encoder too
    from_scratch: bool = False  # random visual encoder, trained
    visual_pca_dim: int = 0  # > 0: a frozen PCA of the visual map to this many channels, fit before training (0 = off)
    feature_cache: bool = False  # train and evaluate on frozen-encoder features cached on disk (experiments.feature_cache)
    cache_scale: float = 16 / 14  # feature_cache: train frames resized to round(cache_scale * img_size) px (16x16 maps)

    CHOICES: ClassVar[dict] = {"visual_encoder": ("vgg16", "small", "efficientnet_lite0"),
                               "visual_features": ("head_dilated", "head", "stride16"),
                               "audio_encoder": ("vggish", "small", "yamnet")}
    AT_LEAST: ClassVar[dict] = {"img_size": 1, "visual_dim": 1, "encoder_width": 1, "audio_hidden": 1, "out_dim": 1,
                                "proj_dim": 1, "pred_hidden": 1, "pcm_cycles": 0, "visual_pca_dim": 0, "cache_scale": 1}

    @staticmethod
    def errors(cfg) -> list[str]:
        out = [] if cfg.streams in (2, 3) else [
            f"streams={cfg.streams!r}: expected 3 (audio + two frame views, the paper's) or 2 (one view)"]
        trains = [k for k in ("fine_tune", "from_scratch") if getattr(cfg, k)]
        frozen_only = [f"{k}={getattr(cfg, k)!r}" for k in ("feature_cache", "visual_pca_dim") if getattr(cfg, k)]
        if trains and frozen_only:
            out.append(f"{' and '.join(frozen_only)} with {trains[0]}=true: a cache and a fixed PCA need a frozen "
                       f"visual encoder (its features do not change); set {trains[0]}: false, or feature_cache: false "
                       "and visual_pca_dim: 0")
        return out


@dataclass(kw_only=True)
class MethodConfig(_Checked):
    """The training objective and test-time map (`sspl_lib.methods`) and the settings of each method."""

    method: str = "sspl"  # sspl | contrastive | ezvsl | ezvsl_gated | sacl (sspl_lib.methods.registry)
    ezvsl_tau: float = 0.03  # EZ-VSL's temperature (official 0.03)
    ezvsl_ogl_alpha: float = 0.0  # EZ-VSL's test-time map alpha * AV map + (1 - alpha) * prior (OGL: 0.4); 0 = off
    ezvsl_gated_region: float = 0.0  # ezvsl_gated: the MIL max only where the normalized object prior >= this (0 = off)
    ezvsl_gated_gamma: float = 0.0  # ezvsl_gated: test-time map AV map ** gamma * object prior (0 = off)
    sacl_tau: float = 0.005  # SACL's temperature `tempD` (official 0.005)
    sacl_ratio_neg: float = 0.75  # SACL: fraction of the batch kept as negatives, the least similar clips
    sacl_ratio_retain: float = 0.5  # SACL: fraction of locations below the positive-region threshold

    @staticmethod
    def errors(cfg) -> list[str]:
        out = [f"{n}={getattr(cfg, n)!r}: expected a temperature > 0" for n in ("ezvsl_tau", "sacl_tau")
               if getattr(cfg, n) <= 0]
        out += _outside(cfg, "sacl_ratio_neg", 0, 1, "a fraction in [0, 1]")
        out += _outside(cfg, "ezvsl_ogl_alpha", 0, 1, "a weight in [0, 1] (0 = no object prior)")
        out += _outside(cfg, "ezvsl_gated_region", 0, 1, "a threshold in [0, 1] (0 = off)")
        out += _outside(cfg, "ezvsl_gated_gamma", 0, float("inf"), "an exponent >= 0 (0 = no object gate)")
        return out + _outside(cfg, "sacl_ratio_retain", 0, 1, "a fraction in [0, 1)", open_hi=True)


@dataclass(kw_only=True)
class DataConfig(_Checked):
    """The packed splits a run reads, and the generated benchmark's settings (dataset "synthetic")."""

    dataset: str = "synthetic"  # "synthetic" | "flickr" | "vggsound"
    data_root: str = "data/synthetic/quick"  # the packed splits (generated, or packed from source_root)
    source_root: str = "data"  # real datasets: the folder holding SoundNet_Flickr/ or VGG-Sound/ (official layout)
    train_subset: str = "10k"  # real datasets: the official unlabeled training set, "10k" | "144k"
    train_split: str = "train"
    val_split: str = "val"
    val_samples: int = 0  # validation samples used for model selection (0 = all)
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

    CHOICES: ClassVar[dict] = {"dataset": ("synthetic", "flickr", "vggsound"), "train_subset": ("10k", "144k")}
    AT_LEAST: ClassVar[dict] = {"val_samples": 0, "data_seed": 0, "n_train": 1, "n_val": 0, "n_test": 0,
                                "n_labeled": 0, "frame_size": 1, "n_classes": 1}


@dataclass(kw_only=True)
class OptimConfig(_Checked):
    """The optimisation (the official defaults for SSPL w/ PCM) and the small encoders' label pretraining."""

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

    CHOICES: ClassVar[dict] = {"amp": ("auto", "bf16", "none"), "lr_schedule": ("constant", "cosine")}
    AT_LEAST: ClassVar[dict] = {"epochs": 1, "batch_size": 1, "lr_visual": 0, "lr_sound": 0, "lr_head": 0,
                                "weight_decay": 0, "warmup_epochs": 0, "patience": 0, "pretrain_epochs": 0,
                                "pretrain_lr": 0, "pretrain_batch_size": 1, "pretrain_loc_weight": 0}

    @staticmethod
    def errors(cfg) -> list[str]:
        return _outside(cfg, "beta1", 0, 1, "a value in [0, 1)", open_hi=True)


@dataclass(kw_only=True)
class ExecutionConfig(_Checked):
    """The seeds, and the machine a run executes on (the latter never changes what it computes)."""

    seed: int = 1234  # this run's seed
    seeds: tuple[int, ...] = (1234,)  # the seeds of a study (experiments.study)
    workers: int = 2
    threads: int = 0  # torch.set_num_threads in fit/pretrain (0 = leave torch's default)
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    AT_LEAST: ClassVar[dict] = {"seed": 0, "workers": 0, "threads": 0}

    @classmethod
    def choice_errors(cls, cfg) -> list[str]:
        ok = DEVICE.fullmatch(cfg.device)
        return [] if ok else [f"device={cfg.device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"]

    @staticmethod
    def errors(cfg) -> list[str]:
        if cfg.seeds and min(cfg.seeds) >= 0 and len(set(cfg.seeds)) == len(cfg.seeds):
            return []
        return [f"seeds={list(cfg.seeds)!r}: expected a non-empty list of distinct integers >= 0"]
