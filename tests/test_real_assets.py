"""The real-media demo asset folder, built from its real registry archives: it passes the asset checks, every file
is the package's own bytes and listed with a license, masks hold one animal, a rebuild is byte-identical, a foreign
folder is never replaced, and a missing source or bad file is skipped with a logged reason."""

import hashlib
import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from sspl_lib.data.assets import load_assets, scan_assets
from sspl_lib.data.real_assets import MANIFEST, MARKER, build_real_assets, load_manifest, read_members
from sspl_lib.paths import REPO_ROOT, resolve

CACHE = "data/.sources"  # shared with `make data/assets_real`: each archive is fetched once per machine
LICENSES = {"GPL-2.0-or-later", "CC0-1.0"}

pytestmark = pytest.mark.skipif(shutil.which("apt-get") is None,
                                reason="the Tux Paint sources are Debian packages (apt-get download)")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "assets_real"
    return build_real_assets(out, cache=CACHE)


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _readme_rows(folder) -> dict[str, list[str]]:
    text = (folder / "README.md").read_text().split("## Files", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in l.strip("|").split("|")] for l in text.splitlines() if l.startswith("| ")]
    return {r[0]: r for r in rows[1:]}  # file -> [file, package, path in package, license, sha256]


def test_folder_passes_the_asset_checks_with_real_classes(built):
    assert built.skipped == []
    assets = load_assets(built.out, frame_size=128)
    m = load_manifest()
    assert assets.names == sorted(m["classes"]) and assets.n_classes >= 4
    for c, cuts, recs in zip(assets.index.classes, assets.cutouts, assets.recordings):
        assert len(c.images) >= 2 and len(c.sounds) >= 1, c.name  # several photos per class
        assert all(max(cut.shape[:2]) >= 60 for cut in cuts), c.name
        assert all(len(r) >= 0.3 * 16_000 for r in recs), c.name  # at least 0.3 s of sound each
    assert len(assets.backgrounds) >= 10 and all(min(b.shape[:2]) >= 256 for b in assets.backgrounds)


def test_readme_lists_every_file_with_package_path_and_license(built):
    rows = _readme_rows(built.out)
    listed = set(_files(built.out)) - {"README.md", MARKER}
    assert set(rows) == listed
    for f, (_, package, path, license_, sha) in rows.items():
        assert license_ in LICENSES, f
        assert package.split(":")[0] in ("pypi", "debian") and "==" in package and path, f
        assert hashlib.sha256((built.out / f).read_bytes()).hexdigest().startswith(sha.strip("`")), f


def test_files_are_the_packages_own_bytes(built):
    m = load_manifest()
    by_source = {}
    for r in built.files:
        by_source.setdefault(r["source"], []).append(r)
    for key, rows in by_source.items():
        members = read_members(resolve(CACHE) / m["sources"][key]["archive"], {r["path"] for r in rows})
        for r in rows:
            assert (built.out / r["file"]).read_bytes() == members[r["path"]], r["file"]


def test_each_mask_holds_one_animal_neither_empty_nor_full(built):
    for c in scan_assets(built.out).classes:
        for p in c.images:
            mask = np.asarray(Image.open(p).convert("RGBA"))[..., 3] > 127
            assert 0.2 < mask.mean() < 0.9, p.name  # cut-outs are cropped close around the animal
            lab, n = ndimage.label(mask)
            sizes = np.bincount(lab.ravel())[1:]
            assert sizes.max() >= 0.98 * mask.sum(), (p.name, n)  # one object, no stray specks
            ys, xs = np.nonzero(mask)  # the mask's box fills the image (nothing but the animal around it)
            assert (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) >= 0.6 * mask.size, p.name


def test_rebuild_is_byte_identical_and_only_its_own_folder_is_replaced(built, tmp_path):
    cli = [sys.executable, "-m", "sspl_lib.data.real_assets", "--cache", CACHE, "--offline"]
    again = tmp_path / "again"
    r = subprocess.run(cli + [str(again)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "10 classes" in r.stdout and "0 skipped" in r.stdout
    assert _files(again) == _files(built.out)
    for f in _files(again):
        assert (again / f).read_bytes() == (built.out / f).read_bytes(), f
    (again / "classes" / "cow" / "stray.txt").write_text("left by hand")
    r = subprocess.run(cli + [str(again)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and not (again / "classes" / "cow" / "stray.txt").exists()  # its own: rebuilt
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "photo.jpg").write_bytes(b"not ours")
    r = subprocess.run(cli + [str(foreign)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "not written by sspl_lib.data.real_assets" in r.stderr
    assert _files(foreign) == ["photo.jpg"] and not list(tmp_path.glob(".mine.*"))


def test_missing_source_and_unusable_files_are_skipped_with_a_logged_reason(built, tmp_path, caplog):
    m = json.loads(MANIFEST.read_text())
    m["sources"]["absent"] = dict(registry="pypi", package="sspl-no-such-package", version="0.0.0",
                                  archive="sspl_no_such_package-0.0.0-py3-none-any.whl", sha256="0" * 64,
                                  license="CC0-1.0")
    m["classes"]["cow"]["recordings"].append("absent:moo.wav")
    m["backgrounds"].append("tuxpaint_templates:usr/share/tuxpaint/templates/no_scene.jpg")  # small archive: a
    # path that is not in it costs one pass over the whole archive
    m["classes"]["duck"]["recordings"].append("tuxpaint:usr/share/tuxpaint/stamps/animals/birds/nandou.ogg")
    (tmp_path / "m.json").write_text(json.dumps(m))
    with caplog.at_level(logging.WARNING, logger="sspl_lib.data.real_assets"):
        r = build_real_assets(tmp_path / "out", manifest=tmp_path / "m.json", cache=CACHE, fetch=False)
    reasons = dict(r.skipped)
    assert set(reasons) == {"source absent", "tuxpaint_templates:usr/share/tuxpaint/templates/no_scene.jpg",
                            "tuxpaint:usr/share/tuxpaint/stamps/animals/birds/nandou.ogg"}
    assert "fetching is off" in reasons["source absent"]
    assert "not in tuxpaint-data" in reasons[next(k for k in reasons if "no_scene" in k)]
    assert "silent" in reasons[next(k for k in reasons if "nandou" in k)]
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert all(k.split(" ")[-1] in logged for k in reasons)
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "## Skipped" in readme and all(f"- {k}: " in readme for k in reasons)
    assert _files(tmp_path / "out") == _files(built.out)  # the rest as before


def test_bad_manifest_names_the_file(tmp_path):
    m = json.loads(MANIFEST.read_text())
    m["backgrounds"].append("elsewhere:scene.jpg")
    (tmp_path / "m.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"m\.json: entry 'elsewhere:scene\.jpg'"):
        load_manifest(tmp_path / "m.json")
