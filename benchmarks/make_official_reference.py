"""Regenerate tests/data/official_reference.npz: numbers computed by the official SSPL code (zjsong/SSPL),
imported at run time from a path outside this repository (never copied here). Only numbers are written.

    git clone https://github.com/zjsong/SSPL /tmp/official_src  # made from commit d1af4c7a (2024-07-08)
    python -m pip install --no-deps --target /tmp/offpkgs opencv-python-headless pandas pytz tzdata
    python -m benchmarks.make_official_reference --official-src /tmp/official_src --official-pkgs /tmp/offpkgs \
        [--out tests/data/official_reference.npz] [--threads 2] [--check]

The seeded float32 inputs (bilinear upsampling in `make_inputs`) round differently with the thread count:
the committed file was made with 2 threads (`--threads 2`, the default), with which this script
reproduces it bit for bit (torch 2.11.0, `--check`: all 32 entries np.array_equal, ~70 s on 2 cores).

For each variant (`pcm4__` = sspl_w_pcm with cycs_pcm=4, `nopcm__` = sspl_wo_pcm) the official
`ModelBuilder` builds VGG16 (train_from_scratch=True), VGGish (its features/embeddings read by the official
`VGGish.__init__` from a weights file written from the seeded state dict), PCNet, SimSiam and SimSiamLoss;
every module loads the seeded weights of tests/official_weights.py (strict=True) and runs in float64 on
CPU (`.cuda()` a no-op; single process: no SyncBatchNorm / DDP wrappers). The official
`main.NetWrapper.forward` then runs on `official_weights.make_inputs(input_seed)`, first in eval mode
(`loss_eval`, `heatmap_eval` = `orig_sim_map`), then in train mode (`loss_train`, `heatmap_train`, and
`p1 p2 z1 z2` caught by a forward hook on the SimSiam head). Results are stored as float32.

`audio__<case>`: the official `vggish_input.waveform_to_examples` on `official_weights.waveform_cases()`;
`prepare__<case>__clip` / `__examples`: the official `BaseDataset._load_audio` (tile / centre 3 s /
`normalize_audio`; `librosa.load` replaced by the in-memory clip) and the examples of that clip, on
`official_weights.prepare_cases()`.

`--check` compares the result with the existing file (np.array_equal per entry) instead of writing it.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

from benchmarks.official_side import cuda_noop, official_root, vgg16_without_download
from sspl_lib.paths import resolve
from tests.official_weights import (OFFICIAL_FILES, make_inputs, make_state_dict, manifest_of, manifests_to_json,
                                    prepare_cases, waveform_cases)

WEIGHT_SEED, INPUT_SEED, CYCLES, OUT_DIM = 1234, 99, 4, 512
VARIANTS = {"pcm4": "sspl_w_pcm", "nopcm": "sspl_wo_pcm"}
OFFICIAL_TOP = ("main", "models", "dataset", "utils", "arguments_train", "arguments_test")


def _import_variant(src, variant: str) -> types.SimpleNamespace:
    """Fresh imports of one official variant (both define the top-level modules `main`, `models`, ...)."""
    root = official_root(src, variant)
    for name in list(sys.modules):
        if name.split(".")[0] in OFFICIAL_TOP:
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not p.endswith(tuple(VARIANTS.values()))]
    sys.path.insert(0, str(root))
    import main
    from dataset import base
    from models import ModelBuilder
    from models.torchvggish.torchvggish import vggish_input
    from models.torchvggish.torchvggish.vggish import VGGish

    return types.SimpleNamespace(main=main, base=base, ModelBuilder=ModelBuilder, vggish_input=vggish_input,
                                 VGGish=VGGish, root=root)


def _build(off: types.SimpleNamespace, use_pcm: bool, tmp: Path) -> tuple[dict, torch.nn.Module]:
    """The official modules with the seeded weights, float64; returns ({part: module}, loss)."""
    builder = off.ModelBuilder()
    with vgg16_without_download():
        frame = builder.build_frame(arch="vgg16", train_from_scratch=True, fine_tune=False)
    sound_manifest = manifest_of(off.VGGish(None, out_dim=OUT_DIM, pretrained=False).state_dict())
    sound_seeded = make_state_dict(sound_manifest, WEIGHT_SEED)
    vggish_file = tmp / "vggish_seeded.pth"  # what the official VGGish.__init__ reads (features + embeddings)
    torch.save({k: v for k, v in sound_seeded.items() if k.startswith(("features.", "embeddings."))}, vggish_file)
    nets = {"frame": frame, "sound": builder.build_sound(arch="vggish", weights_vggish=str(vggish_file),
                                                         out_dim=OUT_DIM)}
    if use_pcm:
        nets["pcm"] = builder.build_feat_fusion_pc(cycs_in=CYCLES, dim_audio=128, n_fm_out=OUT_DIM)
    nets["ssl_head"] = builder.build_selfsuperlearn_head(arch="simsiam", in_dim_proj=OUT_DIM)
    for net in nets.values():
        net.load_state_dict(make_state_dict(manifest_of(net.state_dict()), WEIGHT_SEED), strict=True)
        net.double()
    loss = builder.build_criterion(types.SimpleNamespace(arch_ssl_method="simsiam"))
    return nets, loss


def _run_variant(off: types.SimpleNamespace, prefix: str, use_pcm: bool, inputs, tmp: Path) -> dict:
    nets, loss = _build(off, use_pcm, tmp)
    out = {f"{prefix}__manifests": np.array(manifests_to_json(
        {part: manifest_of(net.state_dict()) for part, net in nets.items()}))}
    assert set(nets) <= set(OFFICIAL_FILES)
    wrapper = off.main.NetWrapper(*nets.values(), loss, types.SimpleNamespace())
    f1, f2, spects = (x.double() for x in inputs)
    batch = {"frame_view1": f1, "frame_view2": f2, "spect": spects}
    f32 = lambda t: t.detach().float().numpy()  # noqa: E731
    with cuda_noop(torch.device("cpu")), torch.no_grad():
        wrapper.eval()
        loss_eval, o = wrapper.forward(batch)
        out[f"{prefix}__heatmap_eval"], out[f"{prefix}__loss_eval"] = f32(o["orig_sim_map"]), f32(loss_eval)
        caught = {}
        hook = nets["ssl_head"].register_forward_hook(lambda m, i, r: caught.update(zip(("p1", "p2", "z1", "z2"), r)))
        wrapper.train()
        loss_train, o = wrapper.forward(batch)
        hook.remove()
    out[f"{prefix}__loss_train"], out[f"{prefix}__heatmap_train"] = f32(loss_train), f32(o["orig_sim_map"])
    out.update({f"{prefix}__{k}": f32(caught[k]) for k in ("p1", "p2", "z1", "z2")})
    return out


def _audio(off: types.SimpleNamespace) -> dict:
    out = {}
    for name, (wave, sr) in waveform_cases().items():
        out[f"audio__{name}"] = off.vggish_input.waveform_to_examples(wave, sr).numpy()[:, 0]
    clips = prepare_cases()
    off.base.librosa = types.SimpleNamespace(load=lambda path, sr, mono: (clips[path].copy(), sr))
    loader = types.SimpleNamespace(audRate=16000, audLen=16000 * 3)
    for name in clips:
        clip = off.base.BaseDataset._load_audio(loader, name)
        ex = off.vggish_input.waveform_to_examples(clip, sample_rate=16000, return_tensor=False)
        out[f"prepare__{name}__clip"] = clip.astype(np.float32)
        out[f"prepare__{name}__examples"] = torch.tensor(ex).float().numpy()
    return out


def make_reference(src) -> dict:
    """All entries of the reference file (numpy arrays), computed by the official code at `src`."""
    missing = [name for name in ("cv2", "pandas", "resampy", "sklearn") if importlib.util.find_spec(name) is None]
    if missing:  # imported at module level by the official code
        raise SystemExit(f"the official code imports {missing}: install them into a folder outside the venv "
                         "(pip install --no-deps --target DIR opencv-python-headless pandas pytz tzdata) and pass "
                         "--official-pkgs DIR")
    inputs = make_inputs(INPUT_SEED)
    f1, f2, spects = inputs
    ref = {"weight_seed": np.array(WEIGHT_SEED), "input_seed": np.array(INPUT_SEED), "cycles": np.array(CYCLES),
           "out_dim": np.array(OUT_DIM),
           "input_fingerprint": np.array([float(f1.double().sum()), float(f2.double().sum()),
                                          float(spects.double().sum()), float(f1.flatten()[0]),
                                          float(spects.flatten()[-1])]),
           "torch_version": np.array(torch.__version__)}
    with tempfile.TemporaryDirectory() as tmp:
        for prefix, variant in VARIANTS.items():
            off = _import_variant(src, variant)
            ref.update(_run_variant(off, prefix, prefix == "pcm4", inputs, Path(tmp)))
            if variant == "sspl_w_pcm":
                audio = _audio(off)
    ref.update(audio)
    return ref


def compare(new: dict, path: Path) -> list[str]:
    """Entries of `path` that differ from `new` (np.array_equal), with the max abs difference."""
    problems = []
    with np.load(path) as old:
        if set(old.files) != set(new):
            problems.append(f"keys differ: only in file {sorted(set(old.files) - set(new))}, "
                            f"only new {sorted(set(new) - set(old.files))}")
        for k in old.files:
            if k in new and not np.array_equal(old[k], new[k]):
                a, b = old[k], new[k]
                d = (f"max abs {np.abs(a.astype(np.float64) - b.astype(np.float64)).max():.3e}"
                     if a.dtype.kind == "f" and a.shape == b.shape else f"{a!r} vs {b!r}"[:200])
                problems.append(f"{k}: {d}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official-src", required=True, help="the official SSPL repository, extracted (root folder)")
    p.add_argument("--official-pkgs", help="a `pip install --target` folder with what the official code imports "
                   "beyond our requirements (cv2, pandas); appended to sys.path for this run only")
    p.add_argument("--out", default="tests/data/official_reference.npz")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the inputs depend on it; see above)")
    p.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.official_pkgs:
        sys.path.append(str(Path(args.official_pkgs).resolve()))
    ref = make_reference(args.official_src)
    out = resolve(args.out)
    if args.check:
        problems = compare(ref, out)
        print(f"{out}: {len(ref)} entries, " + ("all bit-identical" if not problems else
                                                  f"{len(problems)} differ:\n  " + "\n  ".join(problems)))
        return 1 if problems else 0
    np.savez_compressed(out, **ref)
    print(f"wrote {out} ({len(ref)} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
