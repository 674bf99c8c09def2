"""Load the official SSPL checkpoints (zjsong/SSPL) into our `SSPL`: `load_official(frame, sound, pcm,
ssl_head)` with the four files the official training saves (frame_best.pth: VGG16; sound_best.pth: VGGish + MLP;
pcm_best.pth; ssl_head_best.pth: the SimSiam head; DDP prefixes allowed). tests/test_official.py checks it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch

from .config import SSPLConfig
from .head import SimSiamHead
from .methods.sspl import SSPLMethod
from .model import SSPL

FILES = {"frame": "frame_best.pth", "sound": "sound_best.pth", "pcm": "pcm_best.pth", "ssl_head": "ssl_head_best.pth"}

# (official key regex, our key template) per file; the first match wins
_RULES: dict[str, list[tuple[str, str]]] = {
    "frame": [(r"feat_extractor\.(\d+)\.(weight|bias)", r"visual.features.\1.\2")],
    "sound": [
        (r"features\.(\d+)\.(weight|bias)", r"audio.backbone.features.\1.\2"),
        (r"embeddings\.(\d+)\.(weight|bias)", r"audio.backbone.embeddings.\1.\2"),
        (r"fc\.([02])\.(weight|bias)", r"audio.mlp.\1.\2"),
    ],
    "pcm": [
        (r"PredProcess\.0\.(weight|bias)", r"pcm.pred.0.\1"),
        (r"PredProcess\.(\d+)\.conv2d\.weight", r"pcm.pred.\1.weight"),
        (r"ErrorProcess\.(\d+)\.convtrans2d\.weight", r"pcm.error.\1.weight"),
        (r"ErrorProcess\.(\d+)\.(weight|bias)", r"pcm.error.\1.\2"),
        (r"(a0|b0)\.(\d+)", r"pcm.\1.\2"),
        (r"BNPred\.(\d+)\.(.+)", r"pcm.bn_pred_init.\1.\2"),
        (r"BNError\.(\d+)\.(.+)", r"pcm.bn_error_init.\1.\2"),
        (r"BNPred_step\.(\d+)\.(.+)", r"pcm.bn_pred_step.\1.\2"),
        (r"BNError_step\.(\d+)\.(.+)", r"pcm.bn_error_step.\1.\2"),
    ],
    "ssl_head": [(r"(projector|predictor)\.(.+)", r"head.\1.\2")],
}


class OfficialCheckpointError(ValueError):
    pass


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def official_key_map(part: str, keys, source: str | None = None) -> dict[str, str]:
    """{official key: our key} of one official file; keys outside its layout raise."""
    out, unknown = {}, []
    for key in keys:
        for pattern, template in _RULES[part]:
            if re.fullmatch(pattern, key):
                out[key] = re.sub(pattern, template, key)
                break
        else:
            unknown.append(key)
    if unknown:
        raise OfficialCheckpointError(
            f"{source or part + ' state dict'}: {len(unknown)} key(s) not in the official {part} layout: "
            f"{unknown[:10]}" + (" ..." if len(unknown) > 10 else ""))
    return out


def _convert_part(part: str, state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    state = _strip_module(state)
    return {ours: state[k] for k, ours in official_key_map(part, state, source).items()}


def convert_official_state_dicts(frame: Mapping, sound: Mapping, pcm: Mapping | None = None,
                                 ssl_head: Mapping | None = None, *, sources: Mapping[str, str] | None = None
                                 ) -> dict[str, torch.Tensor]:
    """The four official state dicts -> one state dict of our `SSPL`."""
    sources = dict(sources or {})
    parts = {"frame": frame, "sound": sound, "pcm": pcm, "ssl_head": ssl_head}
    out: dict[str, torch.Tensor] = {}
    for part, state in parts.items():
        if state is not None:
            out.update(_convert_part(part, state, sources.get(part, f"{part} state dict")))
    return out


def pcm_cycles(pcm: Mapping[str, torch.Tensor]) -> int:
    """Number of PCM recursion cycles (`cycs_pcm`) of an official pcm state dict: per-cycle BN layers."""
    state = _strip_module(pcm)
    n_pred = {int(m.group(1)) for k in state if (m := re.fullmatch(r"BNPred_step\.(\d+)\.weight", k))}
    n_err = {int(m.group(1)) for k in state if (m := re.fullmatch(r"BNError_step\.(\d+)\.weight", k))}
    n_levels = len({k for k in state if re.fullmatch(r"b0\.\d+", k)})  # 3 for the official module
    if n_levels == 0 or len(n_pred) % (n_levels - 1) or len(n_err) % n_levels \
            or len(n_pred) // (n_levels - 1) != len(n_err) // n_levels:
        raise OfficialCheckpointError(
            f"cannot infer the PCM cycles: {len(n_pred)} BNPred_step and {len(n_err)} BNError_step layers "
            f"for {n_levels} levels")
    return len(n_err) // n_levels


def official_config(*, use_pcm: bool = True, cycles: int = 4) -> SSPLConfig:
    """The configuration of the official model (VGG16 + VGGish, 512-d, SimSiam 2048/512, 224 px)."""
    return SSPLConfig(visual_encoder="vgg16", audio_encoder="vggish", img_size=224, visual_dim=512,
                      audio_hidden=512, out_dim=512, use_pcm=use_pcm, pcm_cycles=cycles, proj_dim=2048,
                      pred_hidden=512, pretrained=False)


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *,
                     ignore_prefixes: tuple[str, ...] = (), sources: Mapping[str, str] | None = None,
                     origins: Mapping[str, str] | None = None) -> None:
    """Raise `OfficialCheckpointError` listing missing, unexpected and mis-shaped keys, by file."""
    sources, origins = dict(sources or {}), dict(origins or {})
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(ignore_prefixes)}
    prefix_part = {"visual.": "frame", "audio.": "sound", "pcm.": "pcm", "head.": "ssl_head"}

    def where(k: str) -> str:
        part = next((p for pre, p in prefix_part.items() if k.startswith(pre)), "?")
        return sources.get(part, part)

    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            by_file: dict[str, list[str]] = {}
            for k in keys:
                by_file.setdefault(where(k), []).append(k)
            for f, ks in by_file.items():
                problems.append(f"{label} in {f}: {ks[:10]}" + (" ..." if len(ks) > 10 else ""))
    for k in shapes[:10]:
        official = f" (official key {origins[k]})" if k in origins else ""
        problems.append(f"shape mismatch in {where(k)}: {k}{official} is {tuple(state[k].shape)} there, the model "
                        f"expects {tuple(expected[k].shape)}")
    if problems:
        raise OfficialCheckpointError("official checkpoint does not match the model:\n  " + "\n  ".join(problems))


def _load(path, part: str, device) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official {part} checkpoint not found: {path} (expected the file the official "
                                f"training saves as {FILES[part]})")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise OfficialCheckpointError(f"{path}: the official {part} checkpoint is not a readable PyTorch file "
                                      f"(truncated or not saved by torch.save?): {e}") from e
    if not isinstance(state, Mapping):
        raise OfficialCheckpointError(f"{path}: the official {part} checkpoint should hold a state dict "
                                      f"(tensor name -> tensor, as {FILES[part]}), got a {type(state).__name__}")
    bad = [k for k, v in state.items() if not torch.is_tensor(v)]
    if bad:
        raise OfficialCheckpointError(f"{path}: the official {part} checkpoint should map names to tensors; "
                                      f"not tensors: {bad[:10]}" + (" ..." if len(bad) > 10 else ""))
    return state


def load_official(frame, sound, pcm=None, ssl_head=None, *, cycles: int | None = None,
                  device: str | torch.device = "cpu") -> SSPL:
    """Our `SSPL` from the official files in eval mode: w/ PCM with `pcm` (cycles from the file), else w/o
    PCM; `ssl_head` is optional (heatmaps do not need it)."""
    paths = {"frame": frame, "sound": sound, "pcm": pcm, "ssl_head": ssl_head}
    states = {part: _load(p, part, "cpu") if p is not None else None for part, p in paths.items()}
    sources = {part: str(p) for part, p in paths.items() if p is not None}
    if states["pcm"] is not None:
        found = pcm_cycles(states["pcm"])
        if cycles is not None and cycles != found:
            raise OfficialCheckpointError(f"{pcm}: holds a PCM with {found} cycles, but cycles={cycles} was asked")
        cycles = found
    cfg = official_config(use_pcm=states["pcm"] is not None, cycles=cycles if cycles is not None else 4)
    with torch.device("meta"):  # no random initialization of ~90M parameters that are overwritten anyway
        model = SSPL(cfg, SSPLMethod())
    state = convert_official_state_dicts(**states, sources=sources)
    origins = {ours: key for part, st in states.items() if st is not None
               for key, ours in official_key_map(part, _strip_module(st), sources[part]).items()}
    ignore = () if states["ssl_head"] is not None else ("head.",)
    check_state_dict(model, state, ignore_prefixes=ignore, sources=sources, origins=origins)
    if states["ssl_head"] is None:  # the head keeps a fresh (random) initialization
        model.head = SimSiamHead(in_dim=cfg.out_dim, dim=cfg.proj_dim, hidden=cfg.pred_hidden)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=states["ssl_head"] is not None, assign=True)
    left = [k for k, v in [*model.named_parameters(), *model.named_buffers()] if v.is_meta]
    if left:
        raise OfficialCheckpointError(f"tensors not provided by the official checkpoints: {left[:10]}")
    return model.to(device).eval()
