"""A small generated asset folder (drawn cut-outs, synthesized 44.1 kHz recordings, noise photos) for tests
and the demo profile. CLI: `python -m sspl_lib.data.demo_assets data/assets_demo`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from ..cli import HelpFormat
from .synth_scene import background, shape_field, texture_factor, visual_classes
from .synth_sound import SR, background_noise, class_sound, sound_kinds

RECORDING_SR = 44_100
FORMATS = (("wav", "PCM_16"), ("ogg", "VORBIS"), ("flac", "PCM_16"))


def draw_cutout(rng: np.random.Generator, k: int, n_classes: int, size: int) -> np.ndarray:
    """Class k's shape, coloured and textured, on a transparent (size, size) canvas: uint8 RGBA."""
    cls = visual_classes(n_classes)[k]
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size * 2 - 1  # [-1, 1] frame
    rot = rng.uniform(-0.4, 0.4)
    half = rng.uniform(0.5, 0.65) * np.exp(rng.uniform(-0.2, 0.2, 2))  # half width, half height
    c, s = np.cos(rot), np.sin(rot)
    u = (xx * c + yy * s) / half[0]
    v = (-xx * s + yy * c) / half[1]
    alpha = np.clip(0.5 - shape_field(cls.shape, u, v) * size * half.min() / 2, 0, 1)  # soft 1-px edge
    shade = texture_factor(cls.texture, u, v, rng.uniform(0, 2 * np.pi)) * (1 - 0.2 * np.clip(u + v, -1, 1))
    rgb = np.clip(cls.rgb * rng.uniform(0.9, 1.05) * shade[..., None], 0, 1)
    return (np.dstack([rgb, alpha]) * 255 + 0.5).astype(np.uint8)


def synth_recording(rng: np.random.Generator, kind: str, seconds: float) -> np.ndarray:
    """`seconds` of the class sound `kind` at 44.1 kHz stereo (T, 2) float32, peak 0.5."""
    import librosa

    n16 = int(round(seconds * SR))
    x = np.concatenate([class_sound(kind, rng) for _ in range(-(-n16 // (3 * SR)))])[:n16]
    x = librosa.resample(x, orig_sr=SR, target_sr=RECORDING_SR)
    delay = int(rng.integers(1, 4))  # a few samples: no phase cancellation in a mono mix
    stereo = np.stack([x, 0.8 * np.concatenate([np.zeros(delay), x[:-delay]])], axis=1)
    return (0.5 * stereo / np.abs(stereo).max()).astype(np.float32)


def _save_image(rgba: np.ndarray, path: Path, *, with_mask: bool) -> None:
    from PIL import Image

    if with_mask:  # an RGB image + a same-named *_mask.png
        Image.fromarray(rgba[..., :3]).save(path)
        Image.fromarray(rgba[..., 3]).save(path.with_name(path.stem + "_mask.png"))
    else:
        Image.fromarray(rgba, "RGBA").save(path, **({"lossless": True} if path.suffix == ".webp" else {}))


def make_demo_assets(out_dir: str | os.PathLike, *, seed: int = 0, n_classes: int = 4, images_per_class: int = 2,
                     sounds_per_class: int = 2, n_backgrounds: int = 3, image_size: int = 96,
                     noise: bool = True) -> Path:
    """Write a small asset folder to `out_dir` (classes/<colour>_<shape>/, backgrounds/, noise/); returns it."""
    import soundfile as sf
    from PIL import Image

    if n_classes < 1 or images_per_class < 1 or sounds_per_class < 1 or n_backgrounds < 1:
        raise ValueError("n_classes, images_per_class, sounds_per_class and n_backgrounds must be >= 1")
    rng = np.random.default_rng([seed, 7331])
    root = Path(out_dir)
    kinds = sound_kinds(n_classes)
    for k, cls in enumerate(visual_classes(n_classes)):
        d = root / "classes" / f"{cls.colour}_{cls.shape}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            ext = ".webp" if i == 0 and k % 2 else ".png"
            _save_image(draw_cutout(rng, k, n_classes, image_size), d / f"{cls.shape}_{i}{ext}", with_mask=i % 2 == 1)
        for i in range(sounds_per_class):
            ext, subtype = FORMATS[(k + i) % len(FORMATS)]
            seconds = rng.uniform(1.5, 2.6) if i == 0 else rng.uniform(3.5, 5.0)  # one shorter than a clip
            sf.write(d / f"{kinds[k]}_{i}.{ext}", synth_recording(rng, kinds[k], seconds), RECORDING_SR,
                     subtype=subtype)
    bg = root / "backgrounds"
    bg.mkdir(parents=True, exist_ok=True)
    for i in range(n_backgrounds):
        w, h = image_size * 2 + 37 * i, image_size * 3 // 2 + 53 * (i % 2)
        img = background(rng, max(w, h))[:h, :w] + rng.normal(0, 0.02, (h, w, 3))
        Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(bg / f"scene_{i}.jpg", quality=90)
    if noise:
        import librosa

        (root / "noise").mkdir(parents=True, exist_ok=True)
        amb = librosa.resample(background_noise(rng), orig_sr=SR, target_sr=22_050)
        sf.write(root / "noise" / "ambient.wav", (0.3 * amb / np.abs(amb).max()).astype(np.float32), 22_050,
                 subtype="PCM_16")
    return root


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sspl_lib.data.demo_assets", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormat)
    p.add_argument("out", help="output folder (relative: from the repo root)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same files")
    p.add_argument("--n-classes", type=int, default=4, help="classes (one folder each)")
    p.add_argument("--images-per-class", type=int, default=2, help="RGBA cut-outs per class")
    p.add_argument("--sounds-per-class", type=int, default=2, help="recordings per class")
    return p


def main(argv=None) -> None:
    p = parser()
    a = p.parse_args(argv)
    from ..paths import resolve

    out = make_demo_assets(resolve(a.out), seed=a.seed, n_classes=a.n_classes, images_per_class=a.images_per_class,
                           sounds_per_class=a.sounds_per_class)
    print(f"wrote {out} ({len(list(out.rglob('*.*')))} files)")


if __name__ == "__main__":
    main()
