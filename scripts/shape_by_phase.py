"""Where a prompted shape is lost: in the generator's label channels, or in what the decoder draws
from them, and at which pixel frame of each latent frame (docs/training.md, session 42).

    python scripts/shape_by_phase.py --prompt "an orange square circling on a gray background" --seeds 0-2
    python scripts/shape_by_phase.py --true shape=square colour=orange motion=circling background=gray --seeds 0-2

`--prompt`: 15 s from the built-in model (`--config`, `--set weights.vae=...` for another decoder).
Prints, per seed, the share of the object's label mass in each shape's channel, the share of
frames `longvid eval`'s detector reads as the prompt's shape, the same with every label moved to
that shape's channel (does a right label alone make it right?), and the read share by a frame's
place in its latent frame, oldest to newest (the label describes the newest).

`--true`: the world's own clips of that scene (one object, unswitched), made into label latents as
`prepare_latents.py --shape-labels` makes them, decoded by the config's decoder: what the decoder
draws when its latents are exactly right. The world's own frames are read as well.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import replace

import numpy as np
import torch

from prepare_latents import TF, drawn_as_circles, label_latents
from trainutil import REPO, parse_focus

from longvid.api import load_pipeline
from longvid.config import load_config, weight_path
from longvid.evaluate import detect_frame
from longvid.loading import load_autoencoder
from longvid.timeline import make_timeline
from longvid.vae import to_uint8
from longvid.world import SHAPES, SceneSpec, make_clip, parse_prompt

LABELS = len(SHAPES)  # the label channels are the latents' last ones, in SHAPES order


def label_shares(lat: torch.Tensor, floor: float = 0.3) -> np.ndarray:
    """Latents (C, T, h, w) -> each shape's share (len(SHAPES),) of the label mass over the object's
    cells: those where the label channels sum to over `floor` of their peak in that frame."""
    labels = lat[-LABELS:].clamp_min(0)
    total = labels.sum(0)  # (T, h, w)
    cells = total > floor * total.flatten(1).amax(1)[:, None, None]
    mass = (labels * cells).sum(dim=(1, 2, 3))
    return (mass / mass.sum().clamp_min(1e-6)).numpy()


def force_label(lat: torch.Tensor, shape: str) -> torch.Tensor:
    """Latents (..., C, T, h, w) with all their label mass moved to `shape`'s channel."""
    out = lat.clone()
    total = out[..., -LABELS:, :, :, :].sum(-4)
    out[..., -LABELS:, :, :, :] = 0
    out[..., out.shape[-4] - LABELS + SHAPES.index(shape), :, :, :] = total
    return out


def by_place(right: list[bool]) -> list[float]:
    """Per-frame hits -> the share of hits by a frame's place in its latent frame, oldest to newest:
    frame 0 is a latent frame of its own (newest), then frames 4j - 3 .. 4j make latent frame j."""
    places = [TF - 1] + [(f - 1) % TF for f in range(1, len(right))]
    return [float(np.mean([r for r, p in zip(right, places) if p == place])) if place in places else float("nan")
            for place in range(TF)]


def decode(pipe, lat: torch.Tensor) -> np.ndarray:
    """Latents (1, C, T, h, w) -> frames (F, H, W, 3) uint8, block by block as the stream decodes."""
    pipe.decoder.reset()
    k = pipe.config.schedule.block_frames
    with torch.no_grad():
        return np.concatenate([to_uint8(pipe.decoder.decode(lat[:, :, b : b + k])) for b in range(0, lat.shape[2], k)])


def reads(frames: np.ndarray, shape: str) -> list[bool]:
    return [detect_frame(f).shape == shape for f in frames]


def true_latents(spec: SceneSpec, seed: int, latent_frames: int, size: int, appearance) -> tuple[torch.Tensor, np.ndarray]:
    """The world's clip of `spec` and its label latents (1, C, T, h, w), as prepare_latents.py makes them."""
    frames_n = TF * latent_frames - (TF - 1)
    rng = np.random.default_rng(seed)
    twin = copy.deepcopy(rng)  # the same draws, for the same scene drawn as circles
    frames, truth = make_clip(spec, frames_n, rng, size)
    circles, cover, shapes = drawn_as_circles([(0, spec)], truth, twin, size)
    lat = label_latents(appearance, circles, cover, shapes).float().transpose(0, 1)[None]
    return lat, frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="generate this prompt for --seconds and check the model's own latents")
    what.add_argument("--true", nargs="+", metavar="ATTRIBUTE=VALUE", help="decode the world's own clips of this scene")
    ap.add_argument("--config", default=str(REPO / "configs" / "longvid-shapes-labels.yaml"))
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE")
    ap.add_argument("--appearance", default=str(REPO / "longvid" / "weights" / "shapes" / "autoencoder.safetensors"),
                    help="with --true: the autoencoder whose latents of the circles are the appearance channels")
    ap.add_argument("--seeds", default="0-2", help="e.g. 0-4 or 0,3")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--latent-frames", type=int, default=27)
    args = ap.parse_args()
    lo, _, hi = args.seeds.partition("-")
    seeds = range(int(lo), int(hi) + 1) if hi else [int(s) for s in args.seeds.split(",")]
    config = load_config(args.config, args.overrides)
    if config.vae.kind != "builtin" or not load_autoencoder(weight_path(config, "vae")).cfg.shape_labels:
        ap.error(f"{args.config}: not a shape-label model (configs/longvid-shapes-labels.yaml is one)")
    pipe = load_pipeline(config)
    if args.prompt:
        shape = parse_prompt(args.prompt).shape
        if shape is None:
            ap.error(f"--prompt {args.prompt!r} names no shape: name one ({', '.join(SHAPES)})")
        timeline = make_timeline(config, args.prompt, None, args.seconds)
        for seed in seeds:
            lat = torch.cat([block for _, block, _ in pipe.latents(timeline, seed=seed)], dim=2)
            right = reads(decode(pipe, lat), shape)
            forced = reads(decode(pipe, force_label(lat, shape)), shape)
            shares = " / ".join(f"{s} {v:.2f}" for s, v in zip(SHAPES, label_shares(lat[0])))
            print(f"seed {seed}: label mass {shares}; read as a {shape} {np.mean(right):.2f}, with the label "
                  f"forced {np.mean(forced):.2f}; by place, oldest to newest "
                  f"{' / '.join(f'{x:.2f}' for x in by_place(right))}", flush=True)
        return
    try:
        spec = replace(SceneSpec(), **parse_focus(args.true))
    except ValueError as error:
        ap.error(f"--true {error}")
    appearance = load_autoencoder(args.appearance)
    for seed in seeds:
        lat, frames = true_latents(spec, seed, args.latent_frames, config.video.height, appearance)
        right = reads(decode(pipe, lat), spec.shape)
        print(f"seed {seed}: decoded read as a {spec.shape} {np.mean(right):.2f} (the world's frames "
              f"{np.mean(reads(frames, spec.shape)):.2f}); by place, oldest to newest "
              f"{' / '.join(f'{x:.2f}' for x in by_place(right))}", flush=True)


if __name__ == "__main__":
    main()
