"""Sharded extraction under torch.distributed (2 CPU processes, gloo) equals a single process."""

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from elit_bench.data.digits import load_digits_split, render_uint8
from elit_bench.distributed import shard_range
from elit_bench.metrics import ArraySamples, extract_features, get_extractor

NUM = 23  # odd, so the two shards differ in size


def samples():
    return ArraySamples(render_uint8(torch.from_numpy(load_digits_split()["heldout_x"][:NUM]), 16).numpy())


def _worker(rank, world, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        feats = extract_features(get_extractor("digits-cnn"), samples(), ("penultimate", "logits"), batch_size=5)
        np.savez(out_dir / f"rank{rank}.npz", **feats)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("num, world", [(23, 2), (10, 3), (3, 4), (0, 2)])
def test_shards_cover_every_item_once(num, world):
    ranges = [shard_range(num, r, world) for r in range(world)]
    assert [i for a, b in ranges for i in range(a, b)] == list(range(num))
    assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1


def test_sharded_extraction_equals_single_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, tmp_path), nprocs=2)
    single = extract_features(get_extractor("digits-cnn"), samples(), ("penultimate", "logits"), batch_size=5)
    for rank in range(2):
        with np.load(tmp_path / f"rank{rank}.npz") as gathered:
            for name, expected in single.items():
                assert gathered[name].dtype == np.float64 and gathered[name].shape == expected.shape
                np.testing.assert_allclose(gathered[name], expected, rtol=1e-5, atol=1e-5)
