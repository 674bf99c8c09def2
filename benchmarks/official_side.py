"""The official SSPL code as the other side of `benchmarks.throughput`: imported at run time from a path
outside this repository (never copied here), with our model's weights, on CPU or CUDA.

Its `.cuda()` calls become no-ops on CPU, torchvision's `pretrained=` is shimmed to random weights (no
downloads), and modules it imports only for parts not run (`resampy`; `cv2`/`pandas` if absent) are stubbed.
"""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

import numpy as np
import torch

from sspl_lib.model import SSPL


STUBS = ("cv2", "pandas", "resampy")  # imported by official modules; used only by parts not run here


def official_root(src, variant: str = "sspl_w_pcm") -> Path:
    """The folder of one official variant (`sspl_w_pcm` or `sspl_wo_pcm`): `src` is the repository root or
    that folder itself."""
    root = Path(src)
    root = root / variant if (root / variant).is_dir() else root
    if not (root / "main.py").is_file() or not (root / "models" / "simsiam_head.py").is_file():
        raise FileNotFoundError(f"{src}: not the official SSPL source (no {variant}/main.py and "
                                f"{variant}/models/simsiam_head.py)")
    return root


def stub_missing(names) -> list[str]:
    """Empty stand-in modules for those of `names` that cannot be imported; returns the stubbed names."""
    stubbed = []
    for name in names:
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
            stubbed.append(name)
    return stubbed


@contextlib.contextmanager
def vgg16_without_download():
    """torchvision's `vgg16(pretrained=...)` (the official call) -> random weights, nothing downloaded."""
    import torchvision

    orig = torchvision.models.vgg16
    torchvision.models.vgg16 = lambda pretrained=False, **kw: orig(weights=None)
    try:
        yield
    finally:
        torchvision.models.vgg16 = orig


@contextlib.contextmanager
def cuda_noop(dev: torch.device):
    """The official forward calls `.cuda()`: on CPU make it a no-op (only while the official code runs)."""
    if dev.type == "cuda":
        yield
        return
    orig = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = orig


class Official:
    """The official sspl_w_pcm modules, built with random weights copied from one of our models."""

    def __init__(self, src: str, dev: torch.device, *, model: bool = True):
        root = official_root(src)
        self.dev = dev
        self.stubbed = stub_missing(STUBS)
        self.has_cv2 = "cv2" not in self.stubbed
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        if not model:  # the metric and dataset code only
            import main as M
            from dataset.videodataset import VideoDataset

            self.M, self.VideoDataset = M, VideoDataset
            return
        with vgg16_without_download():
            import main as M  # the official training script (its main() is not run)
            from models.criterions import SimSiamLoss
            from models.frame_net import VGG16
            from models.pc_net import PCNet
            from models.simsiam_head import SimSiam
            from models.torchvggish.torchvggish.vggish import VGGish
            from dataset.videodataset import VideoDataset

            frame = VGG16(train_from_scratch=False, fine_tune=False)
        sound = VGGish(None, out_dim=512, pretrained=False)
        for p in list(sound.features.parameters()) + list(sound.embeddings.parameters()):
            p.requires_grad = False  # as the official ModelBuilder.build_sound does
        self.M, self.VideoDataset = M, VideoDataset
        self.nets = dict(frame=frame, sound=sound, pcm=PCNet(cycs_in=4, dim_audio=128, n_fm_out=512),
                         head=SimSiam(512))
        self.args = types.SimpleNamespace(lr_sound=2e-5, lr_frame=2e-5, lr_ssl_head=5e-5, beta1=0.9,
                                          weight_decay=1e-4)
        self.wrapper = M.NetWrapper(*self.nets.values(), SimSiamLoss(), self.args).to(dev)
        self.opt = M.create_optimizer(self.nets["sound"], self.nets["pcm"], self.nets["head"], self.args)

    def cuda_noop(self):
        return cuda_noop(self.dev)

    def load_from(self, ours: SSPL) -> None:
        """Copy our model's weights into the official modules (strict: every key must map), by the key
        mapping of `sspl_lib.official` (the one that loads official checkpoints into our model)."""
        from sspl_lib.official import official_key_map

        sd = {k: v.detach().contiguous() for k, v in ours.state_dict().items()}
        part = {"frame": "frame", "sound": "sound", "pcm": "pcm", "head": "ssl_head"}
        for name, net in self.nets.items():
            keys = official_key_map(part[name], net.state_dict())
            net.load_state_dict({k: sd[o] for k, o in keys.items()}, strict=True)

    def batch(self, f1, f2, spects) -> dict:
        return {"frame_view1": f1, "frame_view2": f2, "spect": spects[:, :, None]}

    def train_step(self, batch) -> float:
        self.wrapper.train()
        with self.cuda_noop():
            self.wrapper.zero_grad()
            loss, _ = self.wrapper.forward(batch)
            loss = loss.mean()
            loss.backward()
            self.opt.step()
        return float(loss)

    @torch.no_grad()
    def heatmaps(self, batch) -> torch.Tensor:
        self.wrapper.eval()
        with self.cuda_noop():
            return self.wrapper.forward(batch)[1]["orig_sim_map"]

    def metric(self, heatmaps: np.ndarray, gts: np.ndarray) -> np.ndarray:
        """cIoU per map + the official 21-threshold AUC (sklearn), as the official `evaluate` computes them."""
        if self.has_cv2:
            c = [self.M.eval_cal_ciou(h, g, img_size=gts.shape[-1], thres=0.5)[0] for h, g in zip(heatmaps, gts)]
        else:  # numpy stand-in of cv2.resize (the metrics engineer's official-style loop)
            from benchmarks.metrics_speed import official_loop

            c = official_loop(heatmaps, gts)
        c = np.asarray(c)
        x = [0.05 * i for i in range(21)]
        self.M.auc(x, [np.sum(c >= 0.05 * i) / len(c) for i in range(21)])
        return c


def write_official_files(root: Path, path: Path) -> Path:
    """The same items in the official training layout (three files, float32 frames as the official packer)."""
    import h5py

    d = root / "SoundNet_Flickr" / "10k_unlabeled"
    d.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "r") as f:
        for key, field in (("frames", "train_frames"), ("audios", "train_audios"), ("spects", "train_spects")):
            data = f["audio" if key == "audios" else key][:]
            with h5py.File(d / f"h5py_train_{key}_10k.h5", "w") as g:
                g.create_dataset(field, data=data.astype(np.float32))
    return root
