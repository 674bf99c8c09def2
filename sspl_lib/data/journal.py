"""The durable log of a resumable preparation: a checksummed journal plus immutable segment files, how a
run opens, verifies and resumes it, and how the final file is assembled (the design: docs/data.md)."""

from __future__ import annotations

import io
import json
import os
import re
import warnings
import zlib
from pathlib import Path

import h5py
import numpy as np

from .h5 import H5Writer, fsync_path

JOURNAL_TOOL = "sspl_lib.data.prepare"
PREPARED_MARK = "sspl_prepared"  # attribute of every file prepare writes; other files are never overwritten
SEGMENT_NAME = re.compile(r"seg-\d{6}\.npz(\.tmp)?")


class JournalError(ValueError):
    """A journal or work folder that does not belong to this run; the message names the file."""


def _line(record: dict) -> bytes:
    body = json.dumps(record, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _parse(line: bytes) -> dict | None:
    """One journal line -> its record, or None when torn / corrupt."""
    if not line.endswith(b"\n") or len(line) < 11 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        rec = json.loads(body)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


class Journal:
    """Append-only, checksummed, fsync'ed journal (docs/data.md). Records are dicts with a `seq` number."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.header: dict = {}
        self.records: list[dict] = []
        self.ends: list[int] = []  # byte offset of the end of the header and of each record

    @classmethod
    def create(cls, path: str | os.PathLike, params: dict) -> "Journal":
        j = cls(path)
        j.header = {"seq": 0, "tool": JOURNAL_TOOL, "params": params}
        line = _line(j.header)
        j.ends = [len(line)]
        tmp = j.path.with_name(j.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, j.path)
        fsync_path(j.path.parent)
        return j

    @classmethod
    def read(cls, path: str | os.PathLike) -> tuple["Journal", int]:
        """The consistent prefix of a journal, the file truncated to it; returns (journal, lines dropped)."""
        j = cls(path)
        data = j.path.read_bytes()
        lines = data.splitlines(keepends=True)
        head = _parse(lines[0]) if lines else None
        if not head or head.get("tool") != JOURNAL_TOOL or head.get("seq") != 0:
            raise JournalError(f"{j.path}: not a journal of {JOURNAL_TOOL} (first line is not its header); "
                               "remove it or choose another output path")
        j.header, j.ends = head, [len(lines[0])]
        for line in lines[1:]:
            rec = _parse(line)
            if rec is None or rec.get("seq") != len(j.records) + 1:
                break
            j.records.append(rec)
            j.ends.append(j.ends[-1] + len(line))
        dropped = len(lines) - 1 - len(j.records)
        if j.ends[-1] < len(data):
            j.truncate(len(j.records))
        return j, dropped

    def truncate(self, n_records: int) -> None:
        self.records, self.ends = self.records[:n_records], self.ends[:n_records + 1]
        with open(self.path, "r+b") as f:
            f.truncate(self.ends[-1])
            f.flush()
            os.fsync(f.fileno())

    def append(self, record: dict) -> None:
        record = {**record, "seq": len(self.records) + 1}
        line = _line(record)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records.append(record)
        self.ends.append(self.ends[-1] + len(line))


# ----------------------------------------------------------------------------- segments
def segment_path(parts: Path, k: int) -> Path:
    return parts / f"seg-{k:06d}.npz"


def write_segment(parts: Path, k: int, arrays: dict[str, np.ndarray]) -> dict:
    """Write arrays (with `ids` a list of str) durably as segment k; returns {file, size, crc} for the journal."""
    buf = io.BytesIO()
    np.savez(buf, **{n: (np.array(v, dtype=str) if n == "ids" else v) for n, v in arrays.items()})
    data = buf.getvalue()
    path = segment_path(parts, k)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(parts)
    return {"file": path.name, "size": len(data), "crc": zlib.crc32(data)}


def segment_ok(parts: Path, rec: dict) -> bool:
    """Whether a confirmed segment's file is there with the size and checksum the journal recorded."""
    if rec.get("file") is None:
        return True
    path = parts / rec["file"]
    if not path.is_file() or path.stat().st_size != rec["size"]:
        return False
    return zlib.crc32(path.read_bytes()) == rec["crc"]


def read_segment(parts: Path, rec: dict) -> dict[str, np.ndarray]:
    """The arrays of a confirmed segment; its ids must be the journal's ok ids, in order."""
    path = parts / rec["file"]
    with np.load(path, allow_pickle=False) as z:
        out = {n: z[n] for n in z.files}
    want = [i for i, status, _ in rec["items"] if status == "ok"]
    if out["ids"].tolist() != want:
        raise JournalError(f"{path}: holds ids {out['ids'].tolist()[:3]}..., the journal expects {want[:3]}...")
    return out


def clear_parts(parts: Path) -> None:
    """Empty (create) the segments folder; refuse if it holds anything but segment files."""
    if parts.exists():
        foreign = [p.name for p in parts.iterdir() if not SEGMENT_NAME.fullmatch(p.name)]
        if not parts.is_dir() or foreign:
            raise JournalError(f"{parts}: exists and holds files not written by {JOURNAL_TOOL} "
                               f"({foreign[:3]}); remove it or choose another output path")
        for p in parts.iterdir():
            p.unlink()
    parts.mkdir(parents=True, exist_ok=True)


def remove_parts(parts: Path, keep: int | None = None) -> None:
    """Delete segment files numbered >= keep (and stale .tmp files); keep=None: all of them and the folder."""
    if not parts.is_dir():
        return
    for p in parts.iterdir():
        if SEGMENT_NAME.fullmatch(p.name) and (keep is None or p.name.endswith(".tmp") or int(p.name[4:10]) >= keep):
            p.unlink()
    if keep is None:
        try:
            parts.rmdir()
        except OSError:
            pass


# ----------------------------------------------------------------------------- a run's files
def check_ours(path: Path, why: str = "") -> None:
    """An existing file at `path` must be one `prepare` wrote (attribute `sspl_prepared`), else FileExistsError."""
    if not path.exists():
        return
    try:
        with h5py.File(path, "r") as f:
            ours = PREPARED_MARK in f.attrs
    except OSError:
        ours = False
    if not ours:
        raise FileExistsError(f"{path}: exists and was not written by sspl_lib.data.prepare (no '{PREPARED_MARK}' "
                              f"attribute{why}); refusing to overwrite it: remove it or choose another output path")


def open_journal(out: Path, params: dict, resume: bool) -> Journal:
    """The journal of a run writing `out`: an interrupted run's verified prefix (resume), or a new one."""
    path, parts, partial = (out.with_name(out.name + s) for s in (".journal", ".parts", ".partial"))
    if path.exists():
        j, dropped = Journal.read(path)  # JournalError if it is not ours
        if dropped:
            warnings.warn(f"{path}: {dropped} torn or inconsistent line(s) dropped; their items are prepared again")
        old = j.header.get("params", {})
        diff = [k for k in params if old.get(k) != params[k]]
        if resume and diff:
            raise ValueError(f"{path}: the interrupted run used other parameters ("
                             + ", ".join(f"{k}: {old.get(k)!r} then, {params[k]!r} now" for k in diff)
                             + "); rerun with the same ones, or pass --no-resume (resume=False) to start over")
        finished = bool(j.records) and j.records[-1]["kind"] == "done"
        if resume and finished and out.exists():
            return j  # killed while cleaning up: only that is left
        if resume and not finished:
            bad = next((n for n, r in enumerate(j.records) if not segment_ok(parts, r)), len(j.records))
            if bad < len(j.records):
                warnings.warn(f"{parts / str(j.records[bad]['file'])}: missing or not as journaled; it and the "
                              f"{len(j.records) - bad - 1} later segment(s) are prepared again")
                j.truncate(bad)
            parts.mkdir(exist_ok=True)
            remove_parts(parts, keep=len(j.records))  # files of unconfirmed segments
            return j
    else:
        check_ours(partial, ", and no journal of an interrupted run is there")
    clear_parts(parts)
    partial.unlink(missing_ok=True)
    return Journal.create(path, params)


def assemble(j: Journal, parts: Path, out: Path, attrs: dict, rows: int = 128) -> None:
    """The final file from the confirmed segments, in journal order (fresh partial file, fsync, rename)."""
    with H5Writer(out, attrs=attrs | {PREPARED_MARK: JOURNAL_TOOL}) as w:
        buf: list[dict] = []
        segs = [r for r in j.records if r["kind"] == "segment" and r.get("file")]
        for n, rec in enumerate(segs):
            buf.append(read_segment(parts, rec))
            if sum(len(b["ids"]) for b in buf) >= rows or n == len(segs) - 1:
                w.append({k: (np.concatenate([b[k] for b in buf]).tolist() if k == "ids" else
                              np.concatenate([b[k] for b in buf])) for k in buf[0]})
                buf = []
