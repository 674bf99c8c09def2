"""Shared pytest fixtures."""

import pytest


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory):
    """A tiny synthetic benchmark folder (64-px frames), generated once per test session."""
    from sspl_lib.data.synthetic import generate_benchmark

    return generate_benchmark(tmp_path_factory.mktemp("synth") / "tiny", seed=3, n_train=40, n_val=8, n_test=24,
                              n_labeled=16, frame_size=64, workers=1, chunk=16, progress=False)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`pytest -n N` (make test) hands out whole test files, and the notebooks as one unit, in order (01 writes the
    data 02 trains on, 03 scores 02's runs): xdist's own --dist loadgroup cannot tag items under pytest 9."""
    from xdist.scheduler import LoadScopeScheduling

    class FilesAndNotebooks(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "notebooks" if nodeid.startswith("notebooks/") else nodeid.split("::", 1)[0]

    return FilesAndNotebooks(config, log)
