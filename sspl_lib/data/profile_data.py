"""The data of a profile, made ready once: a generated benchmark, or the packed splits of a real dataset
(docs/data.md). `prepare_data(cfg) -> {split: file}` (notebook 01)."""

from __future__ import annotations

from pathlib import Path

from ..config import SSPLConfig
from ..paths import resolve
from .h5 import DataFileError, open_h5

REAL_SPLITS = ("train", "val", "test")
NEEDS = {"train": ("frames", "spects"), "val": ("frames", "spects", "gt"), "test": ("frames", "spects", "gt")}


def benchmark_settings(cfg: SSPLConfig) -> dict:
    out = dict(seed=cfg.data_seed, n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test, n_labeled=cfg.n_labeled,
               frame_size=cfg.frame_size, n_classes=cfg.n_classes, n_swap=cfg.n_swap, n_extended=cfg.n_extended)
    if cfg.assets:  # the classes are the asset folder's (n_classes is the drawn benchmark's)
        out.update(assets=str(resolve(cfg.assets)), n_classes=None)
    return out


def prepare_data(cfg: SSPLConfig, *, regenerate: bool = False, workers: int = 2, progress: bool = False) -> dict:
    """Make the profile's data ready; returns {split: path} of the packed files."""
    root = resolve(cfg.data_root)
    if cfg.dataset == "synthetic":
        return _synthetic(cfg, root, regenerate=regenerate, workers=workers, progress=progress)
    return _real(cfg, root, workers=workers, progress=progress)


def _synthetic(cfg: SSPLConfig, root: Path, *, regenerate: bool, workers: int, progress: bool) -> dict:
    from .overview import ensure_benchmark

    if cfg.assets and not resolve(cfg.assets).is_dir():
        raise DataFileError(f"{resolve(cfg.assets)}: asset folder not found (the profile's `assets`; its layout is in "
                            "data/README.md; `python -m sspl_lib.data.demo_assets DIR` writes a small demo folder)")
    foreign = sorted(p.name for p in root.glob("*.h5")) if root.is_dir() else []
    if foreign and not (root / "meta.json").is_file():
        raise DataFileError(f"{root}: holds {', '.join(foreign[:4])} but no meta.json, so it was not written by the "
                            f"benchmark generator; refusing to write over it. Point `data_root` of a synthetic "
                            f"profile to an empty or generated folder (dataset {cfg.dataset!r}).")
    root, _ = ensure_benchmark(root, regenerate=regenerate, workers=workers, progress=progress,
                               **benchmark_settings(cfg))
    return {p.stem: p for p in sorted(root.glob("*.h5"))}


def _check(path: Path, split: str) -> Path:
    with open_h5(path) as f:
        missing = [k for k in NEEDS[split] if k not in f]
    if missing:
        raise DataFileError(f"{path}: no dataset {missing} (a {split} split needs {list(NEEDS[split])}); it was not "
                            "made by sspl and is left as it is: move it away to have it packed again")
    return path


def _real(cfg: SSPLConfig, root: Path, *, workers: int, progress: bool) -> dict:
    from .gt import load_id_list, load_vggss_annotations
    from .prepare import prepare_folder
    from .real import dataset_root, pack_official_h5

    src = dataset_root(resolve(cfg.source_root), cfg.dataset)
    labeled = src / "5k_labeled"
    root.mkdir(parents=True, exist_ok=True)
    out = {s: root / f"{s}.h5" for s in REAL_SPLITS}
    if not out["train"].is_file():
        pack_official_h5(src, out["train"], dataset=cfg.dataset, subset=cfg.train_subset)
    if cfg.dataset == "flickr":
        ann, test_csv = labeled / "Annotations", src / "flickr_test249_in5k.csv"
        annotated = sorted(p.stem for p in ann.glob("*.xml")) if ann.is_dir() else []
    else:
        ann, test_csv = labeled / "Annotations" / "vggss_test_5158.json", src / "vggss_test_4692.csv"
        annotated = sorted(load_vggss_annotations(ann)) if ann.is_file() else []
    if not test_csv.is_file() or not annotated:
        raise DataFileError(f"{test_csv if not test_csv.is_file() else ann}: missing (the test list and the boxes of "
                            f"{cfg.dataset}; see the README, 'Pretrained weights and real datasets')")
    test_ids = load_id_list(test_csv)
    if not out["test"].is_file():
        if cfg.dataset == "vggsound":
            pack_official_h5(src, out["test"], dataset="vggsound", subset="test")
        else:
            _prepared(prepare_folder(labeled, out["test"], annotations=ann, ids=test_ids, workers=workers,
                                     source=cfg.dataset, progress=progress), "test")
    if not out["val"].is_file():
        held_out = sorted(set(annotated) - set(test_ids))
        if not held_out:
            raise DataFileError(f"{ann}: every annotated clip is in the test list {test_csv.name}; a validation split "
                                "needs annotated clips outside it (model selection never uses the test set)")
        _prepared(prepare_folder(labeled, out["val"], annotations=ann, ids=held_out, workers=workers,
                                 source=cfg.dataset, progress=progress), "val")
    return {s: _check(p, s) for s, p in out.items()}


def _prepared(report, split: str) -> Path:
    if report.interrupted or not report.n_ok:
        raise DataFileError(f"{report.out}: the {split} split could not be prepared ({report.n_ok} items; skipped: "
                            f"{report.skipped[:3]}); see {report.out}.skipped.csv")
    return report.out


def split_table(files: dict) -> str:
    lines = [f"{'split':16s} {'samples':>8s} {'frame':>7s}  ground truth"]
    for name, path in files.items():
        with open_h5(path) as f:
            n = int(f["frames"].shape[0]) if "frames" in f else int(f[next(iter(f.keys()))].shape[0])
            size = f"{f['frames'].shape[1]} px" if "frames" in f else "-"
            gt = "gt maps" if "gt" in f else ("boxes" if "boxes" in f else "none")
        lines.append(f"{name:16s} {n:8d} {size:>7s}  {gt}")
    return "\n".join(lines)
