"""What a study trains: variants (a label and the config fields it changes), the methods compared under
identical conditions, the ablation's variants, a budget, and the job list (docs/experiments.md)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..config import SSPLConfig
from ..paths import resolve
from ..profiles import as_list

AUDIO_CONTROLS = ("matched", "shuffled", "silent")


@dataclass(frozen=True)
class Variant:
    name: str  # a label for tables and folders
    overrides: dict = field(default_factory=dict)  # config fields changed from the base
    audio: tuple = ("matched",)  # audio modes scored at test time
    train_as: str | None = None  # a derived entry: scores that variant's runs (trains nothing itself)
    test_map: dict = field(default_factory=dict)  # settings of the method's test-time map (e.g. EZ-VSL's ogl_alpha)


@dataclass(frozen=True)
class Budget:
    """How much of the profile a study trains and tests with. None = the profile's own value; 0 = all data."""

    epochs: int | None = None
    batch_size: int | None = None
    n_train: int = 0  # first training clips used
    n_val: int | None = None  # validation samples for model selection (None: the profile's val_samples; 0: all)
    n_test: int = 0  # test samples per split
    label: str = "profile"

    @classmethod
    def reduced(cls, **kw) -> "Budget":
        return cls(**{**dict(epochs=2, batch_size=32, n_train=512, n_val=64, n_test=100, label="reduced"), **kw})

    @classmethod
    def full(cls, **kw) -> "Budget":
        return cls(**{**dict(n_val=0, label="full"), **kw})

    def changes(self) -> dict:
        pairs = (("epochs", self.epochs), ("batch_size", self.batch_size), ("val_samples", self.n_val))
        return {k: v for k, v in pairs if v is not None}


# ----------------------------------------------------------------------------- methods under identical conditions
METHODS = {
    "sspl": Variant("sspl", {}, audio=AUDIO_CONTROLS),
    "sspl_wo_pcm": Variant("sspl_wo_pcm", {"use_pcm": False}, audio=AUDIO_CONTROLS),
    "ezvsl": Variant("ezvsl", {"method": "ezvsl", "use_pcm": False}, audio=AUDIO_CONTROLS),
    "sacl": Variant("sacl", {"method": "sacl", "use_pcm": False}, audio=AUDIO_CONTROLS),
    # object-guided EZ-VSL (methods/ezvsl.py; gamma chosen on val: docs/methods.md)
    "ezvsl_gated": Variant("ezvsl_gated", {"method": "ezvsl_gated", "use_pcm": False, "ezvsl_gated_region": 0.5,
                                           "ezvsl_gated_gamma": 2.0}, audio=AUDIO_CONTROLS),
    # EZ-VSL's published test-time map (OGL) on the ezvsl runs
    "ezvsl_ogl": Variant("ezvsl_ogl", {"method": "ezvsl", "use_pcm": False}, audio=AUDIO_CONTROLS,
                         train_as="ezvsl", test_map={"ogl_alpha": 0.4}),
}


def methods(names) -> list[Variant]:
    """The methods' variants by name; `names` may also be a JSON list or a comma-separated string."""
    names = as_list(names, "methods")
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} "
                         f"(choose from {tuple(METHODS)})")
    return [METHODS[m] for m in names]


def methods_help() -> str:
    """The methods and the config fields each sets (train's --help)."""
    lines = ["methods (--method NAME sets these config fields over the profile's; experiments.jobs.METHODS):"]
    lines += [f"  {m}: " + (", ".join(f"{k}={x!r}" for k, x in v.overrides.items()) or "the profile's fields as they are")
              for m, v in METHODS.items() if not v.train_as]
    derived = ", ".join(f"{m} (scores the {v.train_as} runs)" for m, v in METHODS.items() if v.train_as)
    return "\n".join(lines + [f"  trains nothing: {derived}"])


def method_fields(cfg: SSPLConfig, method: str) -> dict:
    """The fields that tell the methods apart, as `method` sets them: what its checkpoints must hold."""
    keys = sorted({k for v in METHODS.values() for k in v.overrides})
    want = cfg.replace(**METHODS[METHODS[method].train_as or method].overrides)
    return {k: getattr(want, k) for k in keys}


# ----------------------------------------------------------------------------- the paper's ablation questions
QUESTIONS = ("pcm", "cycles", "streams", "scratch", "objective", "protocol", "audio")
# question -> (config fields its variants may change, the record field that names the compared setting)
QUESTION_FIELDS = {"pcm": ({"use_pcm"}, "variant"), "cycles": ({"pcm_cycles"}, "variant"),
                   "streams": ({"streams"}, "variant"), "scratch": ({"from_scratch"}, "variant"),
                   "objective": ({"use_pcm", "method"}, "variant"), "protocol": (set(), "protocol"),
                   "audio": (set(), "audio")}


def ablation_variants(base: SSPLConfig, questions=QUESTIONS, cycles=(0, 2, 4)) -> list[Variant]:
    """The variants the ablation questions need (protocol and audio re-score SSPL)."""
    q, cycles = set(questions), as_list(cycles, "cycles", int)
    out = [Variant("sspl", {}, audio=AUDIO_CONTROLS if "audio" in q else ("matched",))]
    if q & {"pcm", "objective"}:
        out.append(Variant("sspl_wo_pcm", {"use_pcm": False}))
    if "cycles" in q:
        out += [Variant(f"pcm_cycles_{k}", {"pcm_cycles": int(k)}) for k in cycles if int(k) != base.pcm_cycles]
    if "streams" in q:
        out.append(Variant("two_streams", {"streams": 2}))
    if "scratch" in q:
        out.append(Variant("from_scratch", {"from_scratch": True}))
    if "objective" in q:
        out.append(Variant("contrastive", {"method": "contrastive", "use_pcm": False}))
    return out


# ----------------------------------------------------------------------------- seeds, run folders, jobs
def study_seeds(cfg: SSPLConfig) -> list[int]:
    """The seeds of a profile's study: its `seed` first, then its `seeds` (quick: 1234, 1, 2)."""
    return [int(s) for s in dict.fromkeys([cfg.seed, *cfg.seeds])]


def first_seeds(cfg: SSPLConfig, n_seeds: int) -> list[int]:
    if n_seeds < 0:
        raise ValueError(f"n_seeds={n_seeds}: expected 0 (every study seed) or a positive count")
    return study_seeds(cfg)[:n_seeds] if n_seeds else study_seeds(cfg)


def method_folder(root, main_seed: int):
    """The methods' layout: `<root>/<name>/` for the profile's seed, `<root>/seeds/<name>/seed<k>/` else."""
    root = resolve(root)
    return lambda name, seed: root / name if seed == main_seed else root / "seeds" / name / f"seed{seed}"


def study_folder(root):
    """A study's layout (ablation, seed study): `<root>/<name>/seed<k>/`."""
    root = resolve(root)
    return lambda name, seed: root / name / f"seed{seed}"


def method_runs(root, method: str, cfg: SSPLConfig, n_seeds: int = 1) -> dict[int, Path]:
    """{seed: run folder} of a method for the first `n_seeds` study seeds (0: all)."""
    (v,) = methods([method])
    folder = method_folder(root, cfg.seed)
    return {s: folder(v.train_as or v.name, s) for s in first_seeds(cfg, n_seeds)}


@dataclass(frozen=True)
class Job:
    variant: Variant
    seed: int
    run_dir: Path
    cfg: SSPLConfig
    resume: bool = True
    allow_longer: bool = False  # a finished run asked for with more epochs: trained further in its folder

    @property
    def name(self) -> str:
        return self.variant.name


def plan(base: SSPLConfig, variants, seeds, folder, *, changes: dict | None = None, resume: bool = True) -> list[Job]:
    """The training jobs: each variant that trains x each seed, with `changes`, in `folder(name, seed)`."""
    return [Job(v, int(s), folder(v.name, int(s)), base.replace(**{**v.overrides, **(changes or {}), "seed": int(s)}),
                resume) for v in variants if not v.train_as for s in seeds]


def subset_root(budget: Budget, base: SSPLConfig, root: Path) -> Path:
    """A data root with the first n_train / n_val samples of train / val; the profile's own without them."""
    if not budget.n_train and not budget.n_val:
        return resolve(base.data_root)
    from ..data.h5 import H5Writer, load_split

    src = resolve(base.data_root)
    stamp = ":".join(f"{(src / f'{sp}.h5').resolve()}:{(src / f'{sp}.h5').stat().st_size}:"
                     f"{(src / f'{sp}.h5').stat().st_mtime_ns}" for sp in ("train", "val"))
    out = root / "data" / f"train{budget.n_train}_val{budget.n_val}_{hashlib.sha1(stamp.encode()).hexdigest()[:8]}"
    for split, n in (("train", budget.n_train), ("val", budget.n_val)):
        path = out / f"{split}.h5"
        if path.is_file():
            continue
        keys = ["frames", "spects", "ids", "label", "boxes"]
        d = load_split(src / f"{split}.h5", keys)
        n = n or len(d["ids"])
        with H5Writer(path, attrs={**d["attrs"], "subset_of": str(src / f"{split}.h5"), "subset_n": n}) as w:
            w.append({k: d[k][:n] for k in keys})
    return out
