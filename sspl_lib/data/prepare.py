"""Raw downloads -> one packed HDF5 file: parallel, resumable after any kill, each skipped item reported
(inputs, policy and crash safety: docs/data.md). CLI: `python -m sspl_lib.data.prepare --src ... --out ...`."""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from dataclasses import dataclass, field, replace
from importlib import import_module
from pathlib import Path

import numpy as np

from ..cli import HelpFormat
from ..paths import shown
from ..progress_lines import ProgressLines
from .gt import AnnotationError, fill_boxes, load_vggss_annotations, parse_flickr_xml, vggss_box_pixels
from .isolated_pool import isolated_map
from .journal import assemble, check_ours, open_journal, remove_parts, write_segment
from .media import (AUDIO_EXT, IMAGE_EXT, VIDEO_EXT, MediaError, read_audio, read_image, resize_square,
                    video_middle_frame)


@dataclass(frozen=True, kw_only=True)
class Item:
    id: str
    video: str | None = None
    frame: str | None = None
    audio: str | None = None
    problem: str | None = None  # set when the item cannot be prepared (e.g. no audio file)


@dataclass(kw_only=True)
class PrepareReport:
    out: Path
    n_ok: int = 0
    skipped: list = field(default_factory=list)  # (id, reason)
    flagged: list = field(default_factory=list)  # (id, warning) of kept items
    interrupted: bool = False
    seconds: float = 0.0


def find_items(src: str | Path) -> list[Item]:
    """Items of a raw folder, sorted by id (layouts: docs/data.md)."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: source folder not found")
    base = src / "Data" if (src / "Data" / "frames").is_dir() else src
    items: dict[str, Item] = {}
    if (base / "frames").is_dir():
        frames = {}
        for p in sorted((base / "frames").iterdir()):
            if p.is_dir():
                jpgs = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXT)
                frames[p.name] = str(jpgs[len(jpgs) // 2]) if jpgs else None
            elif p.suffix.lower() in IMAGE_EXT:
                frames[p.stem] = str(p)
        audio = {p.stem: str(p) for p in sorted((base / "audio").glob("*")) if p.suffix.lower() in AUDIO_EXT} \
            if (base / "audio").is_dir() else {}
        for i in sorted(set(frames) | set(audio)):
            prob = ("no frame image for this id" if frames.get(i) is None else
                    "no audio file for this id" if i not in audio else None)
            items[i] = Item(id=i, frame=frames.get(i), audio=audio.get(i), problem=prob)
    for p in sorted(src.rglob("*")):
        if p.suffix.lower() in VIDEO_EXT and p.is_file():
            items[p.stem] = Item(id=p.stem, video=str(p)) if p.stem not in items else \
                Item(id=p.stem, video=str(p), problem=f"duplicate id (also {items[p.stem].video or items[p.stem].frame})")
    return [items[k] if _utf8(k) else replace(items[k], problem="its file name is not valid UTF-8 (rename it)")
            for k in sorted(items)]


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # undecodable bytes of a file name (surrogate escapes)
        return False


def _annotation_boxes(ann, item_id: str, gt_size: int, flags: list) -> np.ndarray:
    """gt map (gt_size, gt_size) of one id; out-of-image boxes are clipped with a flag."""
    if isinstance(ann, dict):  # VGG-SS style: normalized boxes
        if item_id not in ann:
            raise AnnotationError(f"no box for id {item_id} in the VGG-SS annotations")
        b = np.asarray(ann[item_id], np.float64).reshape(-1, 4)
        if ((b < 0) | (b > 1)).any():
            flags.append("box outside the image, clipped to [0, 1]")
        return (fill_boxes(vggss_box_pixels(b.clip(0, 1), gt_size), gt_size).sum(0) > 0).astype(np.float32)
    xml = Path(ann) / f"{item_id}.xml"
    if not xml.exists():
        raise AnnotationError(f"{xml}: no annotation for id {item_id}")
    b = parse_flickr_xml(xml)
    if ((b < 0) | (b > 256)).any():
        flags.append("box outside the 256-px image, clipped")
    px = np.trunc(gt_size * b.clip(0, 256) / 256).astype(np.int64)
    return np.minimum(fill_boxes(px, gt_size).sum(0) / 2, 1.0).astype(np.float32)


def process_item(args) -> tuple[str, dict | None, str]:
    """One item -> (id, arrays or None, reason / flags). Runs in the worker processes."""
    item, frame_size, gt_size, silent = args
    ann = _ANNOTATIONS.get("ann")
    import torch

    from ..audio import prepare_clip, vggish_examples

    torch.set_num_threads(1)
    flags: list[str] = []
    try:
        if item.problem:
            return item.id, None, item.problem
        if item.video:
            frame = video_middle_frame(item.video)
            wave, sr = read_audio(item.video)
        else:
            frame = read_image(item.frame)
            wave, sr = read_audio(item.audio)
        src = item.video or item.audio
        if wave.size == 0:
            return item.id, None, f"{src}: empty audio"
        if not np.isfinite(wave).all():
            return item.id, None, f"{src}: audio holds NaN/inf"
        if np.abs(wave).max() < 1e-4:
            if silent == "skip":
                return item.id, None, f"{src}: silent audio"
            flags.append("silent audio (kept; its clip is constant -1)")
        clip = prepare_clip(wave, sr)
        out = {"frames": resize_square(frame, frame_size), "audio": clip,
               "spects": vggish_examples(clip)[:3].numpy()}
        if ann is not None:
            out["gt"] = _annotation_boxes(ann, item.id, gt_size, flags)
        return item.id, out, "; ".join(flags)
    except (MediaError, AnnotationError) as e:
        return item.id, None, str(e)
    except Exception as e:  # anything unexpected is a skip with its reason, never a crash of the run
        return item.id, None, f"{item.video or item.frame or item.audio}: {type(e).__name__}: {e}"


_ANNOTATIONS: dict = {}  # set before the (forked) workers start, read by them


def _died(args, how: str) -> tuple[str, None, str]:
    item = args[0]
    return item.id, None, f"{item.video or item.frame or item.audio}: its worker process failed ({how})"


def _write_csv(path: Path, rows) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        csv.writer(f).writerows(rows)
    os.replace(tmp, path)


def prepare_folder(src, out, *, frame_size: int = 256, annotations=None, gt_size: int = 224, silent: str = "keep",
                   workers: int = 2, chunk: int = 16, resume: bool = True, stop_after: int | None = None,
                   source: str = "custom", progress: bool = True, ids=None) -> PrepareReport:
    """Prepare the items of `src` (or of `ids`) into `out`; `stop_after`: stop as if interrupted."""
    import_module("..audio", __package__)  # imported once here (torch), inherited by the forked workers

    t0, out = time.perf_counter(), Path(out)
    parts, report = out.with_name(out.name + ".parts"), PrepareReport(out=out)
    items = _items(src, ids)
    ann = _annotation_source(annotations)
    params = dict(src=str(Path(src).resolve()), frame_size=frame_size, gt_size=gt_size, silent=silent,
                  annotations=None if annotations is None else str(Path(annotations).resolve()), source=source,
                  ids=None if ids is None else sorted(str(i) for i in ids))
    out.parent.mkdir(parents=True, exist_ok=True)
    check_ours(out)
    j = open_journal(out, params, resume)
    seen = {i for r in j.records if r["kind"] == "segment" for i, _, _ in r["items"]}
    finished = bool(j.records) and j.records[-1]["kind"] == "done"
    todo = [] if finished else [it for it in items if it.id not in seen]
    if stop_after is not None:
        todo, report.interrupted = todo[:stop_after], stop_after < len(todo)
    _ANNOTATIONS["ann"] = ann
    bar = ProgressLines("prepare", shown(out), len(items), unit="items", initial=len(seen), enabled=progress)
    _prepare_items(j, parts, [(it, frame_size, gt_size, silent) for it in todo], workers=workers, chunk=chunk, bar=bar)
    bar.done(note="interrupted (rerun to resume)" if report.interrupted else "")
    done = [tuple(x) for r in j.records if r["kind"] == "segment" for x in r["items"]]
    report.skipped = [(i, r) for i, s, r in done if s == "skipped"]
    report.flagged = [(i, r) for i, s, r in done if s == "ok" and r]
    report.n_ok = sum(s == "ok" for _, s, _ in done)
    if not report.interrupted:
        if not finished:
            _write_csv(out.with_name(out.stem + ".skipped.csv"), [("id", "reason"), *report.skipped])
            _write_csv(out.with_name(out.stem + ".report.csv"), [("id", "status", "detail"), *done])
            assemble(j, parts, out, dict(frame_size=frame_size, sample_rate=16000, source=source, src=str(src)))
            j.append({"kind": "done"})
        remove_parts(parts)
        j.path.unlink()
    report.seconds = time.perf_counter() - t0
    return report


def _items(src, ids) -> list[Item]:
    items = find_items(src)
    if ids is None:
        return items
    have = {it.id: it for it in items}
    wanted = [have.get(i) or Item(id=i, problem=f"{src}: no frame / audio / video for this id")
              for i in dict.fromkeys(str(i) for i in ids)]
    return sorted(wanted, key=lambda it: it.id)


def _annotation_source(annotations):
    if annotations is not None and Path(annotations).suffix.lower() == ".json":
        return load_vggss_annotations(annotations)
    if annotations is not None and not Path(annotations).is_dir():
        raise FileNotFoundError(f"{annotations}: annotations must be a folder of <id>.xml or a VGG-SS .json file")
    return annotations


def _prepare_items(j, parts: Path, args: list, *, workers: int, chunk: int, bar) -> None:
    seg = sum(r["kind"] == "segment" for r in j.records)
    batch, lines = [], []
    for k, (i, arrays, note) in enumerate(isolated_map(process_item, args, workers=workers, on_death=_died)):
        lines.append((i, "ok" if arrays is not None else "skipped", note))
        if arrays is not None:
            batch.append((i, arrays))
        if len(lines) >= chunk or k == len(args) - 1:
            rec = {"kind": "segment", "seg": seg, "items": lines, "file": None}
            if batch:
                rec |= write_segment(parts, seg, {"ids": [b[0] for b in batch]} |
                                     {key: np.stack([b[1][key] for b in batch]) for key in batch[0][1]})
            j.append(rec)  # after the segment is on disk
            bar.update(len(lines))
            batch, lines, seg = [], [], seg + 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sspl_lib.data.prepare",
                                description="Prepare raw videos / frames+audio into a packed sspl HDF5 file.",
                                formatter_class=HelpFormat)
    p.add_argument("--src", required=True, help="folder of videos, or with frames/ and audio/")
    p.add_argument("--out", required=True, help="output .h5 file")
    p.add_argument("--annotations", help="folder of Flickr <id>.xml or a VGG-SS .json (adds gt maps)")
    p.add_argument("--frame-size", type=int, default=256, help="stored frame side in pixels")
    p.add_argument("--workers", type=int, default=2, help="processes decoding items")
    p.add_argument("--chunk", type=int, default=16, help="items per committed segment + journal line")
    p.add_argument("--silent", choices=("keep", "skip"), default="keep",
                   help="items with silent audio: keep them (flagged) or skip them")
    p.add_argument("--no-resume", action="store_true", help="discard a previous interrupted run, start over")
    p.add_argument("--stop-after", type=int, help="stop after N items (resume later)")
    p.add_argument("--source", default="custom", help="value of the 'source' attribute (flickr, vggsound, ...)")
    return p


def main(argv=None) -> None:
    p = parser()
    a = p.parse_args(argv)
    sys.stdout.reconfigure(errors="backslashreplace")  # ids from undecodable file names
    try:
        r = prepare_folder(a.src, a.out, frame_size=a.frame_size, annotations=a.annotations, silent=a.silent,
                           workers=a.workers, chunk=a.chunk, resume=not a.no_resume, stop_after=a.stop_after,
                           source=a.source)
    except (FileExistsError, FileNotFoundError, ValueError) as e:  # a foreign file, other parameters, no src
        p.exit(2, f"error: {e}\n")
    state = "interrupted (rerun to resume)" if r.interrupted else "done"
    print(f"{r.out}: {state}; {r.n_ok} items written, {len(r.skipped)} skipped, {len(r.flagged)} flagged, "
          f"{r.seconds:.1f} s")
    for i, reason in r.skipped:
        print(f"  skipped {i}: {reason}")


if __name__ == "__main__":
    main()
