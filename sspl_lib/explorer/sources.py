"""What the explorer looks at: heatmap sources (trained runs, the centre prior), which map a frame and a
clip to the maps after each PCM cycle (cycles+1, h, w), and annotated splits read lazily."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from ..config import SSPLConfig
from ..data.checks import check_split
from ..data.h5 import DataFileError, open_h5
from ..data.transforms import eval_frame
from ..experiments.runs import checkpoint_path, is_run, load_run, read_history
from ..paths import resolve, shown

CENTRE_PRIOR = "centre prior"


class RunModel:
    """A trained run's best.pt (without one: its last.pt, with a `warning`)."""

    def __init__(self, run_dir, name: str | None = None, device: str = "cpu"):
        self.run_dir = resolve(run_dir)
        self.checkpoint, self.warning = checkpoint_path(self.run_dir, "best"), None
        if not self.checkpoint.is_file() and checkpoint_path(self.run_dir, "last").is_file():
            self.checkpoint = checkpoint_path(self.run_dir, "last")
            self.warning = (f"{shown(self.run_dir)} has no best.pt (the model selected on validation): showing "
                            "last.pt, the last trained epoch; resume the training to write best.pt")
            warnings.warn(self.warning, stacklevel=2)
        self.model = load_run(self.run_dir, which=self.checkpoint.stem, device=device)  # eval mode
        self.cfg: SSPLConfig = self.model.cfg
        self.device = torch.device(device)
        self.name = name or self.run_dir.name
        self.cycles = self.cfg.pcm_cycles if self.cfg.use_pcm else 0
        self.unfinished = unfinished(self.run_dir, self.cfg.epochs)

    @property
    def has_pcm(self) -> bool:
        return self.cycles > 0

    def _inputs(self, frames: np.ndarray, spects: np.ndarray):
        fr = eval_frame(torch.from_numpy(np.ascontiguousarray(frames)).to(self.device), self.cfg.img_size)
        return fr, torch.from_numpy(np.ascontiguousarray(spects, dtype=np.float32)).to(self.device)

    @torch.no_grad()
    def maps(self, frame: np.ndarray, spects: np.ndarray) -> np.ndarray:
        """(cycles+1, h, w) float32: heatmaps after the PCM initialization and each cycle (last = final)."""
        fr, sp = self._inputs(frame[None], spects[None])
        return self.model.heatmap_cycles(fr, sp)[0].float().cpu().numpy()

    @torch.no_grad()
    def final_maps(self, frames: np.ndarray, spects: np.ndarray, batch_size: int = 64) -> np.ndarray:
        out = []
        for s in range(0, len(frames), batch_size):
            fr, sp = self._inputs(frames[s:s + batch_size], spects[s:s + batch_size])
            out.append(self.model.heatmap(fr, sp).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 1, 1), np.float32)


def unfinished(run_dir, epochs: int) -> str | None:
    """'2 of 100 epochs' for a run whose history is shorter than its epochs and was not stopped early; else None."""
    history = read_history(run_dir)
    if (history and history[-1].get("stopped")) or len(history) >= epochs:
        return None
    return f"{len(history)} of {epochs} epochs"


class CentrePrior:
    """The centre-prior pseudo-model: the same centred Gaussian for every frame and sound."""

    name = CENTRE_PRIOR
    cycles = 0
    has_pcm = False
    unfinished = None

    def __init__(self, size: int = 14):
        from ..baselines import center_prior

        self.map = center_prior(1, size).numpy()  # (1, size, size)

    def maps(self, frame, spects) -> np.ndarray:
        return self.map.copy()

    def final_maps(self, frames, spects, batch_size: int = 64) -> np.ndarray:
        return np.repeat(self.map, len(frames), axis=0)


def sibling_runs(run_dir) -> list[Path]:
    run = resolve(run_dir)
    if not run.parent.is_dir():
        return []
    return sorted(p for p in run.parent.iterdir() if p.is_dir() and p.resolve() != run.resolve() and is_run(p))


def default_compare(run_dir) -> list[tuple[str, Path]]:
    """(name, folder) of the runs offered next to `run_dir`: its siblings and the ablation's first seeds."""
    run = resolve(run_dir)
    out = [(p.name, p) for p in sibling_runs(run)]
    abl = run.parent / "ablation"
    for variant in sorted(p for p in abl.iterdir() if p.is_dir()) if abl.is_dir() else []:
        seeds = sorted((s for s in variant.glob("seed*") if is_run(s)),
                       key=lambda s: (not s.name[4:].isdigit(), int(s.name[4:]) if s.name[4:].isdigit() else 0))
        if seeds:
            out.append((f"{variant.name} (ablation)" if variant.name == run.name else variant.name, seeds[0]))
    return out


# ----------------------------------------------------------------------------- data
SPLIT_ORDER = ("test_single", "test_multi", "swap", "extended", "val", "train")


def find_splits(data_root) -> dict[str, Path]:
    """{name: path} of the audio-visual split files (frames + spects + audio) in `data_root`, tests first."""
    root = resolve(data_root)
    found = {}
    for p in sorted(root.glob("*.h5")) if root.is_dir() else []:
        try:
            with open_h5(p) as f:
                if all(k in f for k in ("frames", "spects", "audio")):
                    found[p.stem] = p
        except DataFileError:
            continue
    rank = {n: i for i, n in enumerate(SPLIT_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


class SplitData:
    """One packed split read lazily per sample; `sounding_only` leaves out silent samples (local indices)."""

    def __init__(self, path, *, sounding_only: bool = True, class_names: list[str] | None = None):
        from ..data.h5 import read_field

        self.path = resolve(path)
        self.name = self.path.stem
        check_split(self.path, "train")  # datasets present, equal lengths, uint8 RGB frames, finite spects
        self.f = open_h5(self.path)
        self._read = read_field
        n = int(self.f["frames"].shape[0])
        self.labels = read_field(self.f, "label").astype(int) if "label" in self.f else np.zeros(n, int)
        self.rows = np.flatnonzero(self.labels >= 0) if sounding_only and "label" in self.f else np.arange(n)
        ids = read_field(self.f, "ids") if "ids" in self.f else [str(i) for i in range(n)]
        self.ids = [(i.decode() if isinstance(i, bytes) else str(i)) for i in np.asarray(ids)[self.rows]]
        self.labels = self.labels[self.rows]
        self.boxes = read_field(self.f, "boxes")[self.rows] if "boxes" in self.f else None
        self.all_boxes = read_field(self.f, "all_boxes")[self.rows] if "all_boxes" in self.f else None
        self.all_labels = read_field(self.f, "all_labels")[self.rows].astype(int) if "all_labels" in self.f else None
        # the swap split: rows of one scene share the frame, `object` = the sounding one's index in all_boxes
        self.scene = read_field(self.f, "scene")[self.rows] if "scene" in self.f else None
        self.object = read_field(self.f, "object")[self.rows].astype(int) if "object" in self.f else None
        self.has_gt = "gt" in self.f or self.boxes is not None
        self.class_names = class_names or []

    def __len__(self) -> int:
        return len(self.rows)

    def frame(self, i: int) -> np.ndarray:
        return self._read(self.f, "frames", int(self.rows[i]))

    def spects(self, i: int) -> np.ndarray:
        return self._read(self.f, "spects", int(self.rows[i])).astype(np.float32)

    def audio(self, i: int) -> np.ndarray:
        return self._read(self.f, "audio", int(self.rows[i])).astype(np.float32)

    def all_frames_spects(self) -> tuple[np.ndarray, np.ndarray]:
        frames, spects = self.f["frames"][:], self.f["spects"][:]
        return frames[self.rows], spects[self.rows].astype(np.float32)

    def gt(self, i: int, size: int = 224) -> np.ndarray:
        """Ground-truth map (size, size) float64: the stored `gt`, else the VGG-SS map of the box."""
        from ..data.gt import vggss_gt_map

        if "gt" in self.f:
            return self._read(self.f, "gt", int(self.rows[i])).astype(np.float64)
        if self.boxes is None or not np.all(np.isfinite(self.boxes[i])):
            return np.zeros((size, size))
        return vggss_gt_map([self.boxes[i]], size)

    def label_name(self, i: int) -> str:
        k = int(self.labels[i])
        if k < 0:
            return "silent"
        return self.class_names[k] if k < len(self.class_names) else f"class {k}"

    def describe(self, i: int) -> str:
        return f"{self.ids[i]} ({self.label_name(i)})"

    def class_name(self, k: int) -> str:
        return self.class_names[k] if 0 <= k < len(self.class_names) else f"class {k}"

    def scene_rows(self, i: int) -> list[int]:
        """Local indices of the rows of sample i's scene, by object (swap split; [i] elsewhere)."""
        if self.scene is None or self.object is None:
            return [int(i)]
        rows = np.flatnonzero(self.scene == self.scene[i])
        return [int(r) for r in rows[np.argsort(self.object[rows], kind="stable")]]

    def same_scene(self, i: int, j: int) -> bool:
        return self.scene is not None and self.scene[i] == self.scene[j]

    def close(self) -> None:
        self.f.close()


def class_names(data_root) -> list[str]:
    meta = resolve(data_root) / "meta.json"
    if not meta.is_file():
        return []
    return [c.get("name", f"class {c.get('index')}") for c in json.loads(meta.read_text()).get("classes", [])]
