"""An asset folder of real media for the composited benchmark: layout (data/README.md), validation,
decoding cached per process; every problem raises `AssetError` naming the file."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SR = 16_000
IMAGE_SUFFIXES = (".png", ".webp")
SOUND_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
BACKGROUND_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = "_mask.png"
MIN_CLASSES = 3  # test_multi needs 2-3 different classes
SILENCE_PEAK = 1e-4  # a recording whose |peak| stays below this is silent


class AssetError(ValueError):
    """A missing, unreadable or unusable asset; the message names the file and what was expected."""


@dataclass(frozen=True, kw_only=True)
class AssetClass:
    name: str
    images: tuple[Path, ...]
    sounds: tuple[Path, ...]


@dataclass(frozen=True, kw_only=True)
class AssetIndex:
    root: Path
    classes: tuple[AssetClass, ...]
    backgrounds: tuple[Path, ...]
    noise: tuple[Path, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def files(self) -> list[Path]:
        every = [p for c in self.classes for p in (*c.images, *c.sounds)] + [*self.backgrounds, *self.noise]
        masks = [_mask_path(p) for c in self.classes for p in c.images if _mask_path(p).is_file()]
        return sorted(every + masks)

    def fingerprint(self) -> str:
        """sha256 over the relative paths and byte sizes of every file (changes when assets are added or replaced)."""
        h = hashlib.sha256()
        for p in self.files():
            h.update(f"{p.relative_to(self.root).as_posix()}\0{p.stat().st_size}\n".encode())
        return h.hexdigest()[:16]


def _mask_path(image: Path) -> Path:
    return image.with_name(image.stem + MASK_SUFFIX)


def _listing(folder: Path, suffixes) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes
                        and not p.name.startswith(".")))


def scan_assets(root: str | os.PathLike) -> AssetIndex:
    """List and check an asset folder's layout: >= 3 classes, each with an image and a sound, >= 1 background."""
    root = Path(root)
    classes_dir, bg_dir, noise_dir = root / "classes", root / "backgrounds", root / "noise"
    if not classes_dir.is_dir():
        raise AssetError(f"{classes_dir}: no classes folder (expected classes/<name>/ with cut-outs and recordings)")
    classes = []
    for d in sorted(p for p in classes_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = tuple(p for p in _listing(d, IMAGE_SUFFIXES) if not p.name.lower().endswith(MASK_SUFFIX))
        sounds = _listing(d, SOUND_SUFFIXES)
        if not images:
            raise AssetError(f"{d}: class {d.name!r} has no image (expected *.png or *.webp cut-outs)")
        if not sounds:
            raise AssetError(f"{d}: class {d.name!r} has no sound (expected *.wav, *.flac, *.ogg or *.mp3)")
        classes.append(AssetClass(name=d.name, images=images, sounds=sounds))
    if len(classes) < MIN_CLASSES:
        raise AssetError(f"{classes_dir}: {len(classes)} class folder(s), expected at least {MIN_CLASSES} "
                         "(test_multi scenes hold 2-3 different classes)")
    backgrounds = _listing(bg_dir, BACKGROUND_SUFFIXES) if bg_dir.is_dir() else ()
    if not backgrounds:
        raise AssetError(f"{bg_dir}: no background images (expected *.jpg or *.png photos)")
    noise = _listing(noise_dir, SOUND_SUFFIXES) if noise_dir.is_dir() else ()
    return AssetIndex(root=root, classes=tuple(classes), backgrounds=backgrounds, noise=noise)


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
        im.load()
        return im
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise AssetError(f"{path}: unreadable image ({type(e).__name__}: {e})") from e


def _shrink(im, max_side: int):
    from PIL import Image

    scale = max_side / max(im.size)
    if scale >= 1:
        return im
    return im.resize((max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))), Image.LANCZOS)


def read_cutout(path: str | os.PathLike, *, max_side: int | None = None) -> np.ndarray:
    """A cut-out as uint8 RGBA (h, w, 4) cropped to its mask's extent (alpha > 0), at most `max_side` px."""
    path = Path(path)
    im = _open_image(path)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
    elif _mask_path(path).is_file():
        mask = _open_image(_mask_path(path)).convert("L")
        if mask.size != im.size:
            raise AssetError(f"{_mask_path(path)}: mask is {mask.size[0]}x{mask.size[1]} px but {path.name} is "
                             f"{im.size[0]}x{im.size[1]} (expected the same size)")
        rgba = im.convert("RGB")
        rgba.putalpha(mask)
    else:
        raise AssetError(f"{path}: image has no alpha channel and no {_mask_path(path).name} beside it "
                         "(expected an RGBA cut-out or an RGB image with a same-named *_mask.png)")
    a = np.asarray(rgba)[..., 3]
    ys, xs = np.nonzero(a > 0)
    if len(ys) == 0:
        raise AssetError(f"{path}: the mask is empty (alpha 0 everywhere; expected the object opaque)")
    if a.min() == 255:
        raise AssetError(f"{path}: the mask covers the whole image (alpha 255 everywhere; expected a cut-out "
                         "with a transparent surround)")
    rgba = rgba.crop((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    return np.array(_shrink(rgba, max_side) if max_side else rgba, np.uint8)


def read_background(path: str | os.PathLike, *, max_shorter: int | None = None) -> np.ndarray:
    """A background photo as uint8 RGB (H, W, 3), shrunk so its shorter side is at most `max_shorter` px."""
    path = Path(path)
    im = _open_image(path).convert("RGB")
    if min(im.size) < 8:
        raise AssetError(f"{path}: background of {im.size[0]}x{im.size[1]} px (expected at least 8 px a side)")
    if max_shorter and min(im.size) > max_shorter:
        im = _shrink(im, round(max(im.size) * max_shorter / min(im.size)))
    return np.array(im, np.uint8)


def read_recording(path: str | os.PathLike) -> np.ndarray:
    """A recording as mono float32 at 16 kHz (librosa's soxr resampler); unreadable, empty or silent -> AssetError."""
    import librosa
    import soundfile as sf

    path = Path(path)
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
        x = x.mean(axis=1)
    except Exception as e:  # libsndfile raises LibsndfileError / RuntimeError / TypeError
        if path.suffix.lower() != ".mp3":
            raise AssetError(f"{path}: unreadable recording ({type(e).__name__}: {e})") from e
        from .media import MediaError, decode_av_audio

        try:  # an mp3 libsndfile cannot parse: PyAV decodes it straight to 16 kHz mono
            x, sr = decode_av_audio(path, SR)
        except MediaError as e2:
            raise AssetError(f"{path}: unreadable recording ({e2})") from e2
    if x.size == 0:
        raise AssetError(f"{path}: recording holds no samples")
    if not np.isfinite(x).all() or np.abs(x).max() < SILENCE_PEAK:
        raise AssetError(f"{path}: recording is silent or invalid (peak {np.abs(x).max():.2g}; expected a sound)")
    if sr != SR:
        x = librosa.resample(x, orig_sr=sr, target_sr=SR)
    return np.ascontiguousarray(x, np.float32)


@dataclass(frozen=True, kw_only=True)
class LoadedAssets:
    """Every asset decoded once: per class lists of cut-outs (RGBA) and 16 kHz recordings; backgrounds; noise."""

    index: AssetIndex
    cutouts: tuple[tuple[np.ndarray, ...], ...]
    recordings: tuple[tuple[np.ndarray, ...], ...]
    rms: tuple[tuple[float, ...], ...]  # whole-recording RMS of each recording
    backgrounds: tuple[np.ndarray, ...]
    noise: tuple[np.ndarray, ...]
    frame_size: int

    @property
    def n_classes(self) -> int:
        return len(self.cutouts)

    @property
    def names(self) -> list[str]:
        return self.index.names


_CACHE: dict[tuple, LoadedAssets] = {}


def load_assets(root: str | os.PathLike, *, frame_size: int) -> LoadedAssets:
    """Scan, validate and decode an asset folder (cached per process: forked workers inherit it)."""
    index = scan_assets(Path(root).resolve())
    key = (str(index.root), int(frame_size), index.fingerprint())
    if key not in _CACHE:
        recs = tuple(tuple(read_recording(p) for p in c.sounds) for c in index.classes)
        _CACHE[key] = LoadedAssets(
            index=index, frame_size=int(frame_size),
            cutouts=tuple(tuple(read_cutout(p, max_side=frame_size) for p in c.images) for c in index.classes),
            recordings=recs, rms=tuple(tuple(float(np.sqrt(np.mean(r.astype(np.float64) ** 2))) for r in rs)
                                       for rs in recs),
            backgrounds=tuple(read_background(p, max_shorter=2 * frame_size) for p in index.backgrounds),
            noise=tuple(read_recording(p) for p in index.noise))
    return _CACHE[key]


def asset_class_table(assets: LoadedAssets) -> list[dict]:
    return [dict(index=k, name=c.name, images=len(c.images), recordings=len(c.sounds))
            for k, c in enumerate(assets.index.classes)]
