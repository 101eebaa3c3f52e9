"""Flow-matching noise and diffusion-forcing schedules.

Noise: rectified flow. A clean latent x0 and Gaussian noise n give x_t = (1 - s) x0 + s n with
s = sigma(t) = t / T; the model predicts the flow v = n - x0, so x0 = x_t - s v. Few-step lists
are warped by a shift: s' = shift * s / (1 + (shift - 1) s) (shift 5 turns [1000, 750, 500, 250]
into [1000, 937.5, 833.3, 625]).

Schedule: data, not a loop. An engine step is one forward of the model over a contiguous run of
latent frames, each at its own timestep. Frames enter as pure noise, are denoised step by step
(predict x0, re-noise to their next timestep, as in Self-Forcing), and when a block is finished
one more step at t = 0 commits its clean keys/values to the cache. Block `b` starts `ar_step`
denoising steps after block `b - 1`; that single number spans the field's schedules:

- block-by-block (Self-Forcing, CausVid, LongLive): ar_step = number of steps, one block in flight;
- lagged "pyramid" (SkyReels-V2 diffusion forcing): 1 <= ar_step < steps;
- rolling window (Rolling Forcing): ar_step = 1, so `steps` blocks are in flight at staggered noise
  levels, the oldest finishing (and being committed) at every step while a fresh block enters.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

# The table's marker for "this frame is not part of this engine step".
ABSENT = -1.0


def shift_timesteps(timesteps: list[float], shift: float, num_train_timesteps: int = 1000) -> list[float]:
    """Warp timesteps through the flow-matching shift: s' = shift*s / (1 + (shift-1)*s)."""
    out = []
    for t in timesteps:
        s = t / num_train_timesteps
        out.append(num_train_timesteps * shift * s / (1 + (shift - 1) * s))
    return out


@dataclass(frozen=True)
class FlowMatch:
    """Rectified-flow noise maths; timesteps are in [0, num_train_timesteps]."""

    num_train_timesteps: int = 1000

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return t / self.num_train_timesteps

    @staticmethod
    def _per_frame(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # s: (F,) or (B, F) per latent frame -> broadcastable to x (B, C, F, H, W)
        s = s.to(x.dtype).to(x.device)
        if s.ndim == 1:
            s = s[None]
        return s[:, None, :, None, None]

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self._per_frame(self.sigma(t), x0)
        return (1 - s) * x0 + s * noise

    def to_x0(self, x_t: torch.Tensor, flow: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x_t - self._per_frame(self.sigma(t), x_t) * flow

    def to_noise(self, x_t: torch.Tensor, flow: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noise the flow implies: n = x_t + (1 - s) v."""
        return x_t + (1 - self._per_frame(self.sigma(t), x_t)) * flow

    @staticmethod
    def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the model is trained to predict."""
        return noise - x0


@dataclass(frozen=True)
class Step:
    """One engine step: one forward over latent frames [start, stop).

    t: (F,) timestep fed to the model per frame; all zero on a commit step.
    t_next: (F,) the timestep each frame is re-noised to after the step; 0 means the frame is
        finished by this step (its x0 prediction is final). Unused on a commit step.
    denoise_index: (F,) how many denoising steps each frame has had before this one (it picks
        the fresh noise used to re-noise, so noise does not depend on the schedule's layout).
    """

    start: int
    stop: int
    t: torch.Tensor
    t_next: torch.Tensor
    denoise_index: torch.Tensor
    commit: bool

    @property
    def frames(self) -> range:
        return range(self.start, self.stop)

    @property
    def finished(self) -> range:
        """Frames whose final clean latents this (denoising) step produces."""
        if self.commit:
            return range(self.start, self.start)
        done = (self.t_next == 0).nonzero().flatten()
        if len(done) == 0:
            return range(self.start, self.start)
        return range(self.start + int(done[0]), self.start + int(done[-1]) + 1)


class Schedule:
    """Per-frame timesteps for every engine step of a stream (see the module docstring)."""

    def __init__(self, timesteps: list[float], block_frames: int, ar_step: int) -> None:
        if not timesteps:
            raise ValueError("a schedule needs at least one timestep")
        if any(b >= a for a, b in zip(timesteps, timesteps[1:])):
            raise ValueError(f"timesteps must strictly decrease, got {timesteps}")
        if block_frames < 1 or ar_step < 1:
            raise ValueError("block_frames and ar_step must be >= 1")
        self.timesteps = [float(t) for t in timesteps]
        self.block_frames = block_frames
        self.ar_step = min(ar_step, len(timesteps))

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def blocks_in_flight(self) -> int:
        """The most blocks denoised together in one forward."""
        return math.ceil(self.num_steps / self.ar_step)

    @property
    def max_chunk_frames(self) -> int:
        return self.blocks_in_flight * self.block_frames

    def num_blocks(self, num_frames: int) -> int:
        return math.ceil(num_frames / self.block_frames)

    def steps(self, num_frames: int) -> Iterator[Step]:
        """Yield the engine steps that generate latent frames [0, num_frames), in order.

        After the denoising step that finishes block b comes the commit step of block b, except
        for the last block: no later frame would read what it commits. (A resumed run skips the
        steps it has done: the step list is the same for the same `num_frames`.)
        """
        n, k = self.num_steps, self.block_frames
        blocks = self.num_blocks(num_frames)
        last_step = (blocks - 1) * self.ar_step + n - 1
        for i in range(last_step + 1):
            # Blocks in flight at denoising step i: those with 0 <= i - b*ar_step < n.
            b_lo = max(0, math.ceil((i - n + 1) / self.ar_step))
            b_hi = min(blocks - 1, i // self.ar_step)
            start, stop = b_lo * k, min((b_hi + 1) * k, num_frames)
            level = torch.empty(stop - start, dtype=torch.long)
            for b in range(b_lo, b_hi + 1):
                lo, hi = b * k - start, min((b + 1) * k, num_frames) - start
                level[lo:hi] = i - b * self.ar_step
            ts = torch.tensor(self.timesteps + [0.0])
            yield Step(start, stop, ts[level], ts[level + 1], level, commit=False)
            if level[0] == n - 1 and b_lo < blocks - 1:  # the oldest block in flight is finished: commit it
                c_stop = min((b_lo + 1) * k, num_frames)
                zeros = torch.zeros(c_stop - start)
                yield Step(start, c_stop, zeros, zeros, torch.full((c_stop - start,), n), commit=True)

    def table(self, num_frames: int) -> torch.Tensor:
        """(num_steps, num_frames) timestep of each frame at each engine step, ABSENT if the
        frame is not in that step. Rows with zeros are commit steps."""
        rows = []
        for step in self.steps(num_frames):
            row = torch.full((num_frames,), ABSENT)
            row[step.start : step.stop] = step.t
            rows.append(row)
        return torch.stack(rows)


def make_schedule(kind: str, timesteps: list[float], block_frames: int, shift: float,
                  ar_step: int = 1, num_train_timesteps: int = 1000) -> Schedule:
    """Build a schedule from its config: kind 'block', 'lagged' or 'rolling'."""
    warped = shift_timesteps(timesteps, shift, num_train_timesteps)
    if kind == "block":
        ar = len(warped)
    elif kind == "lagged":
        ar = ar_step
    elif kind == "rolling":
        ar = 1
    else:
        raise ValueError(f"unknown schedule kind {kind!r}: use block, lagged or rolling")
    return Schedule(warped, block_frames, ar)
