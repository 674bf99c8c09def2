"""One flat dataclass per experiment: saved in the run folder and inside every checkpoint."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .paths import PARAMS_DIR


@dataclass
class SSPLConfig:
    # --- model ---
    visual_encoder: str = "small"  # "vgg16" (paper) | "small" (CPU)
    audio_encoder: str = "small"  # "vggish" (paper) | "small" (CPU)
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
    pretrained: bool = True  # load pretrained backbone weights
    vgg16_weights: str | None = None  # path; default: torch hub cache
    vggish_weights: str | None = None
    encoders_checkpoint: str | None = None  # small encoders pretrained on the labeled synthetic set
    fine_tune: bool = False  # train the visual encoder too
    from_scratch: bool = False  # random visual encoder, trained
    objective: str = "simsiam"  # "simsiam" (SSPL) | "contrastive" (EZ-VSL-style InfoNCE baseline)
    views: int = 2  # 2 = the paper's three streams; 1 = two streams (one frame view)
    # --- data ---
    dataset: str = "synthetic"  # "synthetic" | "flickr" | "vggsound"
    data_root: str = "data/synthetic/quick"
    source_root: str = "data"  # real datasets: the folder holding SoundNet_Flickr/ or VGG-Sound/ (official layout)
    train_subset: str = "10k"  # real datasets: the official unlabeled training set, "10k" | "144k"
    train_split: str = "train"
    val_split: str = "val"
    # --- optimisation (the official defaults for SSPL w/ PCM) ---
    epochs: int = 20
    batch_size: int = 128
    lr_pcm: float = 2e-5  # official `lr_frame`
    lr_sound: float = 2e-5
    lr_head: float = 5e-5
    beta1: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 1234
    workers: int = 2
    patience: int = 0  # early stopping on validation cIoU; 0 = off
    amp: str = "auto"  # "auto" (bf16 on CUDA) | "bf16" | "none"
    compile: bool = False
    device: str = "auto"
    # --- added by the training engineer (train.py / pretrain.py) ---
    warmup_epochs: float = 0.0  # linear lr warmup (official: none)
    lr_schedule: str = "constant"  # "constant" (official) | "cosine" (to 0 at the last epoch, after warmup)
    val_samples: int = 0  # validation samples used for model selection (0 = all)
    threads: int = 0  # torch.set_num_threads in fit/pretrain (0 = leave torch's default)
    pretrain_epochs: int = 6  # label pretraining of the small encoders (pretrain.py)
    pretrain_lr: float = 2e-3  # Adam lr of the label pretraining
    pretrain_batch_size: int = 64
    pretrain_loc_weight: float = 1.0  # weight of the per-location (box vs background) classification loss

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SSPLConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {unknown}")
        return cls(**d)

    def replace(self, **changes) -> "SSPLConfig":
        return dataclasses.replace(self, **changes)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "SSPLConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def load_profile(name: str, **overrides) -> SSPLConfig:
    """A named profile from params/<name>.yaml (only keys of SSPLConfig are used), plus overrides."""
    import yaml

    path = PARAMS_DIR / f"{name}.yaml"
    if not path.is_file():
        avail = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"{path}: no such profile (available: {avail})")
    raw = yaml.safe_load(path.read_text()) or {}
    known = {f.name for f in fields(SSPLConfig)}
    return SSPLConfig.from_dict({k: v for k, v in {**raw, **overrides}.items() if k in known})


RUN_ONLY = {"threads", "workers", "device", "compile"}  # settings that do not change what is trained


def changed_fields(stored: SSPLConfig, new: SSPLConfig, *, allow_longer: bool = False) -> list[str]:
    """Keys whose difference changes a run (resume refuses on them); epochs / patience may grow with allow_longer."""
    out = []
    for f in fields(SSPLConfig):
        a, b = getattr(stored, f.name), getattr(new, f.name)
        if a == b or f.name in RUN_ONLY:
            continue
        if allow_longer and f.name in ("epochs", "patience") and b >= a:
            continue
        out.append(f.name)
    return out


def parse_overrides(items) -> dict:
    """`KEY=VALUE` strings (YAML values) -> {key: value}."""
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def not_none(**values) -> dict:
    """The given keyword values that are not None (a notebook's optional overrides)."""
    return {k: v for k, v in values.items() if v is not None}
