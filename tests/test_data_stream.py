"""sspl_lib.data.stream: the train stream read from disk (persistent workers) equals the in-memory stream."""

from __future__ import annotations

import pytest
import torch

from sspl_lib.data import stream as train_data
from sspl_lib.distributed import DistInfo


def _epochs(stream, n=2):
    return [[(f.clone(), s.clone()) for f, s in stream(e)] for e in range(n)]


@pytest.mark.parametrize("workers", [0, 2])
def test_disk_stream_equals_memory_stream_and_keeps_its_workers(tiny_benchmark, monkeypatch, workers):
    path = tiny_benchmark / "train.h5"
    mem = train_data.TrainStream(path, batch_size=8, seed=3, info=DistInfo(), workers=workers)
    assert mem.mem is not None
    monkeypatch.setattr(train_data, "IN_MEMORY_BYTES", -1)  # force the DataLoader path
    disk = train_data.TrainStream(path, batch_size=8, seed=3, info=DistInfo(), workers=workers)
    assert disk.mem is None
    want, got = _epochs(mem), _epochs(disk)
    assert len(got[0]) == len(got[1]) == disk.steps == 5
    for a, b in zip(sum(want, []), sum(got, [])):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(got[0][0][0], got[1][0][0])  # the epochs differ (a new order)
    loader = disk.loader()
    assert loader is disk._loader  # one loader for the run
    if workers:
        it = loader._iterator  # persistent workers: the same worker processes serve every epoch
        pids = [w.pid for w in it._workers]
        next(iter(disk(2)))  # a third epoch, abandoned after one batch
        assert loader._iterator is it and [w.pid for w in it._workers] == pids
        assert len(_epochs(disk, 1)[0]) == 5  # the next epoch starts clean after the abandoned one
