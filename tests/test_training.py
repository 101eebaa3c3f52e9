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


def test_sampler_states_follow_the_engine_sampler_to_each_level():
    """With a model that always predicts the true x0, the sampler's state at level j is the true
    latent noised to steps_t[j] with the starting noise (predicted re-noise keeps it); level 0 is
    pure noise; context frames are never touched; the velocity target then asks for x0."""
    from train_generator import sampler_states, velocity_target

    from longvid.schedule import FlowMatch

    flow, steps_t = FlowMatch(), [1000.0, 937.5, 833.3, 625.0]
    B, C, F = 4, 2, 5
    x0 = torch.randn(B, C, F, 3, 3)
    target = torch.zeros(B, F, dtype=torch.bool)
    target[:, 3:] = True
    x_in = x0 + 0.01 * torch.randn_like(x0)  # the noised context (and anything on the target)
    levels = torch.tensor([0, 1, 2, 3])

    def oracle(x, t, **_):
        s = flow.sigma(t)[:, None, :, None, None].clamp_min(1e-6)
        return (x - x0) / s

    torch.manual_seed(0)
    states = sampler_states(oracle, x_in, target, levels, steps_t, flow, predicted=True)
    torch.manual_seed(0)
    start = torch.randn_like(x_in)
    tgt = target[:, None, :, None, None]
    assert torch.equal(torch.where(tgt, 0.0, states), torch.where(tgt, 0.0, x_in))
    for i, j in enumerate(levels.tolist()):
        t = torch.full((1, F), steps_t[j])
        expected = flow.add_noise(x0[i : i + 1], start[i : i + 1], t)[:, :, 3:]
        torch.testing.assert_close(states[i : i + 1, :, 3:], expected, atol=1e-5, rtol=1e-5)
        sigma = flow.sigma(t)[:, None, :, None, None]
        torch.testing.assert_close(velocity_target(expected, x0[i : i + 1, :, 3:], sigma[:, :, 3:]),
                                   start[i : i + 1, :, 3:] - x0[i : i + 1, :, 3:], atol=1e-4, rtol=1e-4)
