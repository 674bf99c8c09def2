"""One sample of the generated benchmark: scene, sound and annotators' boxes, from the generator seeded by
(seed, split, index), so serial and parallel generation give identical bytes."""

from __future__ import annotations

import numpy as np

from . import asset_scene
from .asset_sound import render_asset_audio
from .assets import LoadedAssets
from .synth_scene import VisualClass, render_scene, visual_classes
from .synth_sound import render_audio, sound_kinds

SPLITS = {"train": 0, "val": 1, "test_single": 2, "test_multi": 3, "labeled_images": 4, "labeled_sounds": 5,
          "swap": 6, "extended": 7}
AV_SPLITS = ("train", "val", "test_single", "test_multi")
MAXOBJ = 3
AREA_RANGE = {1: (0.07, 0.26), 2: (0.06, 0.17), 3: (0.05, 0.12)}  # per object, by number of objects


def sample_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLITS[split], int(index), stream])


def class_table(n_classes: int) -> list[dict]:
    return [dict(index=k, name=f"{v.colour} {v.shape}", shape=v.shape, colour=v.colour, texture=v.texture, sound=s)
            for k, (v, s) in enumerate(zip(visual_classes(n_classes), sound_kinds(n_classes)))]


def annotator_boxes(seed: int, split: str, index: int, box: np.ndarray, n: int = 3) -> np.ndarray:
    """n jittered copies (n, 4) int of a normalized box in 256-px coordinates (Flickr annotation style)."""
    rng = sample_rng(seed, split, index, stream=1)
    b = np.asarray(box, np.float64) * 256
    side = np.array([b[2] - b[0], b[3] - b[1]] * 2)
    jit = np.rint(b + rng.normal(0, 0.04, (n, 4)) * side).clip(0, 256)  # (n, 4)
    jit[:, 2:] = np.maximum(jit[:, 2:], jit[:, :2] + 2)
    return jit.astype(np.int64)


def _renderers(rng: np.random.Generator, frame_size: int, n_classes: int, vclasses, assets):
    """(n_classes, audio(k | None) -> wave, scene(labels, n_obj) -> (frame, boxes)) drawing from `rng`."""
    if assets is not None:
        def audio(k):
            return render_asset_audio(rng, assets, k)

        def scene(labels, n_obj):
            frame, boxes, _ = asset_scene.compose_scene(rng, frame_size, assets, labels,
                                                        area_range=asset_scene.AREA_RANGE[n_obj])
            return frame, boxes
        return assets.n_classes, audio, scene
    kinds = sound_kinds(n_classes)

    def audio(k):
        return render_audio(rng, None if k is None else kinds[k])

    def scene(labels, n_obj):
        return render_scene(rng, frame_size, vclasses or visual_classes(n_classes), labels,
                            area_range=AREA_RANGE[n_obj])
    return n_classes, audio, scene


def render_sample(seed: int, split: str, index: int, *, frame_size: int = 128, n_classes: int = 8,
                  off_screen_frac: float = 0.0, vclasses: list[VisualClass] | None = None,
                  assets: LoadedAssets | None = None):
    """One sample -> (frame uint8 (S,S,3) | None, wave (48000,) | None, info: id, label (-1: none), box,
    all_boxes, all_labels, n_objects, audio)."""
    if split == "swap":
        raise ValueError("split 'swap' has one row per object of a scene: use render_swap_scene")
    rng = sample_rng(seed, split, index)
    n_classes, audio, scene = _renderers(rng, frame_size, n_classes, vclasses, assets)
    info = dict(id=f"{split}_{index:06d}", split=split, index=index, label=-1, box=np.full(4, np.nan, np.float32),
                all_boxes=np.full((MAXOBJ, 4), np.nan, np.float32), all_labels=np.full(MAXOBJ, -1, np.int16),
                n_objects=0, audio="noise")
    if split == "labeled_sounds":
        label = int(rng.integers(n_classes))
        info.update(label=label, audio=f"class {label}")
        return None, audio(label), info
    if split in ("test_single", "labeled_images"):
        n_obj = 1
    elif split == "test_multi":
        n_obj = int(rng.integers(2, MAXOBJ + 1))
    else:
        n_obj = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    n_obj = min(n_obj, n_classes)
    labels = [int(k) for k in rng.choice(n_classes, n_obj, replace=False)]
    frame, boxes = scene(labels, n_obj)
    info.update(n_objects=n_obj)
    info["all_boxes"][:n_obj], info["all_labels"][:n_obj] = boxes, labels
    if split == "labeled_images":
        info.update(label=labels[0], box=boxes[0])
        return frame, None, info
    silent = split in (*AV_SPLITS, "extended") and off_screen_frac > 0 and rng.random() < off_screen_frac
    if not silent:
        info.update(label=labels[0], box=boxes[0], audio=f"class {labels[0]}")
        return frame, audio(labels[0]), info
    absent = [k for k in range(n_classes) if k not in labels]
    if absent and rng.random() < 0.5:  # an off-screen source
        k = int(rng.choice(absent))
        info["audio"] = f"class {k}"
        return frame, audio(k), info
    return frame, audio(None), info


def render_swap_scene(seed: int, index: int, *, frame_size: int = 128, n_classes: int = 8,
                      vclasses: list[VisualClass] | None = None, assets: LoadedAssets | None = None):
    """Swap scene `index`: its frame, one clip per object and one info per object (it sounding)."""
    rng = sample_rng(seed, "swap", index)
    n_classes, audio, scene = _renderers(rng, frame_size, n_classes, vclasses, assets)
    n_obj = min(int(rng.integers(2, MAXOBJ + 1)), n_classes)
    labels = [int(k) for k in rng.choice(n_classes, n_obj, replace=False)]
    frame, boxes = scene(labels, n_obj)
    all_boxes, all_labels = np.full((MAXOBJ, 4), np.nan, np.float32), np.full(MAXOBJ, -1, np.int16)
    all_boxes[:n_obj], all_labels[:n_obj] = boxes, labels
    waves, infos = [], []
    for j, k in enumerate(labels):
        waves.append(audio(k))
        infos.append(dict(id=f"swap_{index:06d}_{j}", split="swap", index=index, scene=index, object=j, label=k,
                          box=np.asarray(boxes[j], np.float32), all_boxes=all_boxes, all_labels=all_labels,
                          n_objects=n_obj, audio=f"class {k}"))
    return frame, waves, infos
