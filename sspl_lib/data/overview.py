"""What a benchmark folder holds: reuse-or-generate, split statistics, notebook 01's figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..paths import resolve
from .h5 import load_split
from .synth_sample import AV_SPLITS, class_table
from .synthetic import LISTEN_SPLITS, generate_benchmark

GENERATION_KEYS = ("seed", "frame_size", "n_classes", "off_screen_frac", "n_annotators", "store_audio")  # + assets


def ensure_benchmark(out_dir, *, regenerate: bool = False, **params) -> tuple[Path, bool]:
    """The benchmark at `out_dir` made with `params`: reused when its meta.json matches; (folder, reused)."""
    root = resolve(out_dir)
    meta_path = root / "meta.json"
    if meta_path.is_file() and not regenerate:
        meta = json.loads(meta_path.read_text())
        wanted = dict(train=params.get("n_train", 3000), val=params.get("n_val", 500),
                      test_single=params.get("n_test", 500), test_multi=params.get("n_test", 500),
                      labeled_images=params.get("n_labeled", 2000), labeled_sounds=params.get("n_labeled", 2000))
        wanted |= {sp: params[f"n_{sp}"] for sp in LISTEN_SPLITS if params.get(f"n_{sp}", 0) > 0}  # only if asked
        settings = dict(params)
        if settings.get("n_classes") is None:  # the default: 8 drawn classes, or the asset folder's classes
            settings.pop("n_classes", None)
            settings |= {} if params.get("assets") is not None else {"n_classes": 8}
        same = meta.get("sizes") == wanted and all(meta.get(k) == settings[k] for k in GENERATION_KEYS if k in settings)
        same = same and _same_assets(meta, params.get("assets"))
        if same and all((root / f"{sp}.h5").is_file() for sp, n in wanted.items() if n):
            return root, True
    return generate_benchmark(root, **params), False


def _same_assets(meta: dict, assets) -> bool:
    if assets is None:
        return "assets" not in meta
    from .assets import scan_assets

    fingerprint = scan_assets(resolve(assets)).fingerprint()
    return meta.get("assets") == str(assets) and meta.get("assets_fingerprint") == fingerprint


def class_list(root) -> list[dict]:
    meta = resolve(root) / "meta.json"
    if meta.is_file():
        return json.loads(meta.read_text())["classes"]
    attrs = load_split(sorted(resolve(root).glob("*.h5"))[0], keys=[])["attrs"]
    return class_table(int(attrs.get("n_classes", 8)))


def split_stats(root) -> list[dict]:
    """One row per audio-visual split: samples, objects per frame, sounding-box area and centre offset."""
    rows = []
    for split in AV_SPLITS:
        path = resolve(root) / f"{split}.h5"
        if not path.is_file():
            continue
        d = load_split(path, keys=["boxes", "all_labels", "label"])
        b = d["boxes"].astype(np.float64)  # (N, 4) normalized x0 y0 x1 y1
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        centre = np.hypot((b[:, 0] + b[:, 2]) / 2 - 0.5, (b[:, 1] + b[:, 3]) / 2 - 0.5)
        n_obj = (d["all_labels"] >= 0).sum(axis=1)
        rows.append(dict(split=split, n=len(b), objects_mean=round(float(n_obj.mean()), 2),
                         objects_max=int(n_obj.max()), box_area_median=round(float(np.nanmedian(area)), 3),
                         box_area_min=round(float(np.nanmin(area)), 3), box_area_max=round(float(np.nanmax(area)), 3),
                         centre_offset_median=round(float(np.nanmedian(centre)), 3),
                         silent=int((d["label"] < 0).sum())))
    return rows


def sample_grid(root, split: str = "test_multi", n: int = 12, ncols: int = 6):
    """Frames of a split with the sounding object's box (red) and the other objects' boxes (white)."""
    import matplotlib.pyplot as plt

    d = load_split(resolve(root) / f"{split}.h5", keys=["frames", "boxes", "all_boxes", "label"])
    names = [c["name"] for c in class_list(root)]
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.4 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= min(n, len(d["frames"])):
            continue
        ax.imshow(d["frames"][i])
        _draw_boxes(ax, d["all_boxes"][i], d["boxes"][i], d["frames"].shape[1])
        label = int(d["label"][i])
        ax.set_title(names[label] if label >= 0 else "silent", fontsize=8)
    fig.suptitle(f"{split}: red = the sounding object", fontsize=10)
    fig.tight_layout()
    return fig


def sound_split(root) -> str:
    """The split to hear the classes from: the labeled sounds, or the train split where none were made."""
    return "labeled_sounds" if (resolve(root) / "labeled_sounds.h5").is_file() else "train"


def class_spectrograms(root, per_class: int = 1):
    """The log-mel (3 s = 3 x 0.96 s examples) of the first clip(s) of each class (labeled sounds or train)."""
    import matplotlib.pyplot as plt

    d = load_split(resolve(root) / f"{sound_split(root)}.h5", keys=["spects", "label"])
    table = class_list(root)
    fig, axes = plt.subplots(per_class, len(table), figsize=(1.6 * len(table), 2.6 * per_class), squeeze=False)
    for c in table:
        idx = np.flatnonzero(d["label"] == c["index"])[:per_class]
        for r, i in enumerate(idx):
            ax = axes[r, c["index"]]
            ax.imshow(d["spects"][i].reshape(-1, 64).T, origin="lower", aspect="auto", cmap="magma")  # (64 mels, 288 frames)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{c['index']}: {c.get('sound', c['name'])}", fontsize=7)
    fig.suptitle("one clip per class (x: 2.88 s, y: 64 mel bands)", fontsize=10)
    fig.tight_layout()
    return fig


def _draw_boxes(ax, boxes: np.ndarray, sounding: np.ndarray, size: int) -> None:
    from matplotlib.patches import Rectangle

    for box in boxes:
        if np.isfinite(box).all():
            main = np.allclose(box, sounding)
            x0, y0, x1, y1 = box * size
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2 if main else 1,
                                   ec="red" if main else "white", ls="-" if main else "--"))


def class_scenes(root, split: str = "test_multi", ncols: int = 4):
    """One scene per class, boxes drawn (red = sounding), titled with the class name."""
    import matplotlib.pyplot as plt

    d = load_split(resolve(root) / f"{split}.h5", keys=["frames", "boxes", "all_boxes", "label"])
    table = class_list(root)
    ncols = min(ncols, len(table))
    nrows = -(-len(table) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for c, ax in zip(table, axes.flat):
        hits = np.flatnonzero(d["label"] == c["index"])
        ax.set_title(f"{c['index']}: {c['name']}", fontsize=8)
        if len(hits):
            i = int(hits[0])
            ax.imshow(d["frames"][i])
            _draw_boxes(ax, d["all_boxes"][i], d["boxes"][i], d["frames"].shape[1])
    fig.suptitle(f"{split}: one scene per class (red = the sounding object)", fontsize=10)
    fig.tight_layout()
    return fig


def class_players(root, split: str | None = None):
    """An HTML table (IPython.display.HTML) with an audio player of the first clip of each class in `split`
    (default: the labeled sounds, or train where none were made)."""
    from IPython.display import HTML, Audio

    d = load_split(resolve(root) / f"{split or sound_split(root)}.h5", keys=["audio", "label"])
    rows = []
    for c in class_list(root):
        hits = np.flatnonzero(d["label"] == c["index"])
        player = Audio(d["audio"][int(hits[0])], rate=int(d["attrs"].get("sample_rate", 16000)))._repr_html_() \
            if len(hits) else "(no clip)"
        rows.append(f"<tr><td>{c['index']}</td><td>{c['name']}</td><td>{player}</td></tr>")
    return HTML("<table><tr><th>class</th><th>name</th><th>one clip</th></tr>" + "".join(rows) + "</table>")


def text_table(rows: list[dict]) -> str:
    keys = list(rows[0])
    cells = [keys] + [[str(r[k]) for k in keys] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    return "\n".join("  ".join(c[i].rjust(widths[i]) for i in range(len(keys))) for c in cells)
