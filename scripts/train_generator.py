"""Stage 3 of the built-in model: the causal Wan generator, trained to do what inference does.

    python scripts/train_generator.py                  # train (resumes if interrupted)
    python scripts/train_generator.py --export-only    # write the safetensors from the checkpoint

Every training sample is one inference step. The engine generates block b while attending to
the sink (first S frames), the window (last W frames) and the block itself, with RoPE positions
"compact" (sink just before the window), so a sample is exactly that sequence:

    slots: [ sink (S) | window (W) | target block (k) ]      positions 0 .. S+W+k-1

(for early blocks the frames are simply 0 .. n+k-1). Context frames are clean (t = 0, as the
cache's commit pass), the target is noised to one of the inference timesteps, and the mask is
the cache's own visibility rule (`cache.frame_mask`): the same sink + window attention, block
size and few-step schedule as inference.

Prompts follow KV-recache semantics: the window and target frames carry the current prompt (a
switch re-encodes the window), the sink carries the prompt it was made under. Against drift and
exposure bias: a little noise on context frames, and (after warm-up) a no-grad pre-pass that
replaces the context by the model's own x0 predictions from the last denoising level, so the
model learns to continue from its own imperfect frames, not only from perfect ones. Clips with
switches are oversampled right after the switch, where the model must change attributes while
the scene carries on.

`--pixel-weight` adds a loss where the picture is: the target block's predicted x0, decoded by
the frozen autoencoder, against the true latents decoded (L1 + image gradients + frame-to-frame
differences, objects weighted), on a crop around the object. A latent MSE weighs every latent
direction alike, but a few of them decide whether the decoder draws a corner or a round blob.

`--adv-weight` adds an adversarial loss (the idea of adversarial post-training and of the GAN
variant of Self-Forcing): a small patch critic on latent blocks (the frame before the block and
the block, conditioned on the prompt) learns to tell the true blocks from the model's x0, and the
model is pushed towards blocks it cannot tell apart. An MSE-trained few-step model returns
conditional means, soft where the data is sharp (corners, motion inside a latent frame); the
critic's loss is the one that cares about that difference.

`--pixel-adv-weight` puts the critic where `longvid eval` looks: a shape-conditioned patch critic
on the decoded crops of the target block (the `--pixel-weight` windows), judging only the samples
at the last denoising level, the x0 the viewer sees. `--last-level-share` puts that share of
samples there (with `--rollout-prob`, reached by the model's own sampler, as at inference).

`--shape-weight` asks the latent shape probe of `scripts/train_shape_probe.py` (trained on true
latents) to read the prompted shape in every frame of the target block's x0 (cross-entropy). Left
to the latent MSE, the model draws one blob for all three shapes: the pixels where they differ are
too few to matter in it.

`--context-blur` blurs the context (sink and window) of 3 in 4 samples by a random share while the
target stays sharp. From nothing the model draws a square as a squircle, and later blocks copy the
squircle they are given; a soft context with a sharp target teaches it to restore the corners.

`--pair-weight` uses shards made with `prepare_latents.py --partners`, where every clip also
exists with its shapes exchanged along the same trajectory. For a few samples a step, the target
block is noised twice with the same noise, once from the clip and once from its partner, under
the clip's context, and captioned with the clip's and the partner's shape (a shape switch at the
block, KV-recache semantics). The model's two predictions must differ as the two true blocks do,
measured against the size of that difference, so the few latent cells where a square and a
circle part count as much as a whole block does in the plain loss, where they are lost.

`--corner-weight` judges the decoded target block at the last inference level (as the pixel
critic does) by how much of its box's corners the object fills, `longvid eval`'s own test of a
square, measured about the object's own centroid and extent (`corner_cover`). A pixel or latent
loss against the true block pays the model for hedging over where the object will be, and the
mean of a square over a few places is a rounded square; this one asks for the true corners
wherever the model put the object. `--corner-levels all` judges the x0 predicted at every level
instead: with the deterministic sampler the first level's x0 already decides the shape that the
later levels refine.

`--own-window` goes one step further, across blocks: on a share of steps the window's last
blocks are the model's own, sampled block by block from the context before them as a rollout
leaves them, and the model is still asked for the true next block. A one-block prediction from
the true context bounces almost as the world does, but free-running rollouts round the bounces
(docs/training.md, "Session 39"): this shows the model its own blocks in the window. Tried in
session 39 with the true block as the target, it made motion worse on every timeline (a window
that has drifted from the truth teaches the model to hedge). `--own-window-mse 0` with
`--adv-weight` is that target: the rolled samples leave the flow loss, the sampler takes their
block to the last level (the x0 the viewer sees, gradient through the last step as in
Self-Forcing) and the latent critic alone judges it, behind the model's own frame, against true
blocks behind true frames (`--no-critic-before`: the blocks alone): a distribution-level loss
that asks the block to continue the model's own window as the world would, not to return to the
true path. Tried in session 41, with the frame before and without, it did not straighten the
bounces (docs/training.md, "Session 41").

`--rollout-prob` trains, on that share of steps, from the states the engine's own few-step
sampler reaches (Self-Forcing's idea inside a block): the target block starts as pure noise and
the model's earlier denoising steps (no grad) bring it to the level being trained, instead of
fresh noise on the true latents. The model is asked for the true x0 from there, so later steps
learn to correct the earlier ones rather than add their own error.
"""

from __future__ import annotations

import argparse
import copy
import glob

import numpy as np
import torch

from trainutil import (REPO, Run, edge_loss, hinge_critic_loss, load_probe, motion_loss, object_pixel_weight,
                       parse_motion_values, random_blur, warmup_cosine)

from longvid.api import cpu_has_native_bf16
from longvid.cache import frame_mask
from longvid.config import load_config, weight_path
from longvid.evaluate import CORE_SHARE
from longvid.loading import load_autoencoder, load_into, load_minilm, read_state_dict, save_safetensors
from longvid.model import build_transformer
from longvid.schedule import FlowMatch, make_schedule
from longvid.text import HFTextEncoder
from longvid.world import SHAPES, SceneSpec, caption


class CaptionBank:
    """Caption text -> MiniLM embedding (L, 384), computed once per distinct caption."""

    def __init__(self, encoder: HFTextEncoder) -> None:
        self.encoder = encoder
        self.bank: dict[str, torch.Tensor] = {}

    def embed(self, captions: list[str]) -> torch.Tensor:
        missing = sorted({c for c in captions if c not in self.bank})
        for i in range(0, len(missing), 64):
            chunk = missing[i : i + 64]
            for c, e in zip(chunk, self.encoder.encode(chunk)):
                self.bank[c] = e.half()
        return torch.stack([self.bank[c].float() for c in captions])


class Data:
    def __init__(self, pattern: str) -> None:
        files = sorted(glob.glob(pattern))
        if not files:
            raise SystemExit(f"no latent shards match {pattern}: run scripts/prepare_latents.py first")
        shards = [torch.load(f, weights_only=False) for f in files]
        self.latents = torch.cat([s["latents"] for s in shards])  # (N, T, C, h, w) fp16
        self.segments = torch.cat([s["segments"] for s in shards])  # (N, T)
        self.specs = [[SceneSpec(**d) for d in clip] for s in shards for clip in s["specs"]]
        self.n, self.t = self.segments.shape
        # prepare_latents.py --partners: every clip again with its shapes exchanged
        paired = all("partner_latents" in s for s in shards)
        self.partner_latents = torch.cat([s["partner_latents"] for s in shards]) if paired else None
        self.partner_specs = [[SceneSpec(**d) for d in clip] for s in shards for clip in s["partner_specs"]] if paired else None


def sampler_setup(cfg) -> tuple[int, int, int, list[float], FlowMatch]:
    """From a config: sink frames, window frames, block frames, the engine sampler's timesteps and
    its flow, which training, the teacher-forced check and the decoder tuning all share."""
    S, W, k = cfg.cache.sink_frames, cfg.cache.window_frames, cfg.schedule.block_frames
    sc = cfg.schedule
    steps_t = make_schedule(sc.kind, list(sc.timesteps), k, sc.shift, sc.ar_step, sc.num_train_timesteps).timesteps
    return S, W, k, steps_t, FlowMatch(sc.num_train_timesteps)


def segment_captions(data: Data, clips, seg_of_slot: torch.Tensor, rng: np.random.Generator,
                     dropout: float = 0.0) -> tuple[list[str], torch.Tensor]:
    """One freshly phrased caption per (sample, segment) and each slot's row in that list (B, slots).
    With probability `dropout` a sample gets the empty caption in every slot (caption dropout: the
    unconditional prediction that classifier-free guidance needs)."""
    B, slots = seg_of_slot.shape
    keys, index, caps = {}, torch.zeros(B, slots, dtype=torch.long), []
    unconditional = rng.random(B) < dropout
    for i in range(B):
        for s in range(slots):
            key = (i, int(seg_of_slot[i, s]))
            if key not in keys:
                keys[key] = len(caps)
                caps.append("" if unconditional[i] else caption(data.specs[clips[i]][key[1]], rng, "train"))
            index[i, s] = keys[key]
    return caps, index


def prompt_context(model, bank: CaptionBank, data: Data, clips, seg_of_slot: torch.Tensor,
                   rng: np.random.Generator):
    """The cross-attention context of a batch as inference gives it: one freshly phrased caption
    per (sample, segment), every frame slot pointing at its segment's."""
    caps, index = segment_captions(data, clips, seg_of_slot, rng)
    return model.text_context(bank.embed(caps)).per_frame(index.flatten())


def clip_segment_shares(data: Data, matches) -> np.ndarray:
    """(clips,): the share of each clip's latent frames whose segment's spec `matches` (a predicate)."""
    return np.array([np.mean([matches(data.specs[c][int(s)]) for s in data.segments[c]]) for c in range(data.n)])


def clip_motion_shares(data: Data, motions: list[str]) -> np.ndarray:
    """(clips, len(motions)): the share of each clip's latent frames whose segment has each motion."""
    return np.stack([clip_segment_shares(data, lambda spec, m=m: spec.motion == m) for m in motions], axis=1)


def motion_clip_weights(data: Data, factors: dict[str, float]) -> np.ndarray:
    """Sampling probability of each clip when the motions in `factors` are drawn that many times as
    often: a clip's weight is 1 plus, per motion, (factor - 1) x the share of its latent frames whose
    segment has that motion. The hardest motion (circling) is rare in the stream of training steps."""
    weights = 1.0 + clip_motion_shares(data, list(factors)) @ (np.array(list(factors.values())) - 1.0)
    return weights / weights.sum()


def parse_oversample(items: list[str]) -> dict[str, float]:
    """`["circling=2"]` -> {"circling": 2.0}, with a clear error for unknown motions or bad factors."""
    try:
        factors = parse_motion_values(items, "MOTION=FACTOR, e.g. circling=2")
    except ValueError as error:
        raise SystemExit(f"--oversample-motion {error}") from None
    for motion, factor in factors.items():
        if factor <= 0:
            raise SystemExit(f"--oversample-motion {motion}={factor:g}: the factor must be positive")
    return factors


def build_batch(data: Data, rng: np.random.Generator, batch: int, S: int, W: int, k: int,
                switch_oversample: float, clip_weights: np.ndarray | None = None):
    """Sample `batch` inference steps -> clip index per sample, latents (B, C, slots, h, w), slot
    masks (B, slots, slots), target slot flags (B, slots), caption segment per slot (B, slots),
    the clip latent frame where each sample's target block starts (B,). Clips are drawn uniformly,
    or with `clip_weights` (see `motion_clip_weights`)."""
    slots = S + W + k
    blocks = data.t // k
    x0 = torch.zeros(batch, data.latents.shape[2], slots, *data.latents.shape[3:])
    masks = torch.zeros(batch, slots, slots, dtype=torch.bool)
    target = torch.zeros(batch, slots, dtype=torch.bool)
    seg_of_slot = torch.zeros(batch, slots, dtype=torch.long)
    clips = rng.integers(data.n, size=batch) if clip_weights is None else rng.choice(data.n, size=batch, p=clip_weights)
    starts = torch.zeros(batch, dtype=torch.long)
    for i, c in enumerate(clips):
        seg = data.segments[c]
        switches = [b for b in range(1, blocks) if seg[b * k] != seg[b * k - 1]]
        if switches and rng.random() < switch_oversample:
            b = min(blocks - 1, int(rng.choice(switches)) + int(rng.integers(0, 2)))
        else:
            b = int(rng.integers(blocks))
        n = starts[i] = b * k
        frames = list(range(min(S, n))) + list(range(max(S, n - W), n)) + list(range(n, n + k))
        f = torch.tensor(frames)
        m = len(frames)
        x0[i, :, :m] = data.latents[c, f].float().transpose(0, 1)
        masks[i, :m, :m] = frame_mask(f, k, S, W)
        masks[i, m:, m:] = torch.eye(slots - m, dtype=torch.bool)  # padding sees itself only
        target[i, m - k : m] = True
        seg_of_slot[i, :m] = seg[f]
        # recache semantics: non-sink context carries the current (target's) prompt
        sink_slots = min(S, n)
        seg_of_slot[i, sink_slots:m] = seg[n]
        seg_of_slot[i, m:] = seg[n]
    return clips, x0, masks, target, seg_of_slot, starts


def blur_context(x: torch.Tensor, target: torch.Tensor, max_share: float) -> torch.Tensor:
    """`x` (B, C, slots, h, w) with its context slots (not `target`, (B, slots)) blurred by
    `random_blur`: the generator is shown a context as soft as its own blocks are (a square drawn
    as a squircle) and still asked for the sharp true block, so it learns to sharpen what it is
    given rather than copy it."""
    if not max_share:
        return x
    return torch.where(target[:, None, :, None, None], x, random_blur(x, max_share))


def channel_weights(channels: int, shape_channels: int, weight: float) -> torch.Tensor:
    """(channels,) flow-loss weights: the last `shape_channels` weigh `weight` times the others,
    scaled to a mean of 1 so the loss (and the learning rate's meaning) keeps its scale."""
    w = torch.ones(channels)
    w[channels - shape_channels :] = weight
    return w * channels / w.sum()


def object_weight(x0: torch.Tensor, extra: float, scale: float = 2.0) -> torch.Tensor:
    """Per-position loss weight (B, 1, F, h, w): 1 on the background, up to 1 + extra on objects.

    Objects are small (a few latent pixels of 16x16), so a plain MSE is ruled by the flat
    background and the model learns to paint backgrounds long before it keeps objects alive.
    The background latent of a frame is its spatial median; distance from it marks objects."""
    background = x0.flatten(3).median(dim=3).values[..., None, None]
    distance = (x0 - background).norm(dim=1, keepdim=True)
    return 1 + extra * (distance / scale).clamp(max=1)


def crop_box(block: torch.Tensor, crop: int) -> tuple[int, int]:
    """(top, left) of a crop x crop latent window around the object of a block (C, F, h, w): the
    cell farthest from its frame's median latent, the window kept inside the frame."""
    h, w = block.shape[-2:]
    distance = (block - block.flatten(2).median(dim=2).values[..., None, None]).norm(dim=0).sum(0)
    cy, cx = divmod(int(distance.argmax()), w)
    return min(max(cy - crop // 2, 0), h - crop), min(max(cx - crop // 2, 0), w - crop)


class PixelLoss:
    """The target block's x0 as the viewer sees it: decoded by the frozen autoencoder, on a
    `crop` x `crop` latent window around the object, against the true latents decoded the same
    way. The latent frame just before the block (true latents, in both decodes) warms up the
    causal decoder, so the block decodes as it does in a stream."""

    def __init__(self, autoencoder, crop: int, samples: int, object_weight: float = 10.0) -> None:
        self.ae = autoencoder.eval().requires_grad_(False)
        self.crop, self.samples, self.object_weight = crop, samples, object_weight

    def windows(self, x0: torch.Tensor, target: torch.Tensor, k: int,
                judged: torch.Tensor | None = None) -> list[tuple[int, int, int, int]]:
        """(sample, first latent frame, top, left) of each decoded window: samples whose block has a
        frame before it (and that `judged` (B,) allows), cropped around the block's object (the
        cell farthest from the median)."""
        out = []
        h, w = x0.shape[-2:]
        c = min(self.crop, h, w)
        starts = target_start(target)
        for i in range(x0.shape[0]):
            first = int(starts[i]) - 1
            if first < 0 or (judged is not None and not judged[i]):
                continue
            out.append((i, first, *crop_box(x0[i, :, first + 1 : first + 1 + k], c)))
            if len(out) == self.samples:
                break
        return out

    def decode(self, x0_hat: torch.Tensor, x0: torch.Tensor, target: torch.Tensor, k: int,
               judged: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """(the model's crops, the true crops, their samples): decoded windows (N, 3, k * tf, H, W)
        of x0_hat (with grad) and x0 (without)."""
        windows = self.windows(x0, target, k, judged)
        if not windows:
            return x0_hat.new_zeros(0), x0.new_zeros(0), []
        c = min(self.crop, *x0.shape[-2:])

        def gather(x: torch.Tensor) -> torch.Tensor:
            return torch.stack([torch.cat([x0[i, :, f : f + 1], x[i, :, f + 1 : f + 1 + k]], dim=1)[..., t : t + c, l : l + c]
                                for i, f, t, l in windows])

        tf = self.ae.temporal_factor
        with torch.no_grad():
            truth = self.ae.decode(gather(x0), first=False)[:, :, tf:]
        seen = self.ae.decode(gather(x0_hat), first=False)[:, :, tf:]
        return seen, truth, [i for i, *_ in windows]

    def __call__(self, x0_hat: torch.Tensor, x0: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
        seen, truth, samples = self.decode(x0_hat, x0, target, k)
        if not samples:
            return x0_hat.new_zeros(())
        weight = object_pixel_weight(truth, self.object_weight)
        l1 = (weight * (seen - truth).abs()).mean() / weight.mean()
        return l1 + edge_loss(seen, truth, weight) + motion_loss(seen, truth, weight)


class Critic(torch.nn.Module):
    """A patch critic on latent blocks (B, C, k+1, h, w) (the latent frame before the block, then
    the block), conditioned on the prompt by projection: logits (B, 1, k+1, h/4, w/4). Spectral
    norm on every layer keeps it smooth enough for the generator to learn from."""

    def __init__(self, channels: int, text_dim: int, width: int = 96) -> None:
        super().__init__()
        sn = torch.nn.utils.parametrizations.spectral_norm
        act = torch.nn.LeakyReLU(0.2)
        self.body = torch.nn.Sequential(
            sn(torch.nn.Conv3d(channels, width, 3, padding=1)), act,
            sn(torch.nn.Conv3d(width, 2 * width, (3, 4, 4), stride=(1, 2, 2), padding=1)), act,
            sn(torch.nn.Conv3d(2 * width, 2 * width, (3, 4, 4), stride=(1, 2, 2), padding=1)), act)
        self.head = sn(torch.nn.Conv3d(2 * width, 1, 1))
        self.text = sn(torch.nn.Linear(text_dim, 2 * width))

    def forward(self, blocks: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        f = self.body(blocks)
        return self.head(f) + (f * self.text(text)[:, :, None, None, None]).sum(1, keepdim=True)


class PixelCritic(torch.nn.Module):
    """A patch critic on object silhouettes (N, 1, H, W) in [0, 1] (`silhouettes`), conditioned on
    the prompted shape by projection: logits (N, 1, H/8, W/8). It judges what `longvid eval`
    judges, straight edges and corners or a wobbly blob, with colour and background taken out
    (on decoded RGB crops it stayed at chance for 300 steps: the difference is a few pixels)."""

    def __init__(self, classes: int = len(SHAPES), width: int = 32, channels: int = 1, gain: float = 4.0) -> None:
        super().__init__()
        self.gain = gain  # spectral norm keeps each layer 1-Lipschitz; this lets logits reach the margin
        sn = torch.nn.utils.parametrizations.spectral_norm
        act = torch.nn.LeakyReLU(0.2)
        self.body = torch.nn.Sequential(
            sn(torch.nn.Conv2d(channels, width, 4, stride=2, padding=1)), act,
            sn(torch.nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)), act,
            sn(torch.nn.Conv2d(2 * width, 4 * width, 4, stride=2, padding=1)), act,
            sn(torch.nn.Conv2d(4 * width, 4 * width, 3, padding=1)), act)
        self.head = sn(torch.nn.Conv2d(4 * width, 1, 1))
        self.embed = sn(torch.nn.Embedding(classes, 4 * width))

    def forward(self, frames: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        f = self.body(frames * self.gain)
        return self.head(f) + (f * self.embed(classes)[:, :, None, None]).sum(1, keepdim=True)


def silhouettes(seen: torch.Tensor, truth: torch.Tensor, min_contrast: float = 0.3
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft object masks of decoded crops (N, 3, F, H, W) in [-1, 1], as `longvid eval` reads them:
    each pixel's place on the line from the background (the true frame's median colour) to the
    object colour (the mean of the true frame's core, its pixels at least `CORE_SHARE` as far
    from the background as the farthest) -> (seen (N, 1, F, H, W), truth, valid (N,)); a crop is valid
    when every frame has an object at least `min_contrast` from its background. Colour and
    background are taken out, so what is left to judge is the shape."""
    background = truth.flatten(3).median(dim=3).values[..., None, None]  # (N, 3, F, 1, 1)
    distance = (truth - background).norm(dim=1, keepdim=True)
    core = (distance >= CORE_SHARE * distance.amax(dim=(3, 4), keepdim=True)).float()
    colour = (truth * core).sum(dim=(3, 4), keepdim=True) / core.sum(dim=(3, 4), keepdim=True).clamp_min(1)
    axis = colour - background
    norm2 = (axis * axis).sum(dim=1, keepdim=True).clamp_min(1e-6)

    def coverage(x: torch.Tensor) -> torch.Tensor:
        return (((x - background) * axis).sum(dim=1, keepdim=True) / norm2).clamp(0, 1)

    valid = (norm2.sqrt() >= min_contrast).flatten(1).all(dim=1)
    return coverage(seen), coverage(truth), valid


def corner_cover(alpha: torch.Tensor, inner: float = 0.8, points: int = 4, floor: float = 0.1, eps: float = 1e-6) -> torch.Tensor:
    """How much of its box's corners a soft mask fills, measured wherever the object is: masks
    (..., H, W) in [0, 1] -> mean coverage (...) of four corner patches. The box is the square
    box the mask's own moments imply (centroid +- sqrt(3 E[dx^2]) by sqrt(3 E[dy^2]), exact for a
    square), each patch spans `inner` to 1 of its half-sides, read by bilinear sampling at the
    centres of a `points` x `points` grid. Coverage below `floor` is noise (as in `longvid eval`)
    and left out. A square fills its corners (1), a disc leaves them almost empty,
    and a rounded or blurred square falls in between, as with `longvid eval`'s corner measure."""
    lead, (h, w) = alpha.shape[:-2], alpha.shape[-2:]
    a = ((alpha.reshape(-1, 1, h, w) - floor) / (1 - floor)).clamp_min(0)
    ys = torch.arange(h, dtype=a.dtype, device=a.device)[:, None] + 0.5
    xs = torch.arange(w, dtype=a.dtype, device=a.device)[None, :] + 0.5
    mass = a.sum(dim=(-2, -1)).clamp_min(eps)  # (n, 1)
    cx, cy = (a * xs).sum(dim=(-2, -1)) / mass, (a * ys).sum(dim=(-2, -1)) / mass
    hx = (3 * (a * (xs - cx[..., None, None]) ** 2).sum(dim=(-2, -1)) / mass).clamp_min(eps).sqrt()
    hy = (3 * (a * (ys - cy[..., None, None]) ** 2).sum(dim=(-2, -1)) / mass).clamp_min(eps).sqrt()
    frac = inner + (1 - inner) * (torch.arange(points, dtype=a.dtype, device=a.device) + 0.5) / points
    signs = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=a.dtype, device=a.device)
    fy, fx = torch.meshgrid(frac, frac, indexing="ij")  # (points, points)
    px = cx[:, :, None, None] + signs[:, 0, None, None] * fx * hx[:, :, None, None]  # (n, 4, p, p)
    py = cy[:, :, None, None] + signs[:, 1, None, None] * fy * hy[:, :, None, None]
    grid = torch.stack([px / w * 2 - 1, py / h * 2 - 1], dim=-1).flatten(1, 2)  # (n, 4p, p, 2)
    cover = torch.nn.functional.grid_sample(a, grid, align_corners=False, padding_mode="zeros")
    return cover.mean(dim=(1, 2, 3)).reshape(lead)


def corner_loss(seen: torch.Tensor, truth: torch.Tensor, min_mass: float = 12.0,
                frame_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Squared difference of `corner_cover` between the model's and the true silhouettes (N, 1, F,
    H, W), over frames whose true object covers at least `min_mass` pixels. Each is measured about
    its own centroid, so unlike a pixel loss it does not pay the model for hedging over where the
    object is (the mean of a square over a few positions is a rounded square): it asks for the
    true corners wherever the model put the object. `frame_weight` (F,) weighs the frames apart."""
    keep = truth.sum(dim=(-2, -1)) >= min_mass
    if not keep.any():
        return seen.new_zeros(())
    squared = (corner_cover(seen) - corner_cover(truth)).pow(2)
    if frame_weight is None:
        return squared[keep].mean()
    weight = frame_weight.to(squared).expand_as(squared)[keep]
    return (squared[keep] * weight).sum() / weight.sum()


def judged_samples(t: torch.Tensor, target: torch.Tensor, t_last: float, every_level: bool = False) -> torch.Tensor:
    """The samples (B,) whose decoded x0 the pixel critic and the corner loss judge, from the
    timesteps (B, slots) and target flags: those whose target block sits at the last inference
    level (the x0 the viewer sees), or with `every_level` all of them (`--corner-levels all`)."""
    last = (t * target).amax(dim=1) <= t_last + 1e-3
    return torch.ones_like(last) if every_level else last


def video_frames(video: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops (N, C, F, H, W) and their classes (N,) -> frames (N * F, C, H, W) and their classes."""
    return video.transpose(1, 2).flatten(0, 1), classes.repeat_interleave(video.shape[2])


def target_start(target: torch.Tensor) -> torch.Tensor:
    """Each sample's first target slot (B,), from the target flags (B, slots)."""
    return target.float().argmax(dim=1)


def target_frames(x: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """Each sample's k target frames of `x` (B, C, slots, h, w) -> (B, C, k, h, w)."""
    first = target_start(target)
    return torch.stack([x[i, :, first[i] : first[i] + k] for i in range(x.shape[0])])


def critic_blocks(x: torch.Tensor, before: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """Each sample's target block of `x` (B, C, slots, h, w) behind the latent frame before it,
    taken from `before` (zeros for a clip's first block) -> (B, C, k + 1, h, w)."""
    first = target_start(target)
    prev = torch.stack([before[i, :, f - 1] if f else torch.zeros_like(before[i, :, 0]) for i, f in enumerate(first.tolist())])
    return torch.cat([prev[:, :, None], target_frames(x, target, k)], dim=2)


def critic_pairs(x0_hat: torch.Tensor, x0: torch.Tensor, before: torch.Tensor, target: torch.Tensor, k: int,
                 judge: torch.Tensor, with_before: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """What the latent critic judges of the samples `judge` (B,): the model's block behind
    `before`'s frame and the true block behind the true frame (`critic_blocks`), or, without
    `with_before`, the two blocks alone -> (fake, real) (N, C, k + 1 or k, h, w)."""
    seen = slice(0 if with_before else 1, None)
    return (critic_blocks(x0_hat, before, target, k)[judge][:, :, seen],
            critic_blocks(x0, x0, target, k)[judge][:, :, seen])


def target_shapes(data: Data, clips, seg_of_slot: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The prompted shape (index into SHAPES) of each sample's target block (B,)."""
    first = target_start(target)
    return torch.tensor([SHAPES.index(data.specs[c][int(seg_of_slot[i, first[i]])].shape) for i, c in enumerate(clips)])


def velocity_target(x_in: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The flow that maps x_in to the true x0 at noise level sigma (B, 1, F, 1, 1) > 0:
    (x_in - x0) / sigma. For x_in = (1 - sigma) x0 + sigma n it is the usual n - x0; for a
    sampler's own state it asks for the true x0 from wherever the sampler got to."""
    return (x_in - x0) / sigma


def training_forward(model: torch.nn.Module, compile_model: bool):
    """What the training step calls for the model's forwards: the model itself, or (`--compile`)
    torch.compile of it. The module stays `model`, so its state_dict, the EMA and the checkpoints
    keep their keys; the first steps (and the first with no grad) compile."""
    return torch.compile(model) if compile_model else model


@torch.no_grad()
def autocast_drift(model, x: torch.Tensor, t: torch.Tensor, text, **kwargs) -> float:
    """Relative difference between the model's output under CPU bf16 autocast and in float32 on
    the same inputs: bf16's rounding gives about 0.01; a faulty bf16 kernel on the machine's
    processor far more (docs/training.md, "Session 19")."""
    full = model(x, t, text, **kwargs).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model(x, t, text, **kwargs).float()
    return float((half - full).norm() / full.norm().clamp_min(1e-12))


@torch.no_grad()
def sampler_states(model, x_in: torch.Tensor, target: torch.Tensor, levels: torch.Tensor, steps_t: list[float],
                   flow: FlowMatch, predicted: bool, **forward) -> torch.Tensor:
    """x_in with each sample's target frames replaced by the engine sampler's state at its level
    `levels[i]` (an index into steps_t): pure noise at level 0, then one model step and a
    re-noise per level, the engine's rule (`schedule.renoise`: the predicted or fresh noise)."""
    tgt = target[:, None, :, None, None]
    x = torch.where(tgt, torch.randn_like(x_in), x_in)
    out = x.clone()
    for j in range(int(levels.max())):
        t = torch.where(target, torch.full_like(target, steps_t[j], dtype=torch.float32), 0.0)
        v = model(x, t, **forward).float()
        noise = flow.to_noise(x, v, t) if predicted else torch.randn_like(x)
        t_next = torch.where(target, torch.full_like(t, steps_t[j + 1]), 0.0)
        x = torch.where(tgt, flow.add_noise(flow.to_x0(x, v, t), noise, t_next), x_in)
        reached = (levels == j + 1)[:, None, None, None, None]
        out = torch.where(reached & tgt, x, out)
    return out


@torch.no_grad()
def sample_target(model, x0: torch.Tensor, target: torch.Tensor, steps_t: list[float], flow: FlowMatch,
                  generator: torch.Generator | None = None, **forward) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's few-step sampler (predicted-noise re-noising) on each sample's target frames,
    the context kept at x0 -> (the last x0 prediction, the first step's x0 prediction)."""
    B, slots = target.shape
    tgt = target[:, None, :, None, None]
    x = torch.where(tgt, torch.randn(x0.shape, generator=generator), x0)
    first = None
    for j, tj in enumerate(steps_t):
        t = torch.where(target, torch.full((B, slots), float(tj)), torch.zeros(B, slots))
        v = model(x, t, **forward).float()
        xh = flow.to_x0(x, v, t)
        first = xh if first is None else first
        if j + 1 < len(steps_t):
            t_next = torch.where(target, torch.full((B, slots), float(steps_t[j + 1])), torch.zeros(B, slots))
            x = torch.where(tgt, flow.add_noise(xh, flow.to_noise(x, v, t), t_next), x0)
    return xh, first


def rolled_samples(target: torch.Tensor, window_first: torch.Tensor, blocks: int) -> torch.Tensor:
    """(B,) bool: the samples whose window holds `blocks` whole blocks before the target, the ones
    `own_window` rolls (the others keep their true window)."""
    return (target_start(target) - window_first) >= blocks * int(target[0].sum())


def rolled_terms(rolled: torch.Tensor, for_critic: torch.Tensor, x_rolled: torch.Tensor, x0: torch.Tensor,
                 mse_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For `--own-window-mse`: the latents the critic sees before each target block (the model's
    own window `x_rolled` for the samples `for_critic` (B,), the true `x0` for the others) and
    each sample's weight in the flow loss (B, 1): `mse_weight` where `rolled`, 1 elsewhere."""
    before = torch.where(for_critic[:, None, None, None, None], x_rolled, x0)
    return before, torch.where(rolled, float(mse_weight), 1.0)[:, None]


def rollout_levels(last: torch.Tensor, rolled: torch.Tensor, n_levels: int, rng: np.random.Generator) -> torch.Tensor:
    """Each sample's inference level (index into the sampler's timesteps) for a rollout step: the
    last one for `last` and `rolled` samples (B,), one drawn uniformly for the rest."""
    drawn = torch.from_numpy(rng.integers(n_levels, size=len(last)))
    return torch.where(last | rolled, n_levels - 1, drawn)


@torch.no_grad()
def own_window(model, x: torch.Tensor, target: torch.Tensor, window_first: torch.Tensor, blocks: int,
               steps_t: list[float], flow: FlowMatch, generator: torch.Generator | None = None,
               **forward) -> torch.Tensor:
    """`x` (B, C, slots, h, w) with the last `blocks` blocks of each sample's window replaced,
    oldest first, by what the engine's sampler makes of them (`sample_target`) from what comes
    before: the window a rollout leaves, the model's own blocks, where training otherwise shows the
    true ones (or their one-step x0s). A window frame sees only the sink, earlier frames and its own
    block (the cache's rule, `frame_mask`), so the target never reaches them, and each block sees
    the ones rolled before it. `window_first` (B,): each sample's first window slot; a sample whose
    window holds fewer than `blocks` blocks keeps its own."""
    k = int(target[0].sum())
    first = target_start(target)
    slots = torch.arange(target.shape[1])
    rolled = rolled_samples(target, window_first, blocks)
    for j in range(blocks, 0, -1):  # the block j blocks before the target, oldest first
        block = rolled[:, None] & (slots >= (first - j * k)[:, None]) & (slots < (first - (j - 1) * k)[:, None])
        made, _ = sample_target(model, x, block, steps_t, flow, generator, **forward)
        x = torch.where(block[:, None, :, None, None], made, x)
    return x


def pair_batch(data: Data, clips, x_clean: torch.Tensor, target: torch.Tensor, seg_of_slot: torch.Tensor,
               starts: torch.Tensor, S: int, rng: np.random.Generator
               ) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
    """The partner side of `--pair-weight` for the samples of `clips`: their inputs `x_clean`
    (P, C, slots, h, w) with the target slots taken from the partner clip, fresh captions for
    both sides (no dropout) and each side's caption row per slot -> (partner x0, captions,
    index of the clip's side (P, slots), index of the partner's side). Sink slots keep the
    caption they were made under; the window and the target carry the target's (KV-recache)."""
    x_partner = x_clean.clone()
    first = target_start(target)
    k = int(target[0].sum())
    for i, c in enumerate(clips):
        n = int(starts[i])
        x_partner[i, :, first[i] : first[i] + k] = data.partner_latents[c, n : n + k].float().transpose(0, 1)
    caps, index = segment_captions(data, clips, seg_of_slot, rng)
    index_partner = index.clone()
    for i, c in enumerate(clips):
        index_partner[i, min(S, int(starts[i])) :] = len(caps) + i
    caps = caps + [caption(data.partner_specs[c][int(seg_of_slot[i, first[i]])], rng, "train") for i, c in enumerate(clips)]
    return x_partner, caps, index, index_partner


def pair_loss(pred: torch.Tensor, pred_partner: torch.Tensor, x0: torch.Tensor, x0_partner: torch.Tensor,
              target: torch.Tensor) -> torch.Tensor:
    """How far the difference of two flow predictions (P, C, slots, h, w), made from the same
    noise on a clip's and its partner's target block, is from the true one, relative to the
    true one's size, on the target slots (P, slots). With the same noise the true flows differ
    by exactly partner x0 - x0, whatever the noise level."""
    tgt = target[:, None, :, None, None]
    true = (x0_partner - x0) * tgt
    err = ((pred - pred_partner) * tgt - true).pow(2).sum(dim=(1, 2, 3, 4))
    return (err / true.pow(2).sum(dim=(1, 2, 3, 4)).clamp_min(1e-3)).mean()


# Output projections of a Wan block: with these zero, the block adds nothing to the residual stream.
BLOCK_OUTPUTS = ("attn1.to_out.0.weight", "attn1.to_out.0.bias", "attn2.to_out.0.weight", "attn2.to_out.0.bias",
                 "ffn.net.2.weight", "ffn.net.2.bias")


def deepen(state: dict[str, torch.Tensor], model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list[int]]:
    """A trained state for `model`'s deeper stack that computes what the trained model computed.

    The trained blocks keep their order, spread evenly (trained block i -> block i * r, r = new
    depth / trained depth); each block between them keeps `model`'s fresh weights but with its
    output projections zeroed, so it starts as the identity and learns from there. Returns the
    state and the indices of the new blocks."""
    own = model.state_dict()
    old = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    new = 1 + max(int(k.split(".")[1]) for k in own if k.startswith("blocks."))
    if new % old:
        raise SystemExit(f"--deepen: {new} layers is not a multiple of the {old} trained ones; "
                         f"set model.num_layers to {old * max(2, new // old)} in the config")
    r = new // old
    out = {k: v for k, v in state.items() if not k.startswith("blocks.")}
    added = [b for b in range(new) if b % r]
    for b in range(new):
        for name in (k.split(".", 2)[2] for k in own if k.startswith(f"blocks.{b}.")):
            key = f"blocks.{b}.{name}"
            if b % r == 0:
                out[key] = state[f"blocks.{b // r}.{name}"]
            else:
                out[key] = torch.zeros_like(own[key]) if name in BLOCK_OUTPUTS else own[key].clone()
    return out, added


def widen_latents(state: dict[str, torch.Tensor], model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], int]:
    """A trained state for `model`, whose latents have more channels than the trained model's
    (an autoencoder grown with shape channels), that computes on the old channels what the
    trained model computed: the patch embedding's weights for the new input channels and the
    output projection's rows for the new output channels start at zero. Returns the state and
    the number of new channels."""
    own = model.state_dict()
    old_in, new_in = state["patch_embedding.weight"].shape[1], own["patch_embedding.weight"].shape[1]
    patch = own["patch_embedding.weight"][0, 0].numel()  # ph * pw (temporal patch 1)
    old_out, new_out = state["proj_out.bias"].numel() // patch, own["proj_out.bias"].numel() // patch
    if new_in - old_in != new_out - old_out or new_in <= old_in:
        raise SystemExit(f"--widen-latents: the config's latents have {new_in} channels in and {new_out} out, the "
                         f"trained model's {old_in} and {old_out}; set model.in_channels and out_channels to the "
                         "grown autoencoder's vae.latent_channels")
    out = dict(state)
    emb = torch.zeros_like(own["patch_embedding.weight"])
    emb[:, :old_in] = state["patch_embedding.weight"]
    out["patch_embedding.weight"] = emb
    # proj_out's outputs are (ph pw c), channels fastest (CausalWanTransformer.forward)
    weight = torch.zeros(patch, new_out, own["proj_out.weight"].shape[1])
    weight[:, :old_out] = state["proj_out.weight"].view(patch, old_out, -1)
    out["proj_out.weight"] = weight.flatten(0, 1)
    bias = torch.zeros(patch, new_out)
    bias[:, :old_out] = state["proj_out.bias"].view(patch, old_out)
    out["proj_out.bias"] = bias.flatten()
    return out, new_in - old_in


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="longvid-shapes")
    ap.add_argument("--run", default=str(REPO / "runs" / "generator"))
    ap.add_argument("--data", default=str(REPO / "runs" / "latents" / "shard_*.pt"))
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--ctx-noise", type=float, default=0.05, help="max noise mixed into context frames")
    ap.add_argument("--context-blur", type=float, default=0.0,
                    help="on 3 in 4 samples, blur the context by a share from U(0, A) (trainutil.random_blur); "
                         "the target stays sharp, so the model learns to make corners from a soft context")
    ap.add_argument("--self-context-prob", type=float, default=0.5)
    ap.add_argument("--self-context-from", type=int, default=800)
    ap.add_argument("--uniform-t-prob", type=float, default=0.2)
    ap.add_argument("--switch-oversample", type=float, default=0.3)
    ap.add_argument("--oversample-motion", nargs="*", default=[], metavar="MOTION=FACTOR",
                    help="draw clips with this motion FACTOR times as often, e.g. circling=2")
    ap.add_argument("--object-weight", type=float, default=3.0,
                    help="extra loss weight on latent positions that hold an object (they cover ~8%%)")
    ap.add_argument("--pixel-weight", type=float, default=0.0,
                    help="weight of the loss on the decoded target block (PixelLoss); 0 = latent loss only")
    ap.add_argument("--pixel-crop", type=int, default=8, help="latent cells per side of the decoded window")
    ap.add_argument("--pixel-samples", type=int, default=8, help="samples per batch decoded for the pixel loss")
    ap.add_argument("--autoencoder", default=None, help="for --pixel-weight; default: the config's vae weights")
    ap.add_argument("--rollout-prob", type=float, default=0.0,
                    help="share of steps trained from the sampler's own states (sampler_states), like the "
                         "self-context pass from --self-context-from on")
    ap.add_argument("--own-window", type=int, default=0, metavar="BLOCKS",
                    help="on --own-window-prob of the steps (from --self-context-from on), the last BLOCKS "
                         "blocks of each window are the model's own, made by the sampler block by block "
                         "(own_window), as a rollout leaves them; the target stays the true block")
    ap.add_argument("--own-window-prob", type=float, default=0.5)
    ap.add_argument("--own-window-mse", type=float, default=1.0, metavar="W",
                    help="weight of the flow loss on the samples whose window was rolled: the true block no "
                         "longer continues a window that drifted, so 0 leaves them to the critic alone "
                         "(--adv-weight), which then judges only them: their last-level sample behind the "
                         "model's own frame")
    ap.add_argument("--adv-weight", type=float, default=0.0,
                    help="weight of the critic's (hinge) loss on the target block's x0; 0 = no critic")
    ap.add_argument("--critic-before", action=argparse.BooleanOptionalAction, default=True,
                    help="the latent critic sees the frame before the block as well as the block; with "
                         "--own-window-mse, --no-critic-before keeps it from telling the model's own window "
                         "from the true one, which the model cannot change")
    ap.add_argument("--adv-from", type=int, default=100,
                    help="steps the critic trains alone before the model feels it")
    ap.add_argument("--critic-lr", type=float, default=2e-4)
    ap.add_argument("--critic-steps", type=int, default=1,
                    help="pixel critic updates per model step (on the same frames): a critic that lags is "
                         "fooled at once and teaches nothing")
    ap.add_argument("--pixel-adv-weight", type=float, default=0.0,
                    help="weight of a pixel critic's (hinge) loss on the decoded target block (PixelCritic, "
                         "crops as --pixel-crop/--pixel-samples), judged at the last inference level only")
    ap.add_argument("--corner-weight", type=float, default=0.0,
                    help="weight of a loss on the decoded target block's silhouettes at the last inference "
                         "level: how much of their box's corners they fill (corner_loss), measured wherever the object is")
    ap.add_argument("--corner-levels", choices=["last", "all"], default="last",
                    help="the levels whose x0 --corner-weight judges: the last inference level (what the viewer "
                         "sees, as the pixel critic) or every level (where the sampler decides the shape)")
    ap.add_argument("--last-level-share", type=float, default=0.0,
                    help="share of samples whose target block sits at the last inference level (the one "
                         "whose x0 the viewer sees), in fresh-noise and rollout steps alike")
    ap.add_argument("--shape-probe", default=str(REPO / "runs" / "shape-probe.pt"),
                    help="for --shape-weight: scripts/train_shape_probe.py's output for these latents")
    ap.add_argument("--shape-weight", type=float, default=0.0,
                    help="weight of the shape probe's cross-entropy on the target block's x0; 0 = off")
    ap.add_argument("--pair-weight", type=float, default=0.0,
                    help="weight of the shape-pair loss (needs shards from prepare_latents.py --partners)")
    ap.add_argument("--pair-samples", type=int, default=6, help="samples per batch given a partner for --pair-weight")
    ap.add_argument("--caption-dropout", type=float, default=0.0,
                    help="share of samples trained with the empty caption (every slot), so the model also "
                         "learns the unconditional prediction that classifier-free guidance "
                         "(schedule.guidance) extrapolates away from")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast; default: on where the CPU runs bf16 natively (AVX512-BF16 or AMX), "
                         "off elsewhere, where emulated bf16 is ~20x slower than float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="2 stalls whenever anything else runs")
    ap.add_argument("--compile", action="store_true",
                    help="run the model's forwards through torch.compile: ~1.3x faster steps on this CPU after "
                         "~4 minutes of compiling at the start (and again after a resume); same numbers")
    ap.add_argument("--out", default=str(REPO / "longvid" / "weights" / "shapes" / "transformer.safetensors"))
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--init-from", default=None,
                    help="start from these weights when runs/ has no checkpoint (e.g. the committed "
                         "transformer.safetensors, to continue training in a new checkout)")
    ap.add_argument("--init-partial", action="store_true",
                    help="with --init-from: copy only the tensors whose shapes match (e.g. the blocks of a "
                         "model trained on another latent space) and start the others afresh")
    ap.add_argument("--deepen", action="store_true",
                    help="with --init-from: the config has r times the trained model's layers; the trained "
                         "blocks go to every r-th place and the blocks between start as the identity")
    ap.add_argument("--widen-latents", action="store_true",
                    help="with --init-from: the config's latents have more channels than the trained model's "
                         "(an autoencoder grown by train_autoencoder.py --shape-channels); the new channels' "
                         "input and output weights start at zero")
    ap.add_argument("--shape-channel-weight", type=float, default=1.0, metavar="W",
                    help="weigh the flow loss on the latents' shape channels (the config's autoencoder's "
                         "shape_channels, train_autoencoder.py --shape-channels) W times the others'")
    args = ap.parse_args()
    factors = parse_oversample(args.oversample_motion)  # a typo fails before any data is loaded
    if args.deepen and not args.init_from:
        raise SystemExit("--deepen grows trained weights: name them with --init-from")
    if args.widen_latents and not args.init_from:
        raise SystemExit("--widen-latents grows trained weights: name them with --init-from")
    if args.own_window_mse != 1.0 and not args.own_window:
        raise SystemExit("--own-window-mse weighs the samples whose window was rolled: add --own-window BLOCKS")
    if args.own_window_mse < 1.0 and not args.adv_weight:
        raise SystemExit(f"--own-window-mse {args.own_window_mse:g} takes the rolled samples out of the flow loss, "
                         "and without a critic nothing else teaches them: add --adv-weight (0.1 for a start)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    cfg = load_config(args.config)
    S, W, k, steps_t, flow = sampler_setup(cfg)
    slots = S + W + k
    sc = cfg.schedule

    model = build_transformer(cfg.model).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    run = Run(args.run, ["loss", "loss_switch", "lr", "self_ctx", "sec_per_step", "loss_pixel", "loss_adv",
                         "loss_critic", "loss_shape", "loss_pixel_adv", "loss_pixel_critic", "loss_pair", "loss_corner"])
    critics = {}
    if args.adv_weight:
        critics["critic"] = Critic(cfg.model.out_channels, cfg.model.text_dim)
    if args.pixel_adv_weight:
        critics["pixel_critic"] = PixelCritic()
    for name in list(critics):
        critics["opt_" + name] = torch.optim.AdamW(critics[name].parameters(), lr=args.critic_lr, betas=(0.0, 0.99),
                                                   weight_decay=0.0)
    critic, opt_critic = critics.get("critic"), critics.get("opt_critic")
    pixel_critic, opt_pixel_critic = critics.get("pixel_critic"), critics.get("opt_pixel_critic")
    start = run.resume(model=model, ema=ema, opt=opt, **critics)
    if start == 0 and args.init_from:  # a new checkout: continue from the committed weights
        state, _ = read_state_dict(args.init_from)
        if args.init_partial:
            own = model.state_dict()
            fresh = sorted(k for k, v in own.items() if k not in state or state[k].shape != v.shape)
            state = {k: v if k in fresh else state[k] for k, v in own.items()}
            run.log(f"new latent space: {', '.join(fresh)} start afresh")
        if args.deepen:
            state, added = deepen(state, model)
            run.log(f"deeper: blocks {added} start as the identity")
        if args.widen_latents:
            state, added = widen_latents(state, model)
            run.log(f"wider latents: {added} new channels start at zero weights")
        load_into(model, state, args.init_from)
        load_into(ema, state, args.init_from)
        run.log(f"initialised from {args.init_from} (optimiser state starts afresh)")
    if args.export_only:
        save_safetensors(ema, args.out)
        run.log(f"exported {args.out}")
        return

    text_model, tok = load_minilm()
    bank = CaptionBank(HFTextEncoder(text_model, tok, cfg.text.max_length))
    data = Data(args.data)
    if args.corner_levels == "all" and args.pixel_adv_weight:
        raise SystemExit("--corner-levels all judges every level, the pixel critic only the last: use one of them")
    if args.pair_weight and data.partner_latents is None:
        raise SystemExit("--pair-weight needs partner clips: make the shards with prepare_latents.py --partners")
    probe = load_probe(args.shape_probe) if args.shape_weight else None
    pixel = None
    if args.pixel_weight or args.pixel_adv_weight or args.corner_weight:
        pixel = PixelLoss(load_autoencoder(args.autoencoder or weight_path(cfg, "vae")), args.pixel_crop,
                          args.pixel_samples)
    channel_weight = torch.ones(cfg.model.out_channels)
    if args.shape_channel_weight != 1.0:
        n_shape = load_autoencoder(weight_path(cfg, "vae")).cfg.shape_channels
        if not n_shape:
            raise SystemExit(f"--shape-channel-weight: the autoencoder {weight_path(cfg, 'vae')} has no shape "
                             "channels (make one with train_autoencoder.py --shape-channels)")
        channel_weight = channel_weights(cfg.model.out_channels, n_shape, args.shape_channel_weight)
        run.log(f"shape channels ({n_shape}) weigh {args.shape_channel_weight:g}x the others in the flow loss")
    run.log(f"{data.n} clips x {data.t} latent frames; model {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
            f"params; slots {slots}; timesteps {[round(t, 1) for t in steps_t]}")
    rng = np.random.default_rng([args.seed, start])
    clip_weights = motion_clip_weights(data, factors) if factors else None
    if factors:
        drawn = clip_weights @ clip_motion_shares(data, list(factors))
        run.log("oversampled motions, share of sampled frames: "
                + ", ".join(f"{m} {v:.2f}" for m, v in zip(factors, drawn)))
    positions = torch.arange(slots)

    def lr_at(step: int) -> float:
        return warmup_cosine(step, args.lr, args.steps, warmup=200, floor=0.1)

    native_bf16 = cpu_has_native_bf16()
    if args.bf16 is None:
        args.bf16 = native_bf16
    run.log(f"bf16 autocast: {'on' if args.bf16 else 'off'} (native bf16 on this CPU: {native_bf16})")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    t_last = steps_t[-1]
    if args.bf16:  # the training numbers must be the inference (float32) numbers, up to rounding
        check = np.random.default_rng(0)
        clips, x0, masks, target, seg_of_slot, _ = build_batch(data, check, 4, S, W, k, 0.0)
        with torch.no_grad():
            text = prompt_context(model, bank, data, clips, seg_of_slot, check)
        t = torch.where(target, 1000.0, 0.0)
        x = torch.where(target[:, None, :, None, None], torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)), x0)
        drift = autocast_drift(model, x, t, text, frame_positions=positions, frame_mask=masks)
        run.log(f"bf16 autocast vs float32 on one batch: {drift:.3f} relative difference")
        if drift > 0.05:
            raise SystemExit(f"bf16 autocast changes the model's output by {drift:.0%} against float32 on this "
                             "machine (a faulty bf16 kernel?): train with --no-bf16")
    forward = training_forward(model, args.compile)
    for step in range(start, args.steps):
        t0 = run.elapsed
        clips, x0, masks, target, seg_of_slot, starts = build_batch(data, rng, args.batch, S, W, k, args.switch_oversample,
                                                                     clip_weights)
        B = args.batch
        caps, index = segment_captions(data, clips, seg_of_slot, rng, args.caption_dropout)
        embeds = bank.embed(caps)

        # timesteps: the target block at an inference level (sometimes uniform), context clean
        tb = torch.tensor(rng.choice(steps_t, size=B), dtype=torch.float32)
        uni = torch.from_numpy(rng.random(B) < args.uniform_t_prob)
        tb = torch.where(uni, torch.from_numpy(rng.uniform(20, 1000, size=B)).float(), tb)
        last = torch.from_numpy(rng.random(B) < args.last_level_share)
        tb = torch.where(last, t_last, tb)
        t = torch.where(target, tb[:, None], torch.zeros(B, slots))
        noise = torch.randn_like(x0)
        ctx_sigma = torch.from_numpy(rng.uniform(0, args.ctx_noise, size=(B, 1))).float()
        ctx_level = torch.where(target, torch.zeros(B, slots), ctx_sigma)
        context = (~target)[:, None, :, None, None]

        self_ctx = step >= args.self_context_from and rng.random() < args.self_context_prob
        own = bool(args.own_window) and step >= args.self_context_from and rng.random() < args.own_window_prob
        if self_ctx or own:  # the caption context of the no-grad passes below, made once
            with torch.no_grad(), autocast:
                ctx_text = model.text_context(embeds).per_frame(index.flatten())
        if self_ctx:  # replace the context by the model's own x0 from the last denoising level
            with torch.no_grad(), autocast:
                t_ctx = torch.where(target, t, torch.full((B, slots), t_last))
                x_ctx = flow.add_noise(x0, torch.randn_like(x0), t_ctx)
                v = forward(x_ctx, t_ctx, ctx_text, frame_positions=positions, frame_mask=masks).float()
                x0_hat = flow.to_x0(x_ctx, v, t_ctx)
            x_clean = torch.where(context, x0_hat, x0)
        else:
            x_clean = x0
        rolled = torch.zeros(B, dtype=torch.bool)
        if own:  # the window's last blocks: the model's own
            rolled = rolled_samples(target, starts.clamp(max=S), args.own_window)
            with autocast:
                x_clean = own_window(forward, x_clean, target, starts.clamp(max=S), args.own_window, steps_t, flow,
                                     torch.Generator().manual_seed(int(rng.integers(2**31))), text=ctx_text,
                                     frame_positions=positions, frame_mask=masks).float()
        # --own-window-mse (not 1): the rolled samples are the critic's, at the engine's last level
        # (the x0 a viewer sees), behind their own window; at 1 they train as any other sample.
        for_critic = rolled if args.own_window_mse != 1.0 and critic is not None else torch.zeros_like(rolled)
        before, sample_weight = rolled_terms(rolled, for_critic, x_clean, x0, args.own_window_mse)  # before blurring
        x_clean = blur_context(x_clean, target, args.context_blur)
        rollout = bool(for_critic.any()) or (step >= args.self_context_from and rng.random() < args.rollout_prob)
        if rollout:  # each sample's target at an inference level, reached by the sampler below
            levels = rollout_levels(last, for_critic, len(steps_t), rng)
            t = torch.where(target, torch.tensor(steps_t, dtype=torch.float32)[levels][:, None], 0.0)
        sigma_map = torch.where(target, flow.sigma(t), ctx_level)[:, None, :, None, None]
        x_in = (1 - sigma_map) * x_clean + sigma_map * noise
        with autocast:
            text = model.text_context(embeds).per_frame(index.flatten())
            if rollout:
                x_in = sampler_states(forward, x_in, target, levels, steps_t, flow, sc.renoise == "predicted",
                                      text=text, frame_positions=positions, frame_mask=masks)

        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with autocast:
            pred = forward(x_in, t, text, frame_positions=positions, frame_mask=masks).float()
        v_target = torch.where(context, noise - x0, velocity_target(x_in, x0, sigma_map.clamp_min(1e-3)))
        err = ((pred - v_target).pow(2) * object_weight(x0, args.object_weight)
               * channel_weight[None, :, None, None, None]).mean(dim=(1, 3, 4))
        loss = (err * target * sample_weight).sum() / target.sum()
        x0_hat = flow.to_x0(x_in, pred, t)  # what the pixel, shape and critic losses judge
        loss_pixel = loss_padv = loss_pcritic = torch.zeros(())
        if args.pixel_weight:
            with autocast:
                loss_pixel = pixel(x0_hat, x0, target, k).float()
            loss = loss + args.pixel_weight * loss_pixel
        judged_frames = None
        loss_corner = torch.zeros(())
        if pixel_critic is not None or args.corner_weight:  # the decoded x0 of the judged samples
            judged = judged_samples(t, target, t_last, every_level=args.corner_levels == "all")
            seen, truth, samples = pixel.decode(x0_hat, x0, target, k, judged)
            if samples:
                seen, truth, valid = silhouettes(seen.float(), truth.float())
                classes = target_shapes(data, clips, seg_of_slot, target)[samples]
                fake, cls = video_frames(seen[valid], classes[valid])
                judged_frames = (fake, video_frames(truth[valid], classes[valid])[0], cls) if valid.any() else None
                if args.corner_weight and valid.any():
                    loss_corner = corner_loss(seen[valid], truth[valid])
            if pixel_critic is None:
                judged_frames = None
            if judged_frames is not None and step >= args.adv_from:
                pixel_critic.requires_grad_(False)
                loss_padv = -pixel_critic(fake, cls).mean()
                pixel_critic.requires_grad_(True)
        loss_pair = torch.zeros(())
        if args.pair_weight:  # the same noise on a clip's and its partner's block, two captions
            P = min(args.pair_samples, B)
            x_partner, pair_caps, index_a, index_b = pair_batch(data, clips[:P], x_clean[:P], target[:P],
                                                                seg_of_slot[:P], starts[:P], S, rng)
            sig = sigma_map[:P]
            noise_p = noise[:P]
            both = torch.cat([(1 - sig) * x_clean[:P] + sig * noise_p, (1 - sig) * x_partner + sig * noise_p])
            with autocast:
                pair_text = model.text_context(bank.embed(pair_caps)).per_frame(torch.cat([index_a, index_b]).flatten())
                pair_pred = forward(both, t[:P].repeat(2, 1), pair_text, frame_positions=positions,
                                  frame_mask=masks[:P].repeat(2, 1, 1)).float()
            loss_pair = pair_loss(pair_pred[:P], pair_pred[P:], x_clean[:P], x_partner, target[:P])
        loss_adv = loss_critic = loss_shape = torch.zeros(())
        if probe is not None:
            frames = target_frames(x0_hat, target, k)  # (B, C, k, h, w)
            logits = probe(frames.transpose(1, 2).flatten(0, 1))
            shapes = target_shapes(data, clips, seg_of_slot, target)
            loss_shape = torch.nn.functional.cross_entropy(logits, shapes.repeat_interleave(k))
        # Under --own-window-mse the critic judges the rolled samples only (none: no critic this step).
        judge = for_critic if args.own_window_mse != 1.0 else torch.ones(B, dtype=torch.bool)
        critic_on = critic is not None and bool(judge.any())
        if critic_on:
            text_vec = embeds[index[torch.arange(B), target_start(target)]].mean(dim=1)[judge]
            fake, real = critic_pairs(x0_hat, x0, before, target, k, judge, args.critic_before)
            if step >= args.adv_from:
                critic.requires_grad_(False)
                loss_adv = -critic(fake, text_vec).mean()
                critic.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        (loss + args.adv_weight * loss_adv + args.pixel_adv_weight * loss_padv
         + args.shape_weight * loss_shape + args.pair_weight * loss_pair
         + args.corner_weight * loss_corner).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if critic_on:  # hinge loss: true blocks above +1, the model's below -1
            loss_critic = hinge_critic_loss(critic(real, text_vec), critic(fake.detach(), text_vec))
            opt_critic.zero_grad(set_to_none=True)
            loss_critic.backward()
            opt_critic.step()
        if judged_frames is not None:
            fake, real, cls = judged_frames
            fake = fake.detach()
            for _ in range(args.critic_steps):
                loss_pcritic = hinge_critic_loss(pixel_critic(real, cls), pixel_critic(fake, cls))
                opt_pixel_critic.zero_grad(set_to_none=True)
                loss_pcritic.backward()
                opt_pixel_critic.step()
        with torch.no_grad():
            d = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)

        sec = run.elapsed - t0
        if step % 10 == 0:
            at_switch = torch.tensor([seg_of_slot[i, 0] != seg_of_slot[i, -1] for i in range(B)])
            ls = float((err[at_switch] * target[at_switch]).detach().sum() / target[at_switch].sum().clamp_min(1))
            run.record(step, loss=loss.item(), loss_switch=ls, lr=lr_at(step), self_ctx=float(self_ctx),
                       sec_per_step=sec, loss_pixel=loss_pixel.item(), loss_adv=loss_adv.item(),
                       loss_critic=loss_critic.item(), loss_shape=loss_shape.item(),
                       loss_pixel_adv=loss_padv.item(), loss_pixel_critic=loss_pcritic.item(),
                       loss_pair=loss_pair.item(), loss_corner=loss_corner.item())
        if step % 50 == 0:
            run.log(f"step {step}/{args.steps} loss {loss.item():.4f} (pixel {loss_pixel.item():.4f}, adv {loss_adv.item():.3f}, "
                    f"critic {loss_critic.item():.3f}, shape {loss_shape.item():.3f}, pixel adv {loss_padv.item():.3f}, "
                    f"pixel critic {loss_pcritic.item():.3f}, pair {loss_pair.item():.3f}, corner {loss_corner.item():.4f}) "
                    f"{sec:.1f}s/step "
                    f"{run.elapsed / 60:.1f} min, {len(bank.bank)} captions")
        if (step + 1) % 50 == 0 or step + 1 == args.steps:
            run.save(step + 1, model=model, ema=ema, opt=opt, **critics)
        if (step + 1) % 500 == 0 or step + 1 == args.steps:
            save_safetensors(ema, args.out)
            run.log(f"exported EMA weights to {args.out}")


if __name__ == "__main__":
    main()
