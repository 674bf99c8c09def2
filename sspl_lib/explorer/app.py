"""Interactive explorer of a trained run (notebooks/05_explore.ipynb): heatmaps, masks and live cIoU of the
selected models on a sample, its sound or another's, PCM cycles, cIoU order, the swap split's maps per sound.

    ex = Explorer("runs/quick/sspl")      # + compare=[other run dirs], split=, data_root=
"""

from __future__ import annotations

import time
from collections import OrderedDict
from html import escape

import numpy as np
import ipywidgets as W

from ..av_metrics import box_means, follows
from ..experiments.runs import is_run
from ..metrics import ciou_batch, localization_mask, mask_ciou
from ..paths import resolve, shown
from ..profiles import as_list
from . import render as R
from .sources import CENTRE_PRIOR, CentrePrior, RunModel, SplitData, class_names, default_compare, find_splits
from .widgets import OWN_CLIP, ExplorerUI


def _unique(name: str, taken) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name} ({k})", k + 1
    return out


class Explorer:
    """The explorer widget of a run; compare: other run folders (None: `sources.default_compare`)."""

    def __init__(self, run_dir="runs/quick/sspl", *, compare=None, data_root=None, split: str | None = None,
                 centre_prior: bool = True, sounding_only: bool = True, cache_size: int = 512, device: str = "cpu"):
        primary = RunModel(run_dir, device=device)
        pairs = default_compare(run_dir) if compare is None else [(None, p) for p in as_list(compare, "compare")]
        others = [RunModel(p, name=n, device=device) for n, p in pairs]
        self.models: dict = {}
        for m in [primary, *others]:
            m.name = _unique(m.name, self.models)
            self.models[m.name] = m
        if centre_prior:
            self.models[CENTRE_PRIOR] = CentrePrior()
        self.primary = primary.name
        self.data_root = resolve(data_root or primary.cfg.data_root)
        self.splits = find_splits(self.data_root)
        if not self.splits:
            raise FileNotFoundError(f"{self.data_root}: no split files with frames, spects and audio "
                                    "(generate the benchmark first: `make reproduce` or notebooks/01_data_preparation)")
        if split is not None and split not in self.splits:
            raise ValueError(f"split {split!r} not in {self.data_root} (has {list(self.splits)})")
        self.sounding_only = sounding_only
        self._names = class_names(self.data_root)
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_size
        self.cache_hits = self.cache_misses = 0
        self._spec_cache: OrderedDict = OrderedDict()
        self._split_maps: dict = {}
        self.last_update_ms = float("nan")
        self.image_bytes = self.spectrogram_bytes = self.audio_bytes = self.swap_bytes = b""
        self.swap_follows: list[bool] = []
        self.swap_heatmaps: list[np.ndarray] = []
        self.cious: dict[str, float] = {}
        self.ui = ExplorerUI(splits=self.splits, split=split or next(iter(self.splits)),
                             cycles={n: m.cycles for n, m in self.models.items()}, primary=self.primary,
                             labels={n: f"{n} (unfinished: {m.unfinished})" for n, m in self.models.items()
                                     if m.unfinished},
                             on_split=self._load_split, on_order=self._on_order, on_view=self.refresh,
                             on_other_clip=self.pick_other_clip, on_scene_sound=self.choose_sound)
        self._load_split(self.ui.split.value)

    # ------------------------------------------------------------------ data
    def _load_split(self, name: str) -> None:
        if getattr(self, "data", None) is not None:
            self.data.close()
        self.data = SplitData(self.splits[name], sounding_only=self.sounding_only, class_names=self._names)
        n = len(self.data)
        if n == 0:
            raise ValueError(f"{self.splits[name]}: no samples with a sounding object")
        with self.ui.quiet():
            self.order = np.arange(n)
            self.ui.sample.value = 0
            self.ui.sample.max = self.ui.play.max = n - 1
            self.ui.audio_source.options = [("this sample's own clip", OWN_CLIP)] + \
                [(f"{i}: {self.data.describe(i)}", i) for i in range(n)]
            self.ui.audio_source.value = OWN_CLIP
            self.ui.show_swap(self.data.scene is not None)
            self._reorder()
        self.refresh()

    @property
    def selected(self) -> list[str]:
        return self.ui.selected

    def _on_order(self, owner) -> None:
        """Sort, protocol, threshold or models changed: reorder, keep the sample (a new sort: the first)."""
        keep = self.current_index
        with self.ui.quiet():
            self._reorder()
            if owner is self.ui.sort and self.ui.sort.value != "none":
                self.ui.sample.value = 0  # the worst (best) sample first
            else:
                self.goto(keep)  # same sample, new position
        self.refresh()

    def maps(self, model: str, frame_i: int, audio_i: int) -> np.ndarray:
        """(cycles+1, h, w) heatmaps of sample `frame_i`'s frame with sample `audio_i`'s sound (cached)."""
        key = (model, self.data.name, int(frame_i), int(audio_i))
        if key in self._cache:
            self.cache_hits += 1
            self._cache.move_to_end(key)
            return self._cache[key]
        self.cache_misses += 1
        out = self.models[model].maps(self.data.frame(frame_i), self.data.spects(audio_i))
        self._cache[key] = out
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def split_cious(self, model: str | None = None) -> np.ndarray:
        """Per-sample cIoU of the split (own sound) from batched passes, cached per model and split."""
        model = model or self.selected[0]
        key = (model, self.data.name)
        if key not in self._split_maps:
            self.ui.info.value = (f"<i>computing the heatmaps of all {len(self.data)} samples of "
                                  f"{escape(self.data.name)} with {escape(model)} for the sort (once per model and "
                                  "split)&hellip;</i>")
            self._split_maps[key] = self.models[model].final_maps(*self.data.all_frames_spects())
        hm = self._split_maps[key]
        out = []
        for s in range(0, len(hm), 64):
            gt = np.stack([self.data.gt(i) for i in range(s, min(s + 64, len(hm)))]).astype(np.float32)
            out.append(ciou_batch(hm[s:s + 64], gt, self.ui.protocol.value, self.ui.threshold.value).numpy())
        return np.concatenate(out)

    def _reorder(self) -> None:
        if self.ui.sort.value == "none":
            self.order = np.arange(len(self.data))
            return
        c = self.split_cious()
        self.order = np.argsort(c if self.ui.sort.value == "worst" else -c, kind="stable")

    def goto(self, index: int) -> None:
        self.ui.sample.value = int(np.flatnonzero(self.order == index)[0])

    def pick_other_clip(self, seed: int | None = None) -> int:
        """Swap in the clip of a random sample of another class (the counterfactual); returns its index."""
        rng = np.random.default_rng(seed)
        i = self.current_index
        pool = np.flatnonzero(self.data.labels != self.data.labels[i])
        if len(pool) == 0:
            pool = np.setdiff1d(np.arange(len(self.data)), [i])
        if len(pool):
            self.ui.audio_source.value = int(rng.choice(pool))
        return self.ui.audio_source.value

    def choose_sound(self, k: int) -> int:
        """Hear object k of the shown scene (swap split): its row's clip; returns that row's index."""
        rows = self.data.scene_rows(self.current_index)
        objects = [int(self.data.object[r]) for r in rows] if self.data.object is not None else [0]
        if k not in objects:
            raise ValueError(f"object {k} not in this scene (objects {objects} of {self.data.name})")
        row = rows[objects.index(k)]
        self.ui.audio_source.value = OWN_CLIP if row == self.current_index else row
        return row

    # ------------------------------------------------------------------ view
    @property
    def current_index(self) -> int:
        return int(self.order[self.ui.sample.value])

    @property
    def current_audio_index(self) -> int:
        return self.current_index if self.ui.audio_source.value == OWN_CLIP else int(self.ui.audio_source.value)

    def _spectrogram(self, audio_i: int) -> bytes:
        key = (self.data.name, audio_i)
        if key not in self._spec_cache:
            title = f"sound of {self.data.describe(audio_i)}"
            self._spec_cache[key] = R.spectrogram_png(self.data.spects(audio_i), title)
            if len(self._spec_cache) > 64:
                self._spec_cache.popitem(last=False)
        return self._spec_cache[key]

    def refresh(self) -> None:
        t0 = time.perf_counter()
        i, a = self.current_index, self.current_audio_index
        d, protocol, thr = self.data, self.ui.protocol.value, float(self.ui.threshold.value)
        frame = R.frame_at(d.frame(i))
        src = a if d.same_scene(i, a) else i  # swap split: the heard object's box is the gt
        gt = d.gt(src)
        box = d.boxes[src] if d.boxes is not None else None
        others = d.all_boxes[i] if d.all_boxes is not None else None
        columns, self.cious = [], {}
        for k, name in enumerate(self.selected):
            m = self.models[name]
            stack = self.maps(name, i, a)
            step = min(self.ui.cycle.value, m.cycles) if m.has_pcm else len(stack) - 1
            hm = stack[step]
            mask = localization_mask(hm, gt.shape, protocol, thr)
            self.cious[name] = c = mask_ciou(mask, gt)  # the drawn mask is the scored one
            if k == 0:
                self.current_heatmap, self.current_mask, self.current_ciou = hm, mask, c
            sub = f"cIoU {c:.3f}" + (f" · cycle {step}/{m.cycles}" if m.has_pcm else "") + \
                (" · other clip" if a != i and name != CENTRE_PRIOR else "") + (" · UNFINISHED" if m.unfinished else "")
            pcm = "" if name == CENTRE_PRIOR else (" (w/ PCM)" if m.has_pcm else " (w/o PCM)")
            columns.append({"title": name + pcm, "subtitle": sub,
                            "panels": [R.overlay_panel(frame, hm, mask, box=box, other_boxes=others,
                                                       cmap=self.ui.colormap.value, alpha=float(self.ui.opacity.value)),
                                       R.mask_panel(frame, mask, gt)]})
        self.current_gt = gt
        self.image_bytes = R.png_bytes(R.compose(columns))
        self.ui.image.value = self.image_bytes
        if d.scene is not None:
            self._swap_view(i, a, frame)
        if a != getattr(self, "_shown_audio", None) or d.name != getattr(self, "_shown_split", None):
            self.spectrogram_bytes = self._spectrogram(a)
            self.ui.spectrogram.value = self.spectrogram_bytes
            self.audio_bytes = R.wav_bytes(d.audio(a), int(d.f.attrs.get("sample_rate", 16_000)))
            self.ui.player.value = self.audio_bytes
            self._shown_audio, self._shown_split = a, d.name
        self.last_update_ms = (time.perf_counter() - t0) * 1e3
        self._update_text()

    def _swap_view(self, i: int, a: int, frame: np.ndarray) -> None:
        """The "sound of" selector and the first model's maps for each sound of sample i's scene."""
        rows, name = self.data.scene_rows(i), self.selected[0]
        with self.ui.quiet():
            self.ui.scene_sound.options = [(self.data.label_name(r), int(self.data.object[r])) for r in rows]
            self.ui.scene_sound.value = int(self.data.object[a]) if self.data.same_scene(i, a) else None
        m = self.models[name]
        self.swap_heatmaps = [self.maps(name, i, r)[min(self.ui.cycle.value, m.cycles) if m.has_pcm else -1]
                              for r in rows]
        boxes = self.data.all_boxes[i]
        means = box_means(np.stack(self.swap_heatmaps), np.repeat(boxes[None], len(rows), 0))
        self.swap_follows = [bool(v) for v in follows(means, [self.data.object[r] for r in rows])]
        cols = R.swap_columns(frame, self.swap_heatmaps, [self.data.boxes[r] for r in rows], boxes,
                              [self.data.label_name(r) for r in rows], self.swap_follows, protocol=self.ui.protocol.value,
                              threshold=float(self.ui.threshold.value), cmap=self.ui.colormap.value,
                              alpha=float(self.ui.opacity.value))
        self.swap_bytes = R.png_bytes(R.compose(cols))
        self.ui.swap_image.value = self.swap_bytes
        verdict = "follows every sound" if all(self.swap_follows) else "does not follow every sound"
        self.ui.swap_title.value = (f"<b>swap test</b> &mdash; {escape(name)} on this scene, once with each object's "
                                    f"sound: {verdict} (mean inside the heard object's box above every other box)")

    def _update_text(self) -> None:
        """The text lines around the image; every string from files (ids, class names, folder names) is escaped."""
        d, i, a = self.data, self.current_index, self.current_audio_index
        rank = {"none": "file order", "worst": "sorted by cIoU, worst first", "best": "sorted by cIoU, best first"}
        sound = "its own sound" if a == i else f"<b>the sound of {escape(d.describe(a))}</b> (counterfactual)"
        if a != i and d.same_scene(i, a):
            sound = (f"<b>the sound of its {escape(d.label_name(a))}</b> (another object of this scene; its box is the "
                     "gt)")
        self.ui.sample_id.value = (f"<b>{escape(d.ids[i])}</b> &mdash; {escape(d.label_name(i))} &middot; sample "
                                   f"{i} of {len(d)} in <code>{escape(d.name)}</code> ({rank[self.ui.sort.value]}, "
                                   f"position {self.ui.sample.value}) &middot; heard with {sound}")
        proto = "median" if self.ui.protocol.value == "median" else f"fixed, threshold {self.ui.threshold.value:.2f}"
        scores = " &middot; ".join(f"{escape(n)} <b>{c:.3f}</b>" for n, c in self.cious.items())
        self.ui.info.value = (f"cIoU ({proto}): {scores}<br><small>view updated in {self.last_update_ms:.0f} ms "
                              f"&middot; forward-pass cache {self.cache_hits} hits / {self.cache_misses} "
                              "misses</small>")
        run = self.models[self.primary]
        notes = [getattr(m, "warning", None) for m in self.models.values()]
        notes += [f"{n}: unfinished run, {m.unfinished} trained (not stopped early); it is compared with finished "
                  "runs as it is" for n, m in self.models.items() if m.unfinished]
        warn = "".join(f"<br><b style='color:#b00'>&#9888; {escape(w)}</b>" for w in notes if w)
        self.ui.header.value = (f"<h3 style='margin:2px 0'>SSPL explorer &mdash; {escape(run.run_dir.name)}</h3>"
                                f"<small>{escape(shown(run.checkpoint, name_outside=True))} &middot; data "
                                f"{escape(shown(self.data_root, name_outside=True))}{warn}</small>")

    def _repr_mimebundle_(self, **kwargs):
        return self.ui.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        self.data.close()
        self.ui.close()


def open_explorer(run_dir="runs/quick/sspl", **kwargs):
    """The explorer of `run_dir`, or (when the run does not exist yet) an HTML note saying how to make it."""
    if not is_run(run_dir):
        return W.HTML(f"<b>No trained run at <code>{escape(shown(run_dir))}</code>.</b> Train it first: "
                      "<code>make reproduce</code> (or notebooks/02_train.ipynb), then rerun this notebook.")
    return Explorer(run_dir, **kwargs)
