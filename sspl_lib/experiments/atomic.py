"""Files written so that nothing is lost: a uniquely named temporary file, fsync, `os.replace`."""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import signal
from pathlib import Path

import torch


class DiskFullError(OSError):
    """The disk filled up while a file was written; the previous version of the file is kept."""


def crash_point(name: str) -> None:
    """Fault injection: `SSPL_CRASH_AT=<write|saved>:<file>@k` kills this process at the k-th pass."""
    want = os.environ.get("SSPL_CRASH_AT")
    if not want or want.partition("@")[0] != name:
        return
    _HITS[name] = _HITS.get(name, 0) + 1
    if _HITS[name] == int(want.partition("@")[2] or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_HITS: dict[str, int] = {}


def _disk_full(err: BaseException, folder: Path) -> bool:
    """ENOSPC (or a quota) anywhere in the chain, or torch's zip writer failing on a disk with no space left."""
    e = err
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return isinstance(err, RuntimeError) and "inline_container" in str(err) and shutil.disk_usage(folder).free == 0


def atomic_write(path: Path, write) -> Path:
    """`write(f)` into a temporary file beside `path`, fsync, os.replace; removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        crash_point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException as e:
        full = _disk_full(e, path.parent)
        tmp.unlink(missing_ok=True)
        if full:
            raise DiskFullError(f"disk full while writing {path} (its previous version, if any, is kept); free some "
                                "space and run again (a training resumes from its last.pt)") from e
        raise
    crash_point(f"saved:{path.name}")
    return path


def atomic_save(obj, path: str | os.PathLike) -> Path:
    return atomic_write(Path(path), lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    return atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


def write_json(obj, path: str | os.PathLike) -> Path:
    return atomic_write_text(json.dumps(obj, indent=1) + "\n", path)
