"""Decoding of raw media: images (PIL), audio (soundfile, else PyAV), videos (PyAV: middle frame + audio).

Every failure raises `MediaError` whose message starts with the file path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
AUDIO_EXT = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus"}
VIDEO_EXT = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v"}
SOUNDFILE_EXT = {".wav", ".flac", ".ogg"}


class MediaError(ValueError):
    """An input file that cannot be decoded (or holds no usable data); the message names the file."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Image file -> uint8 (H, W, 3) RGB (grayscale, palette, RGBA, 16-bit are converted; alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I"):  # 16/32-bit grayscale: scale to 8 bit
                a = np.asarray(im, dtype=np.float64)
                im = Image.fromarray(np.uint8(255 * (a - a.min()) / max(np.ptp(a), 1e-9)))
            return np.array(im.convert("RGB"), dtype=np.uint8)  # writable copy
    except FileNotFoundError as e:
        raise MediaError(f"{path}: image file not found") from e
    except Image.DecompressionBombError as e:  # PIL refuses > 2 x Image.MAX_IMAGE_PIXELS
        raise MediaError(f"{path}: image too large to decode safely (DecompressionBombError: {e})") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"{path}: unreadable image ({type(e).__name__}: {e})") from e


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (size, size, 3) bicubic (aspect not kept, like the official cv2.resize)."""
    from PIL import Image

    if img.shape[:2] == (size, size):
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC), dtype=np.uint8)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Audio file -> (mono float32 (T,), sample rate). wav/flac/ogg via soundfile, the rest via PyAV."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: audio file not found")
    if path.suffix.lower() in SOUNDFILE_EXT:
        import soundfile as sf

        try:
            x, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
        except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
            raise MediaError(f"{path}: unreadable audio ({type(e).__name__}: {e})") from e
        return x.mean(axis=1), int(sr)
    return decode_av_audio(path)


def decode_av_audio(path: str | os.PathLike, rate: int = 16_000) -> tuple[np.ndarray, int]:
    """The first audio stream of a container, decoded and resampled to mono float32 at `rate`."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise MediaError(f"{path}: no audio stream")
            res = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = []
            for frame in c.decode(c.streams.audio[0]):
                chunks += [f.to_ndarray().reshape(-1) for f in res.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in res.resample(None)]  # flush
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as e:
        raise MediaError(f"{path}: undecodable audio ({type(e).__name__}: {e})") from e
    return (np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)), rate


def video_middle_frame(path: str | os.PathLike) -> np.ndarray:
    """The frame at the middle of a video's duration, uint8 (H, W, 3) RGB (PyAV)."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediaError(f"{path}: no video stream")
            vs = c.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)] if vs.duration is None and c.duration is None \
                else None
            if frames is None:
                dur = float(vs.duration * vs.time_base) if vs.duration else c.duration / 1e6
                mid = (float(vs.start_time * vs.time_base) if vs.start_time else 0.0) + dur / 2
                c.seek(int(mid / vs.time_base), stream=vs, backward=True, any_frame=False)
                last = None
                for f in c.decode(vs):
                    last = f
                    if f.time is not None and f.time >= mid - 0.5 / float(vs.average_rate or 25):
                        break
                frames = [last.to_ndarray(format="rgb24")] if last is not None else []
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as e:
        raise MediaError(f"{path}: undecodable video ({type(e).__name__}: {e})") from e
    if not frames:
        raise MediaError(f"{path}: no decodable video frame")
    return frames[len(frames) // 2]
