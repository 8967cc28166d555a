"""Trainer checkpoints are written atomically with the user's umask mode."""
from __future__ import annotations

import os
import stat

import torch

from weightzip.training.checkpoint import load_checkpoint, save_checkpoint


def test_checkpoint_gets_the_umask_mode_and_round_trips(tmp_path):
    old = os.umask(0o022)
    try:
        p = save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(2)}, "epoch": 3})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    ck = load_checkpoint(p)
    assert ck["epoch"] == 3 and torch.equal(ck["model"]["w"], torch.ones(2))
    assert [q.name for q in tmp_path.iterdir()] == ["c.pt"]
