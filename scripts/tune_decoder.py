"""Stage 4 of the built-in model: the decoder fine-tuned on the generator's own latents.

    python scripts/prepare_latents.py --autoencoder longvid/weights/shapes/autoencoder.safetensors \
        --out runs/latentsC --clips 400        # latents of the config's own autoencoder
    python scripts/tune_decoder.py --config configs/longvid-shapes.yaml \
        --data 'runs/latentsC/shard_*.pt' --run runs/decC --out runs/decC/autoencoder.safetensors

The autoencoder's decoder learnt to draw what its encoder makes. The generator's latents are not
quite that: a few-step flow sampler trained with a latent MSE ends on a conditional mean, and the
decoder turns its softened corners into round blobs (docs/builtin-model.md: teacher-forced, the
generator's squares read as squares in 2-7 % of blocks where the true latents give 41 %). Here the
decoder learns to draw the true pictures from the generator's latents, so the system as a whole
(generator, then decoder) makes what the world looks like, as consistency decoders and VAE
decoder fine-tunes on generated latents do.

Each step draws training samples as `train_generator.py` does (sink + window of true latents, the
next block the target), lets the frozen generator's few-step sampler (the engine's: same
timesteps, predicted-noise re-noising) make the block, and decodes it after `--warmup` true
latent frames (so the causal decoder is mid-stream, as in `longvid generate`), on a crop around
the object. The truth is the clip's own pixel frames, replayed from the shard's seed
(`prepare_latents.sample_clip` is deterministic, checked at start-up against the stored latents;
for a `--shape-labels` autoencoder, against the stored label channels). `--switch-share` and
`--background-switch-share` draw prompt switches more often: the first frames of a new background
are where the decoder, remembering the old one, drew it on (docs/training.md, "Session 34").
A share of samples (`--true-share`) decodes the true latents instead, so round trips stay as good;
`--true-latent-noise`, `--true-latent-blur`, `--true-shape-blur` and `--true-hedge-maps` augment
them as `train_autoencoder.py --decoder-only` does, so that one run teaches both what that round
teaches (imperfect latents drawn as clean shapes) and the switch frames: run one after the other,
each undid part of the other (docs/training.md, "Session 35").
Losses are stage 1c's: object-weighted L1 + MSE + image gradients + frame-to-frame differences.
A pixel loss against a truth that sits a pixel or two off the generated object pays the decoder
for hedging, and a hedged square is a rounded one. Two terms judge the outline wherever the
object was drawn (on `longvid eval`'s soft silhouettes, colour and background taken out, in a
window around the object, one-object samples only): `--corner-weight` asks for the true corner
cover about the drawn object's own centre (`train_generator.corner_loss`), and `--adv-weight`
adds a shape-conditioned patch critic (`train_generator.PixelCritic`, hinge loss), the
adversarial term image autoencoders are trained with so that their decoders draw sharp edges.
The encoder, the latent statistics and the generator do not change: only pictures do.
"""

from __future__ import annotations

import argparse
import copy
import glob
import re
from pathlib import Path

import numpy as np
import torch

from diag_generator import pixel_scores
from prepare_latents import TF, label_maps, sample_clip
from train_autoencoder import augment_latents, hedge_maps, hedge_problem, normalised_maps, raw_maps
from train_generator import (CaptionBank, Data, PixelCritic, build_batch, clip_segment_shares, corner_loss, crop_box,
                             motion_clip_weights,
                             parse_oversample, prompt_context, sample_target, sampler_setup, silhouettes, target_shapes,
                             target_start, video_frames)
from trainutil import (REPO, Run, edge_loss, hinge_critic_loss, motion_loss, object_pixel_weight, parse_focus,
                       warmup_cosine)

from longvid.config import load_config, weight_path
from longvid.loading import load_autoencoder, load_into, load_minilm, read_state_dict, save_autoencoder
from longvid.model import build_transformer
from longvid.text import HFTextEncoder
from longvid.vae import from_uint8

OBJECT_WEIGHT = 10.0  # as in train_autoencoder.py


class Pixels:
    """The true pixel frames of the shards' clips, replayed from each shard's seed on first use."""

    def __init__(self, files: list[str], shard_size: int, latent_frames: int, size: int, seed: int) -> None:
        self.files = files
        self.shard_size, self.latent_frames, self.size, self.seed = shard_size, latent_frames, size, seed
        self.cache: dict[int, list[np.ndarray]] = {}

    def replay(self, position: int, clips: int, circles: bool = False) -> list[tuple]:
        """`sample_clip`'s first `clips` draws of shard file `position` (with `circles`, as
        `prepare_latents.py --shape-labels` drew them: the main frames are the same)."""
        shard = int(re.search(r"shard_(\d+)", Path(self.files[position]).name).group(1))
        rng = np.random.default_rng([self.seed, shard])
        return [sample_clip(rng, self.latent_frames, self.size, circles=circles) for _ in range(clips)]

    def clip(self, index: int) -> np.ndarray:
        """(F, H, W, 3) uint8 frames of clip `index` of the concatenated shards."""
        position, within = divmod(index, self.shard_size)
        if position not in self.cache:
            self.cache[position] = [drawn[0] for drawn in self.replay(position, self.shard_size)]
        return self.cache[position][within]


def check_replay(pixels: Pixels, data: Data, ae, clips: list[int]) -> float:
    """Largest latent difference between the replayed clips and the stored latents: re-encoded by
    `ae`, or, for a `--shape-labels` autoencoder (its latents are made from targets, not by its
    encoder), the label channels made again from the replayed scene."""
    worst = 0.0
    with torch.no_grad():
        for c in clips:
            if ae.cfg.shape_labels:
                position, within = divmod(c, pixels.shard_size)
                *_, cover, shapes = pixels.replay(position, within + 1, circles=True)[within]
                z = label_maps(cover, shapes, ae.spatial_factor).float()
                stored = data.latents[c, :, ae.cfg.appearance_channels :]
            else:
                z = ae.encode(from_uint8(pixels.clip(c)[None]))[0].transpose(0, 1)
                stored = data.latents[c]
            worst = max(worst, float((z - stored.float()).abs().max()))
    return worst


def background_switch_weights(data: Data, share: float) -> np.ndarray | None:
    """Sampling probability of each clip when `share` of the draws go to clips whose prompt
    switches the background (the rest uniform; None when `share` is 0): the first frames of a
    new background are where the decoder, remembering the old one, draws it on (a teleport)."""
    if not share:
        return None
    hits = np.array([any(a.background != b.background for a, b in zip(specs, specs[1:])) for specs in data.specs])
    if not hits.any():
        raise SystemExit("--background-switch-share: no clip in --data switches its background")
    return np.full(data.n, (1.0 - share) / data.n) + share * hits / hits.sum()


def focus_clip_weights(data: Data, focus: dict[str, object], factor: float) -> np.ndarray:
    """Sampling probability of each clip when the scene `focus` names (e.g. {"shape": "square",
    "motion": "circling", "background": "gray"}) is drawn `factor` times as often: a clip's weight is
    1 plus (factor - 1) x the share of its latent frames whose segment has every named attribute.
    Circling squares on gray are in 14 of the 400 clips of session 42's label latents."""
    shares = clip_segment_shares(data, lambda spec: all(getattr(spec, k) == v for k, v in focus.items()))
    if not shares.any():
        named = " ".join(f"{k}={v}" for k, v in focus.items())
        raise SystemExit(f"--focus {named}: no clip in --data shows that scene; name fewer attributes")
    weights = 1.0 + (factor - 1.0) * shares
    return weights / weights.sum()


def draw_weights(*weights: np.ndarray | None) -> np.ndarray | None:
    """Sampling probabilities over clips from several reasons to draw some clips more often (each
    a probability vector, or None for uniform): their product, normalised (None if all are None)."""
    given = [w for w in weights if w is not None]
    if not given:
        return None
    product = np.prod(given, axis=0)
    return product / product.sum()


def augment_true(ae, z: torch.Tensor, noise: float, blur: float, shape_blur: float,
                 hedge: tuple[float, float]) -> torch.Tensor:
    """True latents (B, C, F, h, w) as `train_autoencoder.py --decoder-only` hands them to the
    decoder: appearance channels with `noise` (a share of each channel's spread) and `blur`; an
    autoencoder's shape or label channels hedged (`hedge_maps`, on the maps in the encoder's
    units) and augmented with `noise` and `shape_blur`. All zero and (1, 0): `z` as it is."""
    if not (noise or blur or shape_blur) and tuple(hedge) == (1.0, 0.0):
        return z
    c = ae.cfg.appearance_channels
    appearance = augment_latents(z[:, :c], noise, blur)
    if c == z.shape[1]:
        return appearance
    maps = normalised_maps(ae, hedge_maps(raw_maps(ae, z), *hedge))
    return torch.cat([appearance, augment_latents(maps, noise, shape_blur)], dim=1)


def older_frame_weights(frames: int, weight: float) -> torch.Tensor | None:
    """(frames,) loss weights of a block's decoded pixel frames: 1 for the newest frame of each
    latent frame (the one its shape label describes), `weight` for the TF - 1 older ones, which
    the decoder places between two latent frames and draws worst (docs/training.md, session 42);
    None at 1 (every frame alike, as the older recipes)."""
    if weight == 1.0:
        return None
    w = torch.full((frames,), float(weight))
    w[TF - 1 :: TF] = 1.0
    return w


def pixel_loss(y: torch.Tensor, x: torch.Tensor, object_weight: float, halo_weight: float, edge_weight: float,
               motion_weight: float, frame_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Stage 1c's loss: decoded y against true pixels x (B, 3, F, H, W), object-weighted L1 + MSE
    + image gradients + frame-to-frame differences; `frame_weight` (F,) weighs frames apart."""
    weight = object_pixel_weight(x, object_weight, halo_weight)
    if frame_weight is not None:
        weight = weight * frame_weight[:, None, None]
    loss = ((weight * (y - x).abs()).mean() + (weight * (y - x).pow(2)).mean()) / weight.mean()
    return loss + edge_weight * edge_loss(y, x, weight) + motion_weight * motion_loss(y, x, weight)


def mixed_loss(y: torch.Tensor, x: torch.Tensor, n_true: int, args) -> tuple[torch.Tensor, ...]:
    """The loss of a batch whose last `n_true` samples decode true latents and the rest the
    generator's -> (loss weighted by sample count, generated samples' loss, true samples' loss).
    The generated samples' objects weigh `--generated-object-weight`, the true ones' OBJECT_WEIGHT."""
    n_gen = len(y) - n_true
    terms = (args.halo_weight, args.edge_weight, args.motion_weight, older_frame_weights(y.shape[2], args.older_frame_weight))
    loss_gen = pixel_loss(y[:n_gen], x[:n_gen], args.generated_object_weight, *terms) if n_gen else torch.zeros(())
    loss_true = pixel_loss(y[n_gen:], x[n_gen:], OBJECT_WEIGHT, *terms) if n_true else torch.zeros(())
    return (loss_gen * n_gen + loss_true * n_true) / len(y), loss_gen, loss_true


def object_windows(seen: torch.Tensor, truth: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of `size` x `size` pixels of silhouettes (N, 1, F, H, W), one per sample, centred
    on the true object's mean position over the block and kept inside the frame -> (seen, truth)
    (N, 1, F, size, size). A window no larger than the frame is the frame itself."""
    H, W = truth.shape[-2:]
    if size >= H and size >= W:
        return seen, truth
    mass = truth.sum(dim=(1, 2))  # (N, H, W)
    total = mass.sum(dim=(1, 2)).clamp_min(1e-6)
    cy = (mass.sum(dim=2) * (torch.arange(H) + 0.5)).sum(dim=1) / total
    cx = (mass.sum(dim=1) * (torch.arange(W) + 0.5)).sum(dim=1) / total
    h, w = min(size, H), min(size, W)
    tops = (cy - h / 2).round().long().clamp(0, H - h)
    lefts = (cx - w / 2).round().long().clamp(0, W - w)
    crop = [(slice(int(t), int(t) + h), slice(int(l), int(l) + w)) for t, l in zip(tops, lefts)]
    return (torch.stack([seen[i, ..., r, c] for i, (r, c) in enumerate(crop)]),
            torch.stack([truth[i, ..., r, c] for i, (r, c) in enumerate(crop)]))


def outline_losses(y: torch.Tensor, x: torch.Tensor, classes: torch.Tensor, judged: torch.Tensor, window: int,
                   corner_weight: float, critic, frame_weight: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, tuple | None]:
    """The outline terms of decoded y against true pixels x (B, 3, F, H, W): silhouettes as
    `longvid eval` reads them, windowed around the object, of the `judged` (B,) samples whose
    object stands out from its background -> (corner loss (0 without `corner_weight`), the
    critic's (fake, real, classes) frames or None). With neither term on nothing is computed.
    `frame_weight` (F,) weighs the corner loss's frames apart."""
    loss = y.new_zeros(())
    if not corner_weight and critic is None:  # the older recipes: no silhouettes in their steps
        return loss, None
    seen, sil, valid = silhouettes(y, x)
    keep = valid & judged
    if not keep.any():
        return loss, None
    seen, sil = object_windows(seen[keep], sil[keep], window)
    if corner_weight:
        loss = corner_loss(seen, sil, frame_weight=frame_weight)
    if critic is None:
        return loss, None
    fake, cls = video_frames(seen, classes[keep])
    return loss, (fake, video_frames(sil, classes[keep])[0], cls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="longvid-shapes")
    ap.add_argument("--data", default=str(REPO / "runs" / "latents" / "shard_*.pt"))
    ap.add_argument("--run", default=str(REPO / "runs" / "decoder-tune"))
    ap.add_argument("--out", default=None, help="default: <run>/autoencoder.safetensors")
    ap.add_argument("--generator", default=None, help="default: the config's transformer weights")
    ap.add_argument("--autoencoder", default=None, help="default: the config's vae weights")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=8, help="latent cells per side of the decoded window (0: whole frame)")
    ap.add_argument("--warmup", type=int, default=2, help="true latent frames decoded before the block")
    ap.add_argument("--true-share", type=float, default=0.25, help="share of samples decoding the true latents")
    ap.add_argument("--switch-share", type=float, default=0.3,
                    help="share of samples from clips with a prompt switch taken at the switch's block or the next")
    ap.add_argument("--background-switch-share", type=float, default=0.0,
                    help="share of clips drawn from those that switch background (the rest uniform)")
    ap.add_argument("--true-latent-noise", type=float, default=0.0,
                    help="Gaussian noise on the true samples' latents, a share of each channel's spread "
                         "(train_autoencoder.py's --latent-noise)")
    ap.add_argument("--true-latent-blur", type=float, default=0.0, metavar="A",
                    help="the true samples' --latent-blur (appearance channels)")
    ap.add_argument("--true-shape-blur", type=float, default=0.0, metavar="A",
                    help="the true samples' --shape-blur (shape or label channels)")
    ap.add_argument("--true-hedge-maps", type=float, nargs=2, default=(1.0, 0.0), metavar=("LOW", "LEAK"),
                    help="the true samples' --hedge-maps (shape or label channels)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--edge-weight", type=float, default=3.0)
    ap.add_argument("--motion-weight", type=float, default=1.0)
    ap.add_argument("--halo-weight", type=float, default=0.0,
                    help="loss weight of the 4-pixel ring of background around objects (0: weight 1 like the rest)")
    ap.add_argument("--generated-object-weight", type=float, default=OBJECT_WEIGHT,
                    help="loss weight of the object's pixels in the generated samples (the true ones keep "
                         f"{OBJECT_WEIGHT:g}): the generated object sits a little off the truth, and a heavy loss "
                         "there teaches the decoder to round it")
    ap.add_argument("--corner-weight", type=float, default=0.0,
                    help="weight of the corner-cover loss on the decoded silhouettes (0: off)")
    ap.add_argument("--adv-weight", type=float, default=0.0,
                    help="weight of the shape-conditioned silhouette critic's hinge loss (0: no critic)")
    ap.add_argument("--adv-from", type=int, default=50, help="steps the critic trains alone before the decoder feels it")
    ap.add_argument("--critic-lr", type=float, default=2e-4)
    ap.add_argument("--window", type=int, default=48,
                    help="pixels per side of the window around the object that the corner loss and the critic judge")
    ap.add_argument("--oversample-motion", nargs="*", default=[], metavar="MOTION=FACTOR",
                    help="draw clips with this motion FACTOR times as often, e.g. circling=3 (with "
                         "--background-switch-share: both, multiplied)")
    ap.add_argument("--older-frame-weight", type=float, default=1.0, metavar="W",
                    help="weight of the pixel and corner losses on the three older pixel frames of each latent frame "
                         "against its newest, whose shape the label gives (docs/training.md, session 42)")
    ap.add_argument("--focus", nargs="*", default=[], metavar="ATTRIBUTE=VALUE",
                    help="with --focus-factor: draw clips showing this scene more often, e.g. shape=square "
                         "motion=circling background=gray (docs/training.md, session 42)")
    ap.add_argument("--focus-factor", type=float, default=1.0,
                    help="how many times as often --focus's scene is drawn (multiplied with the other draws)")
    ap.add_argument("--shard-seed", type=int, default=1, help="prepare_latents.py's --seed")
    ap.add_argument("--shard-size", type=int, default=50, help="prepare_latents.py's --shard-size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-samples", type=int, default=96, help="teacher-forced blocks scored at the end")
    args = ap.parse_args()
    factors = parse_oversample(args.oversample_motion)  # a typo fails before any data is loaded
    try:
        focus = parse_focus(args.focus)
    except ValueError as error:
        ap.error(f"--focus {error}")
    if args.older_frame_weight <= 0:
        ap.error(f"--older-frame-weight is a loss weight: give a positive number, not {args.older_frame_weight:g}")
    if args.focus_factor <= 0:
        ap.error(f"--focus-factor is how many times as often: give a positive number, not {args.focus_factor:g}")
    if bool(focus) != (args.focus_factor != 1.0):
        ap.error("--focus names the scene and --focus-factor how many times as often it is drawn: give both, or neither")
    for name in ("true_share", "switch_share", "background_switch_share"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            ap.error(f"--{name.replace('_', '-')} is a share of the samples: give a number from 0 to 1")
    for name in ("generated_object_weight", "corner_weight", "adv_weight"):
        if getattr(args, name) < 0:
            ap.error(f"--{name.replace('_', '-')} is a loss weight: give 0 or more")
    if args.window < 8:
        ap.error("--window is the side of the judged window in pixels: give 8 or more")
    for name in ("true_latent_noise", "true_latent_blur", "true_shape_blur"):
        if getattr(args, name) < 0:
            ap.error(f"--{name.replace('_', '-')} is an augmentation strength: give 0 or more")
    if problem := hedge_problem("--true-hedge-maps", *args.true_hedge_maps):
        ap.error(problem)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = load_config(args.config)
    S, W, k, steps_t, flow = sampler_setup(cfg)
    out = Path(args.out or Path(args.run) / "autoencoder.safetensors")

    generator = build_transformer(cfg.model).eval().requires_grad_(False)
    gen_path = args.generator or weight_path(cfg, "transformer")
    state, _ = read_state_dict(gen_path)
    load_into(generator, state, gen_path)
    ae = load_autoencoder(args.autoencoder or weight_path(cfg, "vae"))
    ae.encoder.requires_grad_(False)
    frozen = copy.deepcopy(ae).eval()  # the starting decoder, for the before/after figures
    text_model, tok = load_minilm()
    bank = CaptionBank(HFTextEncoder(text_model, tok, cfg.text.max_length))
    data = Data(args.data)
    pixels = Pixels(sorted(glob.glob(args.data)), args.shard_size, data.t, cfg.video.height, args.shard_seed)
    worst = check_replay(pixels, data, ae, [0, data.n - 1])
    if worst > 0.05:
        raise SystemExit(f"replayed clips do not match the shards (latent difference {worst:.3f}): "
                         "pass prepare_latents.py's --seed and --shard-size")

    run = Run(args.run, ["loss", "loss_generated", "loss_true", "lr", "loss_corner", "loss_adv", "loss_critic"])
    opt = torch.optim.AdamW(ae.decoder.parameters(), lr=args.lr, weight_decay=1e-4)
    critic = opt_critic = None
    critics = {}
    if args.adv_weight:
        critic = PixelCritic()
        opt_critic = torch.optim.Adam(critic.parameters(), lr=args.critic_lr, betas=(0.5, 0.99))
        critics = {"critic": critic, "opt_critic": opt_critic}
    start = run.resume(model=ae, opt=opt, **critics)
    rng = np.random.default_rng([args.seed, start])
    run.log(f"{data.n} clips; generator {gen_path}; decoder from {args.autoencoder or cfg.weights.vae}; "
            f"replay check {worst:.4f}; sampler timesteps {[round(t, 1) for t in steps_t]}")
    positions = torch.arange(S + W + k)
    clip_weights = draw_weights(background_switch_weights(data, args.background_switch_share),
                                motion_clip_weights(data, factors) if factors else None,
                                focus_clip_weights(data, focus, args.focus_factor) if focus else None)

    def draw(batch: int):
        """Teacher-forced samples whose block has `--warmup` frames before it -> latents to decode
        (B, C, warmup + k, c, c) with the generator's blocks, the same with the true blocks, and
        the true pixels of the blocks (B, 3, TF k, TF c, TF c)."""
        clips, x0, masks, target, seg_of_slot, starts = build_batch(data, rng, batch * 2, S, W, k, args.switch_share, clip_weights)
        first = target_start(target)  # slot of the block's first frame
        keep = (first >= args.warmup).nonzero()[:batch, 0]
        clips, x0, masks, target, seg_of_slot = clips[keep.numpy()], x0[keep], masks[keep], target[keep], seg_of_slot[keep]
        first, starts = first[keep], starts[keep]
        B = target.shape[0]
        with torch.no_grad():
            text = prompt_context(generator, bank, data, clips, seg_of_slot, rng)
        made, _ = sample_target(generator, x0, target, steps_t, flow, text=text, frame_positions=positions,
                                frame_mask=masks)
        c = min(args.crop or x0.shape[-1], x0.shape[-1])
        scale = cfg.video.height // x0.shape[-2]
        gen, true, truth = [], [], []
        for i in range(B):
            f0, n = int(first[i]), int(starts[i])
            top, left = crop_box(x0[i, :, f0 : f0 + k], c)
            rows, cols = slice(top, top + c), slice(left, left + c)
            warm = x0[i, :, f0 - args.warmup : f0, rows, cols]
            gen.append(torch.cat([warm, made[i, :, f0 : f0 + k, rows, cols]], dim=1))
            true.append(torch.cat([warm, x0[i, :, f0 : f0 + k, rows, cols]], dim=1))
            # clip latent frame n covers pixel frames TF n - 3 .. TF n
            frames = pixels.clip(int(clips[i]))[TF * n - (TF - 1) : TF * (n + k) - (TF - 1),
                                                top * scale : (top + c) * scale, left * scale : (left + c) * scale]
            truth.append(from_uint8(frames[None])[0])
        # the outline terms judge one-object blocks that keep one shape throughout
        classes = target_shapes(data, clips, seg_of_slot, target)
        judged = torch.tensor([data.specs[c][int(seg_of_slot[i, int(first[i])])].count == 1
                               and bool((seg_of_slot[i, int(first[i]) : int(first[i]) + k] == seg_of_slot[i, int(first[i])]).all())
                               for i, c in enumerate(clips)])
        return torch.stack(gen), torch.stack(true), torch.stack(truth), classes, judged

    def lr_at(step: int) -> float:
        return warmup_cosine(step, args.lr, args.steps, warmup=50, floor=0.1)

    ae.train()
    for step in range(start, args.steps):
        gen, true, truth, classes, judged = draw(args.batch)
        n_true = round(len(gen) * args.true_share)
        true = augment_true(ae, true[:n_true], args.true_latent_noise, args.true_latent_blur, args.true_shape_blur,
                            args.true_hedge_maps)
        z = torch.cat([gen[n_true:], true])
        x = torch.cat([truth[n_true:], truth[:n_true]])  # z's pixels, in z's order
        classes, judged = torch.cat([classes[n_true:], classes[:n_true]]), torch.cat([judged[n_true:], judged[:n_true]])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        y = ae.decode(z, first=False)[:, :, TF * args.warmup :]
        loss, loss_gen, loss_true = mixed_loss(y, x, n_true, args)
        loss_corner, frames = outline_losses(y, x, classes, judged, args.window, args.corner_weight, critic,
                                             older_frame_weights(y.shape[2], args.older_frame_weight))
        loss_adv = loss_critic = torch.zeros(())
        if frames is not None and step >= args.adv_from:
            critic.requires_grad_(False)
            loss_adv = -critic(frames[0], frames[2]).mean()
            critic.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        (loss + args.corner_weight * loss_corner + args.adv_weight * loss_adv).backward()
        torch.nn.utils.clip_grad_norm_(ae.decoder.parameters(), 1.0)
        opt.step()
        if frames is not None:  # hinge loss: true silhouettes above +1, decoded ones below -1
            fake, real, cls = frames
            loss_critic = hinge_critic_loss(critic(real, cls), critic(fake.detach(), cls))
            opt_critic.zero_grad(set_to_none=True)
            loss_critic.backward()
            opt_critic.step()
        if step % 10 == 0:
            run.record(step, loss=loss.item(), loss_generated=loss_gen.item(), loss_true=loss_true.item(), lr=lr_at(step),
                       loss_corner=loss_corner.item(), loss_adv=loss_adv.item(), loss_critic=loss_critic.item())
        if step % 50 == 0:
            run.log(f"step {step}/{args.steps} loss {loss.item():.4f} (generated {loss_gen.item():.4f}, "
                    f"true {loss_true.item():.4f}; corner {loss_corner.item():.4f}, adv {loss_adv.item():.3f}, "
                    f"critic {loss_critic.item():.3f}) {run.elapsed / 60:.1f} min")
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            run.save(step + 1, model=ae, opt=opt, **critics)
            save_autoencoder(ae.eval(), out)
            ae.train()
    ae.eval()
    save_autoencoder(ae, out)
    run.log(f"exported {out}")

    # Before/after on fresh teacher-forced blocks (the evaluator's detector on whole frames).
    scores = {"before": [], "after": []}
    shapes = []
    with torch.no_grad():
        for _ in range(max(1, args.eval_samples // args.batch)):
            clips, x0, masks, target, seg_of_slot, _ = build_batch(data, rng, args.batch, S, W, k, 0.0)
            B = target.shape[0]
            text = prompt_context(generator, bank, data, clips, seg_of_slot, rng)
            made, _ = sample_target(generator, x0, target, steps_t, flow, text=text, frame_positions=positions,
                                    frame_mask=masks)
            starts = target_start(target)
            keep = [i for i in range(B) if int(starts[i]) >= 1]
            first = [int(starts[i]) for i in keep]
            z = torch.stack([made[i, :, f - 1 : f + k] for i, f in zip(keep, first)])
            specs = [data.specs[clips[i]][int(seg_of_slot[i, f])] for i, f in zip(keep, first)]
            for name, model in (("before", frozen), ("after", ae)):
                scores[name].append(pixel_scores(model, z, specs, warm=1))
            shapes.extend(sp.shape for sp in specs)
    for name, v in scores.items():
        a = np.concatenate(v)
        by = ", ".join(f"{s} {a[[x == s for x in shapes], 1].mean():.2f}" for s in sorted(set(shapes)))
        run.log(f"generated blocks decoded {name}: colour {a[:, 0].mean():.2f}, shape {a[:, 1].mean():.2f} "
                f"({by}), object count {a[:, 2].mean():.2f} ({len(shapes)} blocks)")


if __name__ == "__main__":
    main()
