"""Raw downloads -> one packed sspl HDF5 file (parallel, resumable, with a report of every skip).

Inputs (`src`): a folder of videos (.mp4/.mkv/.webm/..., id = file stem, searched recursively), or a folder
with `frames/` (`<id>.jpg` or `<id>/*.jpg`, the middle one is used) and `audio/` (`<id>.wav|.mp3|...`);
`src/Data/` (the Flickr 5k_labeled layout) is looked into as well. Per item: middle frame resized to
frame_size x frame_size RGB, the official audio clip (`audio.prepare_clip`: centred 3 s, 16 kHz mono,
min-max to [-1, 1]) and its VGGish log-mel (3, 96, 64). Optional `annotations` (a folder of Flickr XML
files or a VGG-SS JSON) add `gt` maps; ids without one are skipped (logged).

Policy: undecodable or empty inputs are skipped and listed in `<out>.skipped.csv` with the reason;
silent audio (peak < 1e-4) is kept and flagged in `<out>.report.csv` (its clip is constant -1) unless
`silent="skip"`; boxes outside the image are clipped, with a warning in the report.
Resume: `<out>.partial` + `<out>.journal.csv` (one line per processed id, in order); a rerun continues
where it stopped and yields the same final file. CLI: `python -m sspl_lib.data.prepare --src ... --out ...`.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .gt import AnnotationError, fill_boxes, load_vggss_annotations, parse_flickr_xml, vggss_box_pixels
from .h5 import DataFileError, H5Writer
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
    """Items of a raw folder, sorted by id (see module doc for the layouts)."""
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
    return [items[k] for k in sorted(items)]


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


_ANNOTATIONS: dict = {}  # set before the (forked) pool starts, read by the workers


def _read_journal(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [tuple(r) for r in csv.reader(f) if len(r) == 3]


def prepare_folder(src, out, *, frame_size: int = 256, annotations=None, gt_size: int = 224, silent: str = "keep",
                   workers: int = 2, chunk: int = 16, resume: bool = True, stop_after: int | None = None,
                   source: str = "custom", progress: bool = True) -> PrepareReport:
    """Prepare every item of `src` into the packed file `out` (see module doc). `stop_after`: stop (as if
    interrupted) after that many items of this call, leaving the partial file and journal for a resume."""
    from tqdm.auto import tqdm

    t0, out = time.perf_counter(), Path(out)
    journal = out.with_name(out.name + ".journal.csv")
    report = PrepareReport(out=out)
    items = find_items(src)
    ann = annotations
    if ann is not None and Path(ann).suffix.lower() == ".json":
        ann = load_vggss_annotations(ann)
    elif ann is not None and not Path(ann).is_dir():
        raise FileNotFoundError(f"{ann}: annotations must be a folder of <id>.xml or a VGG-SS .json file")
    attrs = dict(frame_size=frame_size, sample_rate=16000, source=source, src=str(src))
    done = _read_journal(journal) if resume else []
    try:
        writer = H5Writer(out, attrs=attrs, resume=bool(done))
    except DataFileError as e:  # killed while writing: the partial file is unusable, start over
        warnings.warn(f"{e}; starting {out} from scratch")
        done, writer = [], H5Writer(out, attrs=attrs)
    n_ok = sum(s == "ok" for _, s, _ in done)
    if len(writer) < n_ok:  # journal ahead of the file (should not happen): start over
        writer.close(commit=False)
        done, n_ok, writer = [], 0, H5Writer(out, attrs=attrs)
    writer.truncate(n_ok)  # rows written after the last journal line are redone
    if not done:
        journal.write_text("")
    seen = {i for i, _, _ in done}
    todo = [it for it in items if it.id not in seen]
    if stop_after is not None:
        todo, report.interrupted = todo[:stop_after], stop_after < len(todo)
    _ANNOTATIONS["ann"] = ann
    pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
    bar = tqdm(total=len(items), initial=len(done), desc="prepare", unit="item", disable=not progress)
    try:
        args = [(it, frame_size, gt_size, silent) for it in todo]
        results = pool.imap(process_item, args) if pool else map(process_item, args)
        batch, lines = [], []
        for k, (i, arrays, note) in enumerate(results):
            lines.append((i, "ok" if arrays is not None else "skipped", note))
            if arrays is not None:
                batch.append((i, arrays))
            if len(lines) >= chunk or k == len(todo) - 1:
                if batch:
                    writer.append({"ids": [b[0] for b in batch]} |
                                  {key: np.stack([b[1][key] for b in batch]) for key in batch[0][1]})
                with open(journal, "a", newline="") as f:  # after the rows are flushed
                    csv.writer(f).writerows(lines)
                bar.update(len(lines))
                batch, lines = [], []
    finally:
        bar.close()
        if pool:
            pool.terminate()
    done = _read_journal(journal)
    report.skipped = [(i, r) for i, s, r in done if s == "skipped"]
    report.flagged = [(i, r) for i, s, r in done if s == "ok" and r]
    report.n_ok = sum(s == "ok" for _, s, _ in done)
    if report.interrupted:
        writer.close(commit=False)
    else:
        writer.close(commit=True)
        with open(out.with_name(out.stem + ".skipped.csv"), "w", newline="") as f:
            csv.writer(f).writerows([("id", "reason"), *report.skipped])
        with open(out.with_name(out.stem + ".report.csv"), "w", newline="") as f:
            csv.writer(f).writerows([("id", "status", "detail"), *done])
        journal.unlink()
    report.seconds = time.perf_counter() - t0
    return report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Prepare raw videos / frames+audio into a packed sspl HDF5 file.")
    p.add_argument("--src", required=True, help="folder of videos, or with frames/ and audio/")
    p.add_argument("--out", required=True, help="output .h5 file")
    p.add_argument("--annotations", help="folder of Flickr <id>.xml or a VGG-SS .json (adds gt maps)")
    p.add_argument("--frame-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=16, help="items per write + journal update")
    p.add_argument("--silent", choices=("keep", "skip"), default="keep")
    p.add_argument("--no-resume", action="store_true", help="ignore a previous partial run")
    p.add_argument("--stop-after", type=int, help="stop after N items (resume later)")
    p.add_argument("--source", default="custom", help="value of the 'source' attribute (flickr, vggsound, ...)")
    a = p.parse_args(argv)
    r = prepare_folder(a.src, a.out, frame_size=a.frame_size, annotations=a.annotations, silent=a.silent,
                       workers=a.workers, chunk=a.chunk, resume=not a.no_resume, stop_after=a.stop_after,
                       source=a.source)
    state = "interrupted (rerun to resume)" if r.interrupted else "done"
    print(f"{r.out}: {state}; {r.n_ok} items written, {len(r.skipped)} skipped, {len(r.flagged)} flagged, "
          f"{r.seconds:.1f} s")
    for i, reason in r.skipped:
        print(f"  skipped {i}: {reason}")


if __name__ == "__main__":
    main()
