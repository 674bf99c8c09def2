"""Synthetic audio-visual localization benchmark: K visual classes (shape + colour + texture), each
with a characteristic sound. Deterministic: sample `index` of `split` uses the generator seeded by
(seed, split code, index), so serial and parallel generation give identical bytes.

Splits: train / val (1-3 objects, the first sounds), test_single (1 object), test_multi (2-3 objects
of different classes, one sounds), labeled_images (1 object + label + box), labeled_sounds (clip + label).
Written only when asked for (`n_swap`, `n_extended` > 0; otherwise the files are exactly as without them):
swap (2-3 objects of different classes; each scene stored once per object, with that object's sound: rows
grouped by `scene`, `object` = the sounding one's index in `all_boxes`) and extended (the SLAVC extended
protocol: half the clips have their sounding object in view, half hear an off-screen class or only noise;
`visible` flags the first kind, `sound_label` is the heard class or -1).
With `assets=DIR` the same splits are composited from a folder of real cut-outs, recordings and background
photos (layout: `assets.py`, data/README.md) instead of drawn and synthesized.
CLI: `python -m sspl_lib.data.synthetic --out data/synthetic/quick --n-train 3000 [--assets DIR]`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import torch

from . import asset_scene
from .asset_sound import render_asset_audio
from .assets import LoadedAssets, asset_class_table, load_assets
from .h5 import H5Writer
from .synth_scene import VisualClass, render_scene, visual_classes
from .synth_sound import SR, render_audio, sound_kinds

SPLITS = {"train": 0, "val": 1, "test_single": 2, "test_multi": 3, "labeled_images": 4, "labeled_sounds": 5,
          "swap": 6, "extended": 7}
AV_SPLITS = ("train", "val", "test_single", "test_multi")
LISTEN_SPLITS = ("swap", "extended")  # audio-dependence test splits, written only when asked for
EXTENDED_NONVISIBLE = 0.5  # fraction of extended clips without a visible source (SLAVC: 250 + 250 on Flickr)
ANNOTATED = ("val", "test_single", "test_multi")
MAXOBJ = 3
AREA_RANGE = {1: (0.07, 0.26), 2: (0.06, 0.17), 3: (0.05, 0.12)}  # per object, by number of objects
FORMAT_VERSION = "sspl-synth/1"


def sample_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of one sample (stream 1 = annotators' jitter)."""
    return np.random.default_rng([int(seed), SPLITS[split], int(index), stream])


def class_table(n_classes: int) -> list[dict]:
    """Per class: index, name, shape, colour, texture, sound."""
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
    """One sample -> (frame uint8 (S,S,3) or None, raw wave float32 (48000,) or None, info dict).
    `assets`: composite its cut-outs over its backgrounds and cut its recordings (n_classes = its classes).

    info: id, split, index, label (-1 = silent / off-screen), box (4,) normalized (NaN if none),
    all_boxes (MAXOBJ, 4) NaN-padded, all_labels (MAXOBJ,) -1 padded, n_objects, audio ("class k" | "noise").
    """
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
    """Scene `index` of the swap split: 2-3 objects of different classes and one clip per object.
    Returns (frame uint8 (S,S,3), waves [one float32 (48000,) per object, in object order], infos [one per
    object: the `render_sample` info with that object as the sounding one, + scene and object])."""
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


def render_chunk(task: tuple) -> tuple[str, dict]:
    """Samples [i0, i1) of a split as arrays ready for H5Writer.append (+ `annotators` for the XML files).
    task = (seed, split, i0, i1, frame_size, n_classes, off_screen_frac, n_annotators[, assets folder])."""
    seed, split, i0, i1, frame_size, n_classes, off_screen_frac, n_annot, *rest = task
    from ..audio import batch_log_mel, prepare_clip

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # identical float results in workers and in the parent
    try:
        assets = load_assets(rest[0], frame_size=frame_size) if rest and rest[0] else None  # cached per process
        vcl = None if assets else visual_classes(n_classes)
        if split == "swap":
            scenes = [render_swap_scene(seed, i, frame_size=frame_size, n_classes=n_classes, vclasses=vcl,
                                        assets=assets) for i in range(i0, i1)]
            samples = [(fr, w, info) for fr, ws, infos in scenes for w, info in zip(ws, infos)]
        else:
            frac = EXTENDED_NONVISIBLE if split == "extended" else off_screen_frac
            samples = [render_sample(seed, split, i, frame_size=frame_size, n_classes=n_classes,
                                     off_screen_frac=frac, vclasses=vcl, assets=assets) for i in range(i0, i1)]
        out: dict = {"ids": [s[2]["id"] for s in samples], "label": np.array([s[2]["label"] for s in samples], np.int16)}
        if split == "swap":
            out["scene"] = np.array([s[2]["scene"] for s in samples], np.int32)
            out["object"] = np.array([s[2]["object"] for s in samples], np.int8)
        if split == "extended":
            out["visible"] = (out["label"] >= 0).astype(np.int8)
            out["sound_label"] = np.array([int(s[2]["audio"][6:]) if s[2]["audio"] != "noise" else -1
                                           for s in samples], np.int16)
        if split != "labeled_sounds":
            out["frames"] = np.stack([s[0] for s in samples])
            out["boxes"] = np.stack([s[2]["box"] for s in samples]).astype(np.float32)
        if split in AV_SPLITS or split in LISTEN_SPLITS:
            out["all_boxes"] = np.stack([s[2]["all_boxes"] for s in samples])
            out["all_labels"] = np.stack([s[2]["all_labels"] for s in samples])
        if split != "labeled_images":
            out["audio"] = np.stack([prepare_clip(s[1], SR) for s in samples]).astype(np.float32)  # (n, 48000)
            out["spects"] = batch_log_mel(torch.from_numpy(out["audio"])).numpy()  # (n, 3, 96, 64)
        if split in ANNOTATED:
            out["annotators"] = np.stack([annotator_boxes(seed, split, s[2]["index"], s[2]["box"], n_annot)
                                          if s[2]["label"] >= 0 else np.zeros((n_annot, 4), np.int64) for s in samples])
    finally:
        torch.set_num_threads(threads)
    return split, out


def flickr_xml(sample_id: str, boxes_256: np.ndarray) -> str:
    """Flickr-style XML text: one <object><bbox> per annotator; the bbox's first child is the annotator."""
    objs = "".join(f"  <object>\n    <bbox>\n      <annotator>{a}</annotator>\n" +
                   "".join(f"      <{t}>{int(v)}</{t}>\n" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), b)) +
                   "    </bbox>\n  </object>\n" for a, b in enumerate(boxes_256))
    return f"<annotation>\n  <filename>{sample_id}</filename>\n{objs}</annotation>\n"


def _write_annotations(root: Path, split: str, out: dict, names: list[str], entries: list) -> None:
    d = root / "annotations" / split
    d.mkdir(parents=True, exist_ok=True)
    for sid, lab, box, ann in zip(out["ids"], out["label"], out["boxes"], out["annotators"]):
        if lab >= 0:
            (d / f"{sid}.xml").write_text(flickr_xml(sid, ann))
        entries.append({"file": sid, "class": names[lab] if lab >= 0 else "silent",
                        "bbox": [[round(float(v), 6) for v in box]] if lab >= 0 else []})


def generate_benchmark(out_dir, *, seed: int = 0, n_train: int = 3000, n_val: int = 500, n_test: int = 500,
                       n_labeled: int = 2000, frame_size: int = 128, n_classes: int | None = None,
                       off_screen_frac: float = 0.0, n_annotators: int = 3, store_audio: bool = True, workers: int = 2,
                       chunk: int = 64, progress: bool = True, assets=None, n_swap: int = 0,
                       n_extended: int = 0) -> Path:
    """Write the benchmark folder (h5 per split, annotations/, meta.json); returns its path.

    Drawn shapes and synthesized sounds of `n_classes` classes (default 8), or, with `assets` (an asset folder,
    relative paths from the repo root), scenes composited from its files; its class folders are the classes
    (decoded and checked here first: a bad asset raises `AssetError` naming the file before any work starts).

    `store_audio=False` leaves the 192 kB/sample `audio` out of the audio-visual splits (the spects stay;
    `render_sample` regenerates any clip), for 100k-sample sets.

    `n_swap` scenes (one row per object: about 2.5 rows a scene) and `n_extended` clips of the audio-dependence
    splits (module docstring); with 0 (the default) they are not written and nothing else changes.
    """
    from tqdm.auto import tqdm

    loaded = _load_for(assets, frame_size, n_classes)
    n_classes = loaded.n_classes if loaded else (8 if n_classes is None else n_classes)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    sizes = dict(train=n_train, val=n_val, test_single=n_test, test_multi=n_test,
                 labeled_images=n_labeled, labeled_sounds=n_labeled)
    sizes |= {sp: int(n) for sp, n in (("swap", n_swap), ("extended", n_extended)) if n > 0}
    extra = (str(loaded.index.root),) if loaded else ()
    tasks = [(seed, sp, i, min(i + chunk, n), frame_size, n_classes, off_screen_frac, n_annotators, *extra)
             for sp, n in sizes.items() for i in range(0, n, chunk)]
    classes = asset_class_table(loaded) if loaded else class_table(n_classes)
    names = [c["name"] for c in classes]
    attrs = dict(frame_size=frame_size, sample_rate=SR, source="assets" if loaded else "synthetic", seed=seed,
                 n_classes=n_classes) | (dict(assets=str(assets)) if loaded else {})
    writers = {sp: H5Writer(root / f"{sp}.h5", attrs=attrs | {"split": sp}) for sp, n in sizes.items() if n > 0}
    json_entries: dict[str, list] = {sp: [] for sp in ANNOTATED}
    t0 = time.perf_counter()
    bar = tqdm(total=sum(sizes.values()), desc="assets" if loaded else "synthetic", unit="sample",
               disable=not progress)
    pool = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(render_chunk, tasks) if pool else map(render_chunk, tasks)
        for split, out in results:
            if split in ANNOTATED:
                _write_annotations(root, split, out, names, json_entries[split])
            drop = {"annotators"} | ({"audio"} if not store_audio and split in AV_SPLITS else set())
            writers[split].append({k: v for k, v in out.items() if k not in drop})
            bar.update(len(np.unique(out["scene"])) if split == "swap" else len(out["ids"]))
    except BaseException:
        for w in writers.values():
            w.close(commit=False)
        raise
    finally:
        bar.close()
        if pool:
            pool.terminate()
    for w in writers.values():
        w.close()
    for sp, entries in json_entries.items():
        if sizes[sp]:
            (root / "annotations" / sp / "vggss.json").write_text(json.dumps(entries))
    seconds = time.perf_counter() - t0
    meta = dict(format=FORMAT_VERSION, seed=seed, frame_size=frame_size, n_classes=n_classes, sample_rate=SR,
                off_screen_frac=off_screen_frac, n_annotators=n_annotators, sizes=sizes, classes=classes,
                max_objects=MAXOBJ, area_range=asset_scene.AREA_RANGE if loaded else AREA_RANGE,
                store_audio=store_audio, seconds=round(seconds, 2), workers=workers)
    if loaded:
        meta |= dict(source="assets", assets=str(assets), assets_fingerprint=loaded.index.fingerprint())
    (root / "meta.json").write_text(json.dumps(meta, indent=1))
    return root


def _load_for(assets, frame_size: int, n_classes: int | None) -> LoadedAssets | None:
    """The decoded asset folder (None without one); `n_classes`, when given, must match its class folders."""
    if assets is None:
        return None
    from ..paths import resolve

    loaded = load_assets(resolve(assets), frame_size=frame_size)
    if n_classes is not None and n_classes != loaded.n_classes:
        raise ValueError(f"n_classes={n_classes} but {resolve(assets)}/classes holds {loaded.n_classes} class "
                         "folders (leave n_classes unset with assets: the folders are the classes)")
    return loaded


def split_gt_maps(root, split: str, *, style: str = "flickr", size: int = 224) -> np.ndarray:
    """Ground-truth maps (N, size, size) float32 of a benchmark split, in file order, from its annotation
    files: `style="flickr"` (annotators' XML, {0, 0.5, 1}) or `"vggss"` (the JSON, {0, 1}); silent -> zeros."""
    from .gt import flickr_gt_map, load_vggss_annotations, vggss_gt_map
    from .h5 import read_ids

    root = Path(root)
    ids, d = read_ids(root / f"{split}.h5"), root / "annotations" / split
    if style == "vggss":
        ann = load_vggss_annotations(d / "vggss.json")
        return np.stack([vggss_gt_map(ann[i], size) for i in ids]).astype(np.float32)
    if style != "flickr":
        raise ValueError(f"style must be 'flickr' or 'vggss', got {style!r}")
    return np.stack([flickr_gt_map(d / f"{i}.xml", size) if (d / f"{i}.xml").exists() else np.zeros((size, size))
                     for i in ids]).astype(np.float32)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="data/synthetic/quick", help="output folder (relative: from the repo root)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--n-labeled", type=int, default=2000)
    p.add_argument("--frame-size", type=int, default=128)
    p.add_argument("--n-classes", type=int, default=None, help="drawn classes (default 8; with --assets: its folders)")
    p.add_argument("--assets", default=None, help="asset folder of real cut-outs, recordings and backgrounds")
    p.add_argument("--off-screen-frac", type=float, default=0.0)
    p.add_argument("--n-swap", type=int, default=0, help="scenes of the swap split (0: not written)")
    p.add_argument("--n-extended", type=int, default=0, help="clips of the extended split (0: not written)")
    p.add_argument("--no-audio", action="store_true", help="omit waveforms from the audio-visual splits")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    from ..paths import resolve

    out = generate_benchmark(resolve(a.out), seed=a.seed, n_train=a.n_train, n_val=a.n_val, n_test=a.n_test,
                             n_labeled=a.n_labeled, frame_size=a.frame_size, n_classes=a.n_classes,
                             off_screen_frac=a.off_screen_frac, store_audio=not a.no_audio, workers=a.workers,
                             progress=not a.quiet, assets=a.assets, n_swap=a.n_swap, n_extended=a.n_extended)
    meta = json.loads((out / "meta.json").read_text())
    print(f"wrote {out} ({sum(meta['sizes'].values())} samples in {meta['seconds']} s)")


if __name__ == "__main__":
    main()
