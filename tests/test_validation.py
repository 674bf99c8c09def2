"""Issue 11's table, the rows of config, audio, model, metrics and ground truth: each bad input, given as a real
file or value, raises an error of the stated type whose message names the input; the rows that have a correct
result (a YAML float, integer PCM, clipped boxes) check the value."""

from functools import lru_cache

import numpy as np
import pytest
import torch

from sspl_lib import metrics
from sspl_lib.audio import prepare_clip, vggish_examples
from sspl_lib.config import ConfigError, SSPLConfig
from sspl_lib.profiles import load_profile, load_yaml, parse_overrides
from sspl_lib.data.gt import AnnotationError, flickr_gt_map, gt_maps_for_split, vggss_box_pixels, vggss_gt_map
from sspl_lib.methods.registry import build_model
from sspl_lib.model import SSPL

S = 32  # img_size of the test model


@lru_cache(maxsize=None)
def model() -> SSPL:
    torch.manual_seed(0)
    cfg = SSPLConfig(img_size=S, visual_dim=16, out_dim=16, encoder_width=8, audio_hidden=32, proj_dim=32,
                     pred_hidden=16, pcm_cycles=1, pretrained=False)
    return build_model(cfg).eval()


def frames(b=2, dtype=torch.float32):
    return torch.randn(b, 3, S, S, generator=torch.Generator().manual_seed(1)).to(dtype)


def spects(b=2, n=3, shape=(96, 64)):
    return torch.randn(b, n, *shape, generator=torch.Generator().manual_seed(2))


def tone(sec=3.0, sr=16000, f=440.0, amp=0.5):
    t = np.arange(int(sec * sr)) / sr
    return amp * np.sin(2 * np.pi * f * t)


def with_nan(x, i=100, v=np.nan):
    x = np.array(x, dtype=np.float32)
    x[i] = v
    return x


def yaml_profile(text, *, raw=False):
    """A profile YAML file (`profile:` + `config:` holding the lines of `text`; `raw`: `text` as the whole file)
    written to tmp_path, loaded."""
    def run(tmp_path):
        p = tmp_path / "profile.yaml"
        body = "".join(f"  {line}\n" for line in text.splitlines())
        p.write_text(text if raw else f"profile: profile\nconfig:\n{body}")
        return load_yaml(p)
    return run


def flickr_file(*boxes):
    """A Flickr-style XML file with one annotator box per (xmin, ymin, xmax, ymax), then its gt map."""
    def run(tmp_path):
        objs = "".join(f"<object><bbox><annotator>{k}</annotator><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                       f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bbox></object>" for k, b in enumerate(boxes))
        p = tmp_path / "7777.xml"
        p.write_text(f"<annotation><filename>7777</filename>{objs}</annotation>")
        return flickr_gt_map(p)
    return run


def no_file(f):
    return lambda tmp_path: f()


GT_255 = np.zeros((224, 224))
GT_255[50:150, 60:160] = 255
GT_NAN = np.where(GT_255 > 0, 1.0, 0.0)
GT_NAN[0, 0] = np.nan
HM = np.random.default_rng(0).random((14, 14))

# id, call (tmp_path) -> anything, exception type, regex the message must match (it names the input)
ERRORS = [
    # --- configuration: profile YAML, --set
    ("yaml-unknown-key-lr_visal", yaml_profile("epochs: 3\nlr_visal: 1.0e-4\n"), ConfigError,
     r"profile\.yaml: unknown config key 'lr_visal' \(did you mean 'lr_visual'\?\)"),
    ("set-unknown-key-epoch", no_file(lambda: load_profile("quick", **parse_overrides(["epoch=5"]))), ConfigError,
     r"unknown config key 'epoch' \(did you mean 'epochs'\?\)"),
    ("yaml-epochs-quoted", yaml_profile('epochs: "3"\n'), ConfigError,
     r"profile\.yaml: epochs='3': expected an integer, got str"),
    ("set-epochs-quoted", no_file(lambda: load_profile("quick", **parse_overrides(['epochs="3"']))), ConfigError,
     r"epochs='3': expected an integer"),
    ("yaml-use_pcm-quoted-false", yaml_profile('use_pcm: "false"\n'), ConfigError,
     r"use_pcm='false': expected true or false, got str"),
    ("yaml-epochs-bool", yaml_profile("epochs: true\n"), ConfigError, r"epochs=True: expected an integer, got bool"),
    ("yaml-amp-fp16", yaml_profile("amp: fp16\n"), ConfigError,
     r"amp='fp16': expected one of \['auto', 'bf16', 'none'\]"),
    ("yaml-lr_schedule-cosin", yaml_profile("lr_schedule: cosin\n"), ConfigError,
     r"lr_schedule='cosin': expected one of \['constant', 'cosine'\] \(did you mean 'cosine'\?\)"),
    ("yaml-old-objective", yaml_profile("objective: byol\n"), ConfigError,
     r"objective='byol': expected one of \['simsiam', 'contrastive', 'ezvsl', 'sacl'\]"),
    ("yaml-encoder", yaml_profile("visual_encoder: resnet\n"), ConfigError,
     r"visual_encoder='resnet': expected one of \['vgg16', 'small', 'efficientnet_lite0'\]"),
    ("yaml-dataset", yaml_profile("dataset: vggss\n"), ConfigError, r"dataset='vggss': expected one of"),
    ("yaml-device", yaml_profile("device: gpu\n"), ConfigError, r"device='gpu': expected 'auto', 'cpu', 'cuda'"),
    ("yaml-epochs-0", yaml_profile("epochs: 0\n"), ConfigError, r"epochs=0: expected >= 1"),
    ("yaml-negative-lr", yaml_profile("lr_head: -1e-3\n"), ConfigError, r"lr_head=-0\.001: expected >= 0"),
    ("yaml-streams-4", yaml_profile("streams: 4\n"), ConfigError, r"streams=4: expected 3 .* or 2"),
    ("yaml-old-views-3", yaml_profile("views: 3\n"), ConfigError, r"views=3: expected one of \[1, 2\]"),
    ("yaml-not-a-mapping", yaml_profile("- epochs\n", raw=True), ConfigError, r"profile\.yaml: expected the keys `profile`"),
    ("yaml-flat-keys", yaml_profile("epochs: 3\n", raw=True), ConfigError, r"profile\.yaml: expected the keys .*got \['epochs'\]"),
    ("yaml-other-name", yaml_profile("profile: quick\nconfig: {epochs: 3}\n", raw=True), ConfigError,
     r"profile\.yaml: `profile: quick` differs from the file's name 'profile'"),
    ("yaml-config-not-mapping", yaml_profile("profile: profile\nconfig: [1, 2]\n", raw=True), ConfigError,
     r"`config` must be a mapping"),
    ("set-without-equals", no_file(lambda: parse_overrides(["epochs5"])), ConfigError,
     r"--set 'epochs5': expected KEY=VALUE"),
    # --- audio
    ("vggish-nan", no_file(lambda: vggish_examples(with_nan(tone()))), ValueError,
     r"waveform holds 1 NaN/inf samples of 48000"),
    ("vggish-inf", no_file(lambda: vggish_examples(with_nan(tone(), v=np.inf))), ValueError,
     r"waveform holds 1 NaN/inf"),
    ("vggish-N0", no_file(lambda: vggish_examples(tone(sec=0.5))), ValueError,
     r"waveform: 8000 samples at 16 kHz \(0\.500 s\).*\(N=0\); expected at least 15600"),
    ("vggish-N0-resampled", no_file(lambda: vggish_examples(tone(sec=0.9, sr=44100), 44100)), ValueError,
     r"waveform: 14400 samples at 16 kHz.*\(N=0\)"),
    ("vggish-int64", no_file(lambda: vggish_examples(np.zeros(48000, np.int64))), TypeError,
     r"waveform has dtype torch\.int64; expected float samples .* or integer PCM"),
    ("prepare_clip-nan", no_file(lambda: prepare_clip(with_nan(tone()))), ValueError, r"waveform holds 1 NaN/inf"),
    # --- metrics
    ("ciou-gt-0..255", no_file(lambda: metrics.ciou(HM, GT_255)), ValueError,
     r"gt_map has values in \[0, 255\]; expected .* \[0, 1\] \(a 0\.\.255 mask\? divide it by 255\)"),
    ("ciou-gt-nan", no_file(lambda: metrics.ciou(HM, GT_NAN)), ValueError, r"gt_map contains NaN"),
    ("ciou-threshold-1.5", no_file(lambda: metrics.ciou(HM, GT_255 / 255, threshold=1.5)), ValueError,
     r"threshold=1\.5: expected a number in \[0, 1\]"),
    ("ciou-heatmap-nan", no_file(lambda: metrics.ciou(with_nan(HM.ravel(), 5).reshape(14, 14), GT_255 / 255)),
     ValueError, r"heatmap contains NaN or inf"),
    ("ciou_batch-gt-0..255", no_file(lambda: metrics.ciou_batch(HM[None], GT_255[None])), ValueError,
     r"gt_maps has values in \[0, 255\]"),
    ("ciou_batch-gt-0..255-torch", no_file(lambda: metrics.ciou_batch(torch.from_numpy(HM[None]),
                                                                      torch.from_numpy(GT_255[None]))),
     ValueError, r"gt_maps has values in \[0, 255\]"),
    ("ciou_batch-gt-nan", no_file(lambda: metrics.ciou_batch(HM[None], GT_NAN[None])), ValueError,
     r"gt_maps contains NaN"),
    ("ciou_batch-threshold", no_file(lambda: metrics.ciou_batch(HM[None], GT_255[None] / 255, threshold=-0.1)),
     ValueError, r"threshold=-0\.1: expected a number in \[0, 1\]"),
    # --- ground truth
    ("vggss-nan", no_file(lambda: vggss_gt_map([[0.1, np.nan, 0.5, 0.6]])), ValueError,
     r"bboxes: box \[0\.1, nan, 0\.5, 0\.6\] holds NaN"),
    ("vggss-pixels", no_file(lambda: vggss_gt_map([[10, 20, 110, 180]])), ValueError,
     r"bboxes: box \[10\.0, 20\.0, 110\.0, 180\.0\] looks like pixel coordinates; expected normalized"),
    ("vggss-3-coords", no_file(lambda: vggss_gt_map([[0.1, 0.2, 0.5]])), ValueError,
     r"bboxes: expected 4 numbers \(x0, y0, x1, y1\) per box, got shape \(1, 3\)"),
    ("vggss-3-coords-flat", no_file(lambda: vggss_box_pixels([0.1, 0.2, 0.5])), ValueError,
     r"bboxes: expected 4 numbers .* got shape \(3,\)"),
    ("vggss-ragged", no_file(lambda: vggss_gt_map([[0.1, 0.2, 0.5, 0.6], [0.1, 0.2]])), ValueError,
     r"bboxes: expected boxes \[\[x0, y0, x1, y1\], \.\.\.\] of 4 numbers each"),
    ("vggss-split-pixels", no_file(lambda: gt_maps_for_split(["a", "b"], vggss={"a": [[0, 0, 1, 1]],
                                                                               "b": [[3, 4, 50, 60]]})),
     AnnotationError, r"annotations: id b: box \[3\.0, 4\.0, 50\.0, 60\.0\] looks like pixel coordinates"),
    ("flickr-all-outside", flickr_file((260, 10, 300, 50), (10, 270, 60, 290)), AnnotationError,
     r"7777\.xml: every box is empty: box \[260, 10, 300, 50\] fully outside the 256-px image"),
    ("flickr-all-inverted", flickr_file((100, 10, 50, 60)), AnnotationError,
     r"7777\.xml: every box is empty: box \[100, 10, 50, 60\] inverted"),
    ("flickr-empty-at-size", flickr_file((8, 10, 9, 60)), AnnotationError,  # 1 px at 256: int(7.0) = int(7.875)
     r"7777\.xml: every box is empty at 224 px"),
    # --- model inputs (heatmap, forward, heatmap_cycles)
    ("heatmap-hwc", no_file(lambda: model().heatmap(frames().permute(0, 2, 3, 1), spects())), ValueError,
     r"frames look channels-last \(B,H,W,3\): got \(2, 32, 32, 3\); expected \(B,3,32,32\)"),
    ("heatmap-no-batch", no_file(lambda: model().heatmap(frames()[0], spects(1))), ValueError,
     r"frames has no batch dimension: got \(3, 32, 32\); expected \(B,3,32,32\) \(use frames\[None\]\)"),
    ("heatmap-batch-mismatch", no_file(lambda: model().heatmap(frames(2), spects(3))), ValueError,
     r"batch sizes differ: frames has B=2, spects has B=3"),
    ("heatmap-uint8", no_file(lambda: model().heatmap(frames(dtype=torch.uint8), spects())), TypeError,
     r"frames has dtype torch\.uint8 \(raw pixels\?\); expected float frames .*eval_frame"),
    ("heatmap-wrong-mel", no_file(lambda: model().heatmap(frames(), spects(shape=(96, 128)))), ValueError,
     r"spects: got shape \(2, 3, 96, 128\); expected \(B,N,96,64\)"),
    ("heatmap-mel-transposed", no_file(lambda: model().heatmap(frames(), spects(shape=(64, 96)))), ValueError,
     r"spects look transposed \(B,N,64,96\)"),
    ("heatmap-spects-no-batch", no_file(lambda: model().heatmap(frames(1), spects(1)[0])), ValueError,
     r"spects has no batch dimension: got \(3, 96, 64\)"),
    ("heatmap-N0", no_file(lambda: model().heatmap(frames(), spects(n=0))), ValueError,
     r"spects holds N=0 audio examples"),
    ("heatmap-img-size", no_file(lambda: model().heatmap(torch.randn(2, 3, 48, 48), spects())), ValueError,
     r"frames: frames of 48x48 px, got \(2, 3, 48, 48\); expected \(B,3,32,32\) \(cfg\.img_size\)"),
    ("heatmap-nan-frames", no_file(lambda: model().heatmap(frames().index_fill(2, torch.tensor([3]), np.nan),
                                                            spects())),
     ValueError, r"frames holds NaN or inf"),
    ("heatmap-nan-spects", no_file(lambda: model().heatmap(frames(), spects().index_fill(1, torch.tensor([1]),
                                                                                          np.nan))),
     ValueError, r"spects holds NaN or inf"),
    ("forward-frames2-mismatch", no_file(lambda: model()(frames(2), frames(3), spects(2))), ValueError,
     r"frames1 has B=2, frames2 has B=3, spects has B=2"),
    ("forward-frames2-hwc", no_file(lambda: model()(frames(), frames().permute(0, 2, 3, 1), spects())), ValueError,
     r"frames2 look channels-last"),
    ("cycles-numpy", no_file(lambda: model().heatmap_cycles(frames().numpy(), spects())), TypeError,
     r"frames: expected a float tensor \(B,3,32,32\), got ndarray"),
]


@pytest.mark.parametrize("call,exc,match", [r[1:] for r in ERRORS], ids=[r[0] for r in ERRORS])
def test_bad_input_is_named(call, exc, match, tmp_path):
    with pytest.raises(exc, match=match):
        call(tmp_path)


def _yaml_float(tmp_path):
    cfg = yaml_profile("lr_visual: 1e-4\nlr_head: 2E-3\nwarmup_epochs: 1\nepochs: 3\n")(tmp_path)
    assert type(cfg.lr_visual) is float and cfg.lr_visual == 1e-4 and cfg.lr_head == 2e-3
    assert type(cfg.warmup_epochs) is float and cfg.warmup_epochs == 1.0 and cfg.epochs == 3
    over = parse_overrides(["lr_visual=1e-4", "use_pcm=false", 'val_split="3"'])
    assert over == {"lr_visual": 1e-4, "use_pcm": False, "val_split": "3"}  # a quoted "3" stays a string
    assert load_profile("quick", **over).lr_visual == 1e-4


def _pcm(dtype, to_float):
    def run(tmp_path):
        ints = np.round(tone(amp=0.4) * 20000).astype(np.int64)
        if dtype == np.uint8:
            ints = np.round(tone(amp=0.4) * 100).astype(np.int64) + 128
        pcm = ints.astype(dtype)
        ours = vggish_examples(pcm)
        ref = vggish_examples(to_float(ints.astype(np.float64)))  # the float path on the same signal
        assert torch.equal(ours, ref)
        assert torch.equal(vggish_examples(torch.from_numpy(pcm)), ref)  # torch integer tensors too
        unscaled = vggish_examples(ints.astype(np.float64))
        assert (unscaled - ref).abs().min() > 1  # unscaled, every log-mel value would be far off
        np.testing.assert_allclose(prepare_clip(pcm), prepare_clip(to_float(ints.astype(np.float64))), atol=1e-6)
    return run


def _flickr_partly_bad(tmp_path):
    with pytest.warns(UserWarning, match=r"7777\.xml: box \[100, 10, 50, 60\] inverted .*; box \[300, 10, 400, 50\] "
                                         r"fully outside the 256-px image \(2 of 3 boxes"):
        g = flickr_file((0, 0, 128, 128), (100, 10, 50, 60), (300, 10, 400, 50))(tmp_path)
    hand = np.zeros((224, 224))
    hand[:112, :112] = 0.5  # the good annotator alone: int(224 * 128 / 256) = 112, halved (the consensus rule)
    np.testing.assert_array_equal(g, hand)


def _vggss_clipped(tmp_path):
    with pytest.warns(UserWarning, match=r"bboxes: box \[0\.5, -0\.2, 1\.3, 0\.5\] partly outside \[0, 1\], clipped"):
        g = vggss_gt_map([[0.5, -0.2, 1.3, 0.5]], size=10)
    hand = np.zeros((10, 10))
    hand[0:5, 5:10] = 1
    np.testing.assert_array_equal(g, hand)
    with pytest.warns(UserWarning, match=r"id b box \[0\.3, 0\.3, 0\.3, 0\.6\] empty at 224 px"):
        maps = gt_maps_for_split(["a", "b"], vggss={"a": [[0, 0, 0.5, 0.5]], "b": [[0.3, 0.3, 0.3, 0.6]]})
    assert maps[0].sum() == 112 * 112 and maps[1].sum() == 0


RESULTS = [
    ("yaml-1e-4-is-a-float", _yaml_float),
    ("int16-scaled", _pcm(np.int16, lambda x: x / 32768)),
    ("int32-scaled", _pcm(np.int32, lambda x: x / 2**31)),
    ("uint8-scaled", _pcm(np.uint8, lambda x: (x - 128) / 128)),
    ("flickr-inverted-box-warned", _flickr_partly_bad),
    ("vggss-outside-box-clipped", _vggss_clipped),
]


@pytest.mark.parametrize("check", [r[1] for r in RESULTS], ids=[r[0] for r in RESULTS])
def test_input_with_a_defined_result(check, tmp_path):
    check(tmp_path)


def test_valid_model_inputs_still_run():
    with torch.no_grad():
        assert model().heatmap(frames(), spects()).shape == (2, 4, 4)
        assert model().heatmap_cycles(frames(), spects()).shape == (2, 2, 4, 4)
        assert model().heatmap(frames(dtype=torch.float64).float(), spects(n=1)).shape == (2, 4, 4)
