"""The frame pipeline against the official torchvision + PIL one (Resize bicubic, CenterCrop, Normalize)."""

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from sspl_lib.data.synth_sample import render_sample
from sspl_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig, eval_frame, random_views

OFFICIAL_EVAL = T.Compose([T.Resize(224, Image.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def test_eval_matches_official_pipeline():
    frame, _, _ = render_sample(0, "test_single", 1, frame_size=256)
    ref = OFFICIAL_EVAL(Image.fromarray(frame))
    ours = eval_frame(torch.from_numpy(frame), 224)
    assert ours.shape == ref.shape == (3, 224, 224)
    assert (ours - ref).abs().mean() < 0.01 and (ours - ref).abs().max() < 0.1
    odd = np.random.default_rng(0).integers(0, 256, (180, 300, 3), dtype=np.uint8)  # non-square
    assert (eval_frame(torch.from_numpy(odd), 224) - OFFICIAL_EVAL(Image.fromarray(odd))).abs().mean() < 0.02


def test_train_views_are_crops_of_the_official_resize():
    frame, _, _ = render_sample(0, "test_single", 2, frame_size=256)
    big = T.Compose([T.Resize(246, Image.BICUBIC), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(
        Image.fromarray(frame))  # (3, 246, 246)
    v = random_views(torch.from_numpy(frame), AugmentConfig(img_size=224, hflip_p=0.0), 3,
                     torch.Generator().manual_seed(0))
    win = big.unfold(1, 32, 1).unfold(2, 32, 1)[:, :23, :23]  # (3, 23, 23, 32, 32): top-left patches per offset
    for x in v:  # locate the crop by its top-left patch, then compare the whole view
        y, z = divmod(int((win - x[:, None, None, :32, :32]).abs().mean((0, 3, 4)).argmin()), 23)
        assert (big[:, y:y + 224, z:z + 224] - x).abs().mean() < 0.01
