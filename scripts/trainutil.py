"""Shared by the training scripts: resumable checkpoints, loss logs, progress, and the image
losses both the autoencoder and (through the frozen decoder) the generator train with. Never
imported by the library."""

from __future__ import annotations

import csv
import dataclasses
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from longvid.autoencoder import binomial_blur  # noqa: E402
from longvid.errors import LongvidError  # noqa: E402
from longvid.world import COLOURS, MOTIONS, SHAPES, SceneSpec, draw  # noqa: E402  (after the path: scripts/ run from anywhere)


class Run:
    """A training run directory: `ckpt.pt` (model, optimiser, step, RNG), `loss.csv`, `log.txt`.

    Checkpoints are written atomically, so an interrupted run resumes from the last one."""

    def __init__(self, directory: str | Path, fields: list[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ckpt = self.dir / "ckpt.pt"
        self.fields = ["step", "elapsed_s"] + fields
        self.loss_path = self.dir / "loss.csv"
        self.t0 = time.time()
        self.elapsed_before = 0.0

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(self.dir / "log.txt", "a") as f:
            f.write(line + "\n")

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t0

    def record(self, step: int, **values: float) -> None:
        new = not self.loss_path.exists()
        with open(self.loss_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            if new:
                w.writeheader()
            w.writerow({"step": step, "elapsed_s": round(self.elapsed, 1),
                        **{k: f"{v:.6g}" for k, v in values.items()}})

    def save(self, step: int, **objects) -> None:
        state = {"step": step, "elapsed_s": self.elapsed,
                 "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                         "python": random.getstate()}}
        for name, obj in objects.items():
            state[name] = obj.state_dict() if hasattr(obj, "state_dict") else obj
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt)

    def resume(self, **objects) -> int:
        """Load the last checkpoint into `objects` (things with load_state_dict); returns the
        step to continue from (0 if none)."""
        if not self.ckpt.exists():
            return 0
        state = torch.load(self.ckpt, map_location="cpu", weights_only=False)  # our own file
        for name, obj in objects.items():
            if name in state and hasattr(obj, "load_state_dict"):
                obj.load_state_dict(state[name])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        self.elapsed_before = state.get("elapsed_s", 0.0)
        self.log(f"resumed from step {state['step']} ({self.elapsed_before / 60:.1f} min trained)")
        return int(state["step"])

    def extra(self, name: str):
        if not self.ckpt.exists():
            return None
        return torch.load(self.ckpt, map_location="cpu", weights_only=False).get(name)


def warmup_cosine(step: int, base_lr: float, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `floor` * base_lr at `total`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * p)))


def hinge_critic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """A critic's hinge loss: true samples' logits pushed above +1, the model's below -1 (the
    model's own adversarial loss is then -fake_logits.mean())."""
    return torch.relu(1 - real_logits).mean() + torch.relu(1 + fake_logits).mean()


def object_pixel_weight(x: torch.Tensor, object_weight: float, halo_weight: float = 0.0,
                        halo_px: int = 4) -> torch.Tensor:
    """Per-pixel loss weight (B, 1, F, H, W) of video x (B, 3, F, H, W): `object_weight` where a
    pixel differs from its frame's median colour (the background), 1 elsewhere. With
    `halo_weight`, the ring of background `halo_px` pixels wide around each object weighs that
    much: a decoder that draws a dark or bright halo there fills the corners of the object's box."""
    background = x.flatten(3).median(dim=3).values[..., None, None]
    mask = ((x - background).abs().amax(dim=1, keepdim=True) > 0.1).float()
    weight = 1 + (object_weight - 1) * mask
    if halo_weight:
        grown = torch.nn.functional.max_pool3d(mask, (1, 2 * halo_px + 1, 2 * halo_px + 1), 1, (0, halo_px, halo_px))
        weight = weight + (halo_weight - 1) * (grown - mask)
    return weight


def edge_loss(y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted L1 between the horizontal and vertical image gradients of y and x: a plain
    L1/MSE is content with a round blob where the truth has a corner."""
    total = 0.0
    for dim in (3, 4):
        dy, dx = y.diff(dim=dim), x.diff(dim=dim)
        w = weight.narrow(dim, 0, dy.shape[dim])
        total = total + (w * (dy - dx).abs()).mean() / w.mean()
    return total


def motion_loss(y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted L1 between the frame-to-frame differences of y and x: per-frame losses let the
    decoder put the 4 frames of a latent frame anywhere between its neighbours' positions (the
    object then lurches and circles become polygons), this one asks for the true motion."""
    w = torch.maximum(weight[:, :, 1:], weight[:, :, :-1])
    return (w * (y.diff(dim=2) - x.diff(dim=2)).abs()).mean() / w.mean()


def object_track(video: torch.Tensor, background: torch.Tensor, floor: float = 0.1,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft centroid of what differs from the background, per frame: (B, F, 2) in pixel indices (x, y)
    and the mass behind it (B, F). `video` (B, 3, F, H, W) and `background` (B, 3, 1 or F, 1, 1)
    in [-1, 1] (per frame: a clip's background may switch); differences under `floor` (summed
    over channels) count as background."""
    mass = torch.relu((video - background).abs().sum(dim=1) - floor)  # (B, F, H, W)
    h, w = video.shape[-2:]
    ys = torch.arange(h, dtype=video.dtype, device=video.device)
    xs = torch.arange(w, dtype=video.dtype, device=video.device)
    total = mass.sum(dim=(2, 3))
    cx = (mass.sum(dim=2) * xs).sum(dim=2) / total.clamp_min(1e-6)
    cy = (mass.sum(dim=3) * ys).sum(dim=2) / total.clamp_min(1e-6)
    return torch.stack([cx, cy], dim=-1), total


def track_loss(y: torch.Tensor, x: torch.Tensor, background: torch.Tensor, min_mass: float = 20.0) -> torch.Tensor:
    """Where the object is, frame by frame, in pixels: |centroid(y) - centroid(x)| plus the error
    of the path's second differences (its turns). A polygon drawn for a circle is within a pixel
    of it (pixel losses barely see it), but its turns come in bursts, which is what reads as
    bouncing rather than circling. Frames where the true object is (almost) absent are left out,
    and so are second differences across them."""
    path_y, _ = object_track(y, background)
    path_x, mass = object_track(x, background)
    valid = (mass >= min_mass).to(x.dtype)  # (B, F)
    err = (path_y - path_x).abs().sum(dim=-1)
    position = (valid * err).sum() / valid.sum().clamp_min(1.0)
    v2 = valid[:, 2:] * valid[:, 1:-1] * valid[:, :-2]
    turn_err = (path_y.diff(n=2, dim=1) - path_x.diff(n=2, dim=1)).abs().sum(dim=-1)
    turn = (turn_err * v2).sum() / v2.sum().clamp_min(1.0)
    return position + turn


class ShapeProbe(torch.nn.Module):
    """Latent frames (N, C, h, w) -> shape logits (N, len(SHAPES))."""

    def __init__(self, channels: int, width: int = 64) -> None:
        super().__init__()
        act = torch.nn.GELU()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(channels, width, 3, padding=1), act,
            torch.nn.Conv2d(width, width, 3, padding=1), act,
            torch.nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), act,
            torch.nn.Conv2d(2 * width, 2 * width, 3, padding=1), act,
            torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(),
            torch.nn.Linear(2 * width, len(SHAPES)))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)


def load_probe(path: str) -> ShapeProbe:
    state = torch.load(path, map_location="cpu", weights_only=True)
    probe = ShapeProbe(int(state["net.0.weight"].shape[1]))
    probe.load_state_dict(state)
    return probe.eval().requires_grad_(False)


def blur_latents(x: torch.Tensor, share: float | torch.Tensor) -> torch.Tensor:
    """(B, C, F, h, w) latents with `share` of a 3x3 binomial blur (per channel and frame) mixed in;
    `share` is one number or one per sample, shape (B,). What a generator trained on a mean makes
    of a latent block (docs/training.md, session 12), so also a training augmentation."""
    blurred = binomial_blur(x)
    if torch.is_tensor(share):
        share = share.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return (1 - share) * x + share * blurred


def random_blur(x: torch.Tensor, max_share: float) -> torch.Tensor:
    """`blur_latents` with a share drawn from U(0, `max_share`) on 3 in 4 samples (the rest kept
    sharp): the training augmentation of both the autoencoder (blurred latents -> the sharp frame)
    and the generator (a blurred context -> the sharp next block)."""
    if not max_share:
        return x
    return blur_latents(x, torch.rand(x.shape[0]) * max_share * (torch.rand(x.shape[0]) < 0.75))


def parse_motion_values(items: list[str], form: str) -> dict[str, float]:
    """The scripts' MOTION=VALUE options: ["circling=2"] -> {"circling": 2.0}. A ValueError names
    the bad item and the expected `form`; each option adds its own bounds and way of failing."""
    values = {}
    for item in items:
        motion, _, value = item.partition("=")
        if motion not in MOTIONS:
            raise ValueError(f"{item}: unknown motion {motion!r}; use one of {', '.join(MOTIONS)}")
        try:
            values[motion] = float(value)
        except ValueError:
            raise ValueError(f"{item}: write {form}") from None
    return values


def parse_focus(items: list[str]) -> dict[str, object]:
    """The scripts' ATTRIBUTE=VALUE focus, e.g. ["shape=square", "background=gray"] -> {"shape":
    "square", "background": "gray"}: attributes of `SceneSpec` that some draws are forced to. A
    ValueError names the bad item and the fix."""
    focus: dict[str, object] = {}
    names = [f.name for f in dataclasses.fields(SceneSpec)]
    for item in items:
        name, _, value = item.partition("=")
        if name not in names or not value:
            raise ValueError(f"{item}: write ATTRIBUTE=VALUE with ATTRIBUTE one of {', '.join(names)}, "
                             "e.g. shape=square")
        if name in focus:
            raise ValueError(f"{item}: {name} is named twice")
        focus[name] = int(value) if name == "count" and value.isdigit() else value
    try:
        dataclasses.replace(SceneSpec(), **focus)
    except LongvidError as error:
        raise ValueError(str(error)) from None
    return focus


# A shape channel reads SHAPE_LEVEL where a cell is all object of its shape (before the latent
# statistics normalise it): at 1 the decoder's inputs from it, starting at zero, learnt ~7x slower
# than its other inputs had (session 27)
SHAPE_LEVEL = 4.0


def object_cover(spec: SceneSpec, positions: np.ndarray, size: int) -> np.ndarray:
    """(size, size) float32 in [0, 1]: how much of each pixel the objects of `spec` at `positions`
    (K, 2; NaN rows absent) cover, anti-aliased as the world draws them."""
    out = np.zeros((size, size, 3), np.uint8)
    mask_spec = dataclasses.replace(spec, colour="white", background="black")
    draw(out, mask_spec, positions[~np.isnan(positions).any(1)])
    return out[..., 0].astype(np.float32) / COLOURS["white"][0]


def shape_maps(cover: torch.Tensor, shapes: torch.Tensor, factor: int, tf: int) -> torch.Tensor:
    """What `--shape-channels` asks the encoder to write in its shape channels: for each latent
    frame (its newest pixel frame, as the colour path) and each world shape, the share of each
    latent cell covered by objects of that shape, times SHAPE_LEVEL. Object coverage (B, 4T-3,
    H, W) with the frames' shapes (B, 4T-3) -> (B, len(SHAPES), T, H/factor, W/factor)."""
    cover = torch.nn.functional.avg_pool2d(cover[:, ::tf], factor)  # pixel frame 4j: latent j's newest
    onehot = torch.nn.functional.one_hot(shapes[:, ::tf], len(SHAPES)).float()  # (B, T, S)
    return SHAPE_LEVEL * torch.einsum("bthw,bts->bsthw", cover, onehot)
