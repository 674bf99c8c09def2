"""Seed study: trains each seed once (reuses finished runs), evaluates with the audio controls, aggregates."""

import pytest

from sspl_lib.config import SSPLConfig
from sspl_lib.pretrain import pretrain
from sspl_lib.seeds import run_seeds, summarize, table


@pytest.fixture(scope="module")
def base(tiny_benchmark):
    cfg = SSPLConfig(img_size=48, visual_dim=16, encoder_width=8, audio_hidden=32, out_dim=16, proj_dim=32,
                     pred_hidden=16, pcm_cycles=1, data_root=str(tiny_benchmark), epochs=1, batch_size=16,
                     lr_pcm=1e-3, lr_sound=1e-3, lr_head=1e-3, workers=0, threads=1, pretrain_epochs=1,
                     pretrain_batch_size=8)
    return cfg.replace(encoders_checkpoint=str(pretrain(cfg, tiny_benchmark, progress=False)))


def test_seed_study(base, tmp_path):
    per_seed = run_seeds(base, (3, 4), tmp_path)
    assert set(per_seed) == {3, 4}
    keys = {f"{s}_{a}" for s in ("test_single", "test_multi") for a in ("matched", "shuffled", "center_prior")}
    assert set(per_seed[3]) == keys and all(0.0 <= v <= 1.0 for v in per_seed[3].values())
    assert (tmp_path / "seed3" / "checkpoints" / "best.pt").is_file()
    assert per_seed[3]["test_single_center_prior"] == per_seed[4]["test_single_center_prior"]  # no model in it
    stamp = (tmp_path / "seed3" / "checkpoints" / "best.pt").stat().st_mtime_ns
    assert run_seeds(base, (3,), tmp_path)[3] == per_seed[3]  # reused, not retrained
    assert (tmp_path / "seed3" / "checkpoints" / "best.pt").stat().st_mtime_ns == stamp
    mean, std = summarize(per_seed)["test_single_matched"]
    vals = [per_seed[s]["test_single_matched"] for s in (3, 4)]
    assert mean == pytest.approx(sum(vals) / 2) and std == pytest.approx(abs(vals[0] - vals[1]) / 2)
    assert table(per_seed).splitlines()[-1].startswith("| mean ± std |")
