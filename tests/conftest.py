"""Shared pytest fixtures."""

import pytest


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory):
    """A tiny synthetic benchmark folder (64-px frames), generated once per test session."""
    from sspl_lib.data.synthetic import generate_benchmark

    return generate_benchmark(tmp_path_factory.mktemp("synth") / "tiny", seed=3, n_train=40, n_val=8, n_test=24,
                              n_labeled=16, frame_size=64, workers=1, chunk=16, progress=False)
