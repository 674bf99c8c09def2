"""The generated benchmark folder (docs/data.md): packed splits, annotations and meta.json, drawn or
composited from an asset folder.
CLI: `python -m sspl_lib.data.synthetic --out data/synthetic/quick --n-train 3000 [--assets DIR]`."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import torch

from ..cli import HelpFormat
from ..paths import shown
from ..progress_lines import ProgressLines
from . import asset_scene
from .assets import LoadedAssets, asset_class_table, load_assets
from .h5 import H5Writer
from .synth_sample import AREA_RANGE, AV_SPLITS, MAXOBJ, annotator_boxes, class_table, render_sample, render_swap_scene
from .synth_scene import visual_classes
from .synth_sound import SR

LISTEN_SPLITS = ("swap", "extended")  # audio-dependence test splits, written only when asked for
EXTENDED_NONVISIBLE = 0.5  # fraction of extended clips without a visible source (SLAVC: 250 + 250 on Flickr)
ANNOTATED = ("val", "test_single", "test_multi")
FORMAT_VERSION = "sspl-synth/1"


def render_chunk(task: tuple) -> tuple[str, dict]:
    """Samples [i0, i1) of a split as arrays for H5Writer.append (+ `annotators` for the XML files)."""
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
    """Write the benchmark folder (split files, annotations/, meta.json), drawn or from `assets`."""
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
    attrs = dict(frame_size=frame_size, sample_rate=SR, source="assets" if loaded else "synthetic", seed=seed,
                 n_classes=n_classes) | (dict(assets=str(assets)) if loaded else {})
    t0 = time.perf_counter()
    _write_splits(root, tasks, sizes, attrs, [c["name"] for c in classes], store_audio=store_audio, workers=workers,
                  progress=progress)
    meta = dict(format=FORMAT_VERSION, seed=seed, frame_size=frame_size, n_classes=n_classes, sample_rate=SR,
                off_screen_frac=off_screen_frac, n_annotators=n_annotators, sizes=sizes, classes=classes,
                max_objects=MAXOBJ, area_range=asset_scene.AREA_RANGE if loaded else AREA_RANGE,
                store_audio=store_audio, seconds=round(time.perf_counter() - t0, 2), workers=workers)
    if loaded:
        meta |= dict(source="assets", assets=str(assets), assets_fingerprint=loaded.index.fingerprint())
    (root / "meta.json").write_text(json.dumps(meta, indent=1))
    return root


def _write_splits(root: Path, tasks: list, sizes: dict, attrs: dict, names: list[str], *, store_audio: bool,
                  workers: int, progress: bool) -> None:
    writers = {sp: H5Writer(root / f"{sp}.h5", attrs=attrs | {"split": sp}) for sp, n in sizes.items() if n > 0}
    json_entries: dict[str, list] = {sp: [] for sp in ANNOTATED}
    if progress:
        print(f"[data] writing {shown(root)}: {sum(sizes.values())} samples in {len(writers)} splits "
              f"({', '.join(f'{sp} {n}' for sp, n in sizes.items() if n)}), {workers} workers", flush=True)
    order = [sp for sp, n in sizes.items() if n > 0]  # the tasks' order: a split's clock starts as the last ends
    lines = {order[0]: ProgressLines("data", order[0], sizes[order[0]], enabled=progress)} if order else {}
    pool = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(render_chunk, tasks) if pool else map(render_chunk, tasks)
        for split, out in results:
            if split in ANNOTATED:
                _write_annotations(root, split, out, names, json_entries[split])
            drop = {"annotators"} | ({"audio"} if not store_audio and split in AV_SPLITS else set())
            writers[split].append({k: v for k, v in out.items() if k not in drop})
            lines[split].update(len(np.unique(out["scene"])) if split == "swap" else len(out["ids"]))
            if lines[split].n >= sizes[split]:  # the chunks come in order: a split ends with its last chunk
                lines[split].done()
                nxt = order[order.index(split) + 1:]
                if nxt:
                    lines[nxt[0]] = ProgressLines("data", nxt[0], sizes[nxt[0]], enabled=progress)
    except BaseException:
        for w in writers.values():
            w.close(commit=False)
        raise
    finally:
        if pool:
            pool.terminate()
    for w in writers.values():
        w.close()
    for sp, entries in json_entries.items():
        if sizes[sp]:
            (root / "annotations" / sp / "vggss.json").write_text(json.dumps(entries))


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
    """Ground-truth maps (N, size, size) of a split from its annotation files (flickr or vggss style)."""
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sspl_lib.data.synthetic", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormat)
    p.add_argument("--out", default="data/synthetic/quick", help="output folder (relative: from the repo root)")
    p.add_argument("--seed", type=int, default=0, help="data seed: the same seed writes the same files")
    p.add_argument("--n-train", type=int, default=3000, help="unlabeled training clips")
    p.add_argument("--n-val", type=int, default=500, help="annotated validation clips (model selection)")
    p.add_argument("--n-test", type=int, default=500, help="clips of each test split (test_single, test_multi)")
    p.add_argument("--n-labeled", type=int, default=2000,
                   help="labeled images and sounds each (label pretraining of the small encoders)")
    p.add_argument("--frame-size", type=int, default=128, help="frame side in pixels")
    p.add_argument("--n-classes", type=int, default=None, help="drawn classes (default 8; with --assets: its folders)")
    p.add_argument("--assets", default=None, help="asset folder of real cut-outs, recordings and backgrounds")
    p.add_argument("--off-screen-frac", type=float, default=0.0,
                   help="fraction of the audio-visual clips whose sound has no visible source (off screen or silent)")
    p.add_argument("--n-swap", type=int, default=0, help="scenes of the swap split (0: not written)")
    p.add_argument("--n-extended", type=int, default=0, help="clips of the extended split (0: not written)")
    p.add_argument("--no-audio", action="store_true", help="omit waveforms from the audio-visual splits")
    p.add_argument("--workers", type=int, default=2, help="processes rendering samples")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv=None) -> None:
    p = parser()
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
