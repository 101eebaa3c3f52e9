"""The training scripts' own pieces that decide what the built-in model learns (scripts/)."""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from trainutil import motion_loss  # noqa: E402

from longvid.vae import from_uint8  # noqa: E402
from longvid.world import SceneSpec, draw  # noqa: E402


def _moving_square(positions: list[float]) -> torch.Tensor:
    """(1, 3, F, 32, 32) in [-1, 1]: a white square at x = positions[f]."""
    spec = SceneSpec(shape="square", colour="white", background="black", size="small")
    frames = np.zeros((len(positions), 32, 32, 3), np.uint8)
    for f, x in enumerate(positions):
        draw(frames[f], spec, np.array([[x, 16.0]]))
    return from_uint8(frames[None])


def test_motion_loss_compares_frame_to_frame_changes():
    truth = _moving_square([8, 10, 12, 14, 16])
    weight = torch.ones_like(truth[:, :1])
    assert motion_loss(truth, truth, weight) == 0
    # A steady colour error is the per-frame losses' business, not this one's...
    assert motion_loss(truth + 0.1, truth, weight) < 1e-6
    # ...an object that stands still, or moves in the wrong pattern, is.
    for wrong in ([8, 8, 8, 8, 8], [8, 13, 14, 15, 16]):
        assert motion_loss(_moving_square(wrong), truth, weight) > 0.02
    # Object pixels weigh more than background pixels.
    lurch = _moving_square([8, 13, 14, 15, 16])
    assert motion_loss(lurch, truth, 1 + 9 * (truth > 0).float()) > motion_loss(lurch, truth, weight)
