"""Stage 2 data: shapes-world clips encoded to latents by the trained autoencoder.

    python scripts/prepare_latents.py --clips 1200        # resumable: finished shards are kept

Each clip is `--latent-frames` latent frames long (4T-3 pixel frames) with 0-2 prompt switches
placed on block boundaries (where the engine switches prompts), the scene carrying on across
each switch. A shard holds latents (N, T, C, h, w) float16, each latent frame's segment index,
and each segment's spec; captions are drawn at training time, so every epoch phrases them anew.

`--partners` also renders every clip a second time with its shapes exchanged (circle for square,
square for circle, a triangle for one of the two) along the very same trajectory, and stores
those latents and specs beside the clip's (`partner_latents`, `partner_specs`): pairs that differ
only in the shape the caption names, for `train_generator.py --pair-weight`.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from trainutil import REPO, object_cover, shape_maps

from longvid.loading import load_autoencoder
from longvid.vae import from_uint8
from longvid.world import SHAPES, SceneSpec, make_clip, random_spec, switched_spec

BLOCK = 3  # latent frames per block (configs/longvid-shapes.yaml)
TF = 4  # pixel frames per latent frame


def sample_clip(rng: np.random.Generator, latent_frames: int, size: int,
                partner_rng: np.random.Generator | None = None, circles: bool = False):
    """frames (F, H, W, 3) uint8, each latent frame's segment (T,), the segments' specs; with
    `partner_rng`, also the partner clip's frames and specs (`partner_specs`). The partner's
    shapes are drawn from `partner_rng` alone, so the main clips are the same with or without.
    With `circles` (for `--shape-labels`), instead of a partner: the same scene drawn as circles
    (F, H, W, 3), their coverage (F, H, W) float32 and each frame's shape (F,) as an index into
    SHAPES; the main clips are the same again."""
    blocks = latent_frames // BLOCK
    n_switch = int(rng.choice([0, 1, 2], p=[0.3, 0.45, 0.25]))
    switch_blocks = sorted(rng.choice(np.arange(1, blocks), size=min(n_switch, blocks - 1), replace=False))
    specs = [random_spec(rng)]
    for _ in switch_blocks:
        specs.append(switched_spec(rng, specs[-1]))
    # latent frame j covers pixel frames 4j-3 .. 4j; a block starting at latent m starts at 4m-3
    starts = [0] + [TF * BLOCK * int(b) - (TF - 1) for b in switch_blocks]
    pixel_frames = TF * latent_frames - (TF - 1)
    twin = copy.deepcopy(rng)  # the scene's own draws (places, headings) replayed for the partner
    frames, truth = make_clip(list(zip(starts, specs)), pixel_frames, rng, size)
    seg_pixel = truth.segment
    seg_latent = np.array([seg_pixel[max(0, TF * j - (TF - 1))] for j in range(latent_frames)])
    if circles:
        return (frames, seg_latent, specs, *drawn_as_circles(list(zip(starts, specs)), truth, twin, size))
    if partner_rng is None:
        return frames, seg_latent, specs
    partners = partner_specs(specs, partner_rng)
    partner_frames, _ = make_clip(list(zip(starts, partners)), pixel_frames, twin, size)
    return frames, seg_latent, specs, partner_frames, partners


def drawn_as_circles(timeline: list[tuple[int, SceneSpec]], truth, twin: np.random.Generator,
                     size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clip of `timeline` [(first frame, spec), ...] (its `ClipTruth`, `truth`) drawn again with
    every shape a circle, from `twin`, a copy of the generator the clip was drawn from (so the
    same places and headings) -> the circles' frames (F, H, W, 3), their coverage (F, H, W) float32
    and each frame's true shape (F,) as an index into SHAPES: what `label_latents` is built from."""
    frames_n = len(truth.segment)
    drawn = [(f, replace(s, shape="circle")) for f, s in timeline]
    circle_frames, circle_truth = make_clip(drawn, frames_n, twin, size)
    cover = np.stack([object_cover(circle_truth.spec_at(f), circle_truth.positions[f], size) for f in range(frames_n)])
    shapes = np.array([SHAPES.index(truth.spec_at(f).shape) for f in range(frames_n)])
    return circle_frames, cover, shapes


def partner_specs(specs: list[SceneSpec], rng: np.random.Generator) -> list[SceneSpec]:
    """`specs` with every shape exchanged: circle <-> square, triangle -> one of the two (drawn
    once per clip). Motion in the world never depends on the shape, so the same scene draws
    give the same trajectory."""
    swap = {"circle": "square", "square": "circle", "triangle": ("circle", "square")[int(rng.integers(2))]}
    return [replace(s, shape=swap[s.shape]) for s in specs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "runs" / "latents"))
    ap.add_argument("--autoencoder", default=str(REPO / "longvid" / "weights" / "shapes" / "autoencoder.safetensors"))
    ap.add_argument("--clips", type=int, default=1200)
    ap.add_argument("--shard-size", type=int, default=50)
    ap.add_argument("--latent-frames", type=int, default=27)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--partners", action="store_true",
                    help="also store each clip rendered with its shapes exchanged (about twice the time)")
    ap.add_argument("--shape-labels", action="store_true",
                    help="latents in the layout of a --shape-labels autoencoder, from their targets: the appearance "
                         "channels of the same scene drawn as circles (by --autoencoder), then each frame's shape "
                         "as a label over the circles' coverage (docs/training.md, session 32)")
    args = ap.parse_args()
    if args.shape_labels and args.partners:
        ap.error("--shape-labels and --partners each render a second clip: pick one")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ae = load_autoencoder(args.autoencoder)
    if args.shape_labels and ae.cfg.shape_channels and not ae.cfg.shape_labels:
        ap.error(f"--shape-labels: {args.autoencoder}'s shape channels hold coverage, not labels; name the "
                 "autoencoder the labels' appearance channels come from (the default, or a --shape-labels one)")
    for shard in range((args.clips + args.shard_size - 1) // args.shard_size):
        path = out / f"shard_{shard:04d}.pt"
        if path.exists():
            continue
        rng = np.random.default_rng([args.seed, shard])
        partner_rng = np.random.default_rng([args.seed, shard, 1]) if args.partners else None
        shard_data: dict[str, list] = {"latents": [], "segments": [], "specs": [], "partner_latents": [],
                                       "partner_specs": []}
        for _ in range(args.shard_size):
            if args.shape_labels:
                frames, seg, sp, circle_frames, cover, shapes = sample_clip(rng, args.latent_frames, args.size,
                                                                            circles=True)
                shard_data["latents"].append(label_latents(ae, circle_frames, cover, shapes))
                partner = []
            else:
                frames, seg, sp, *partner = sample_clip(rng, args.latent_frames, args.size, partner_rng)
                shard_data["latents"].append(encode(ae, frames))
            shard_data["segments"].append(torch.from_numpy(seg))
            shard_data["specs"].append([asdict(s) for s in sp])
            if partner:
                shard_data["partner_latents"].append(encode(ae, partner[0]))
                shard_data["partner_specs"].append([asdict(s) for s in partner[1]])
        saved = {k: torch.stack(v) if k.endswith(("latents", "segments")) else v for k, v in shard_data.items() if v}
        tmp = path.with_suffix(".tmp")
        torch.save(saved, tmp)
        tmp.rename(path)
        print(f"{path.name}: {len(saved['latents'])} clips", flush=True)


def encode(ae, frames: np.ndarray) -> torch.Tensor:
    """One clip's frames (F, H, W, 3) uint8 -> latents (T, C, h, w) float16."""
    with torch.no_grad():
        return ae.encode(from_uint8(frames[None]))[0].transpose(0, 1).half()


def label_latents(ae, circle_frames: np.ndarray, cover: np.ndarray, shapes: np.ndarray) -> torch.Tensor:
    """A `--shape-labels` autoencoder's latents (T, C + len(SHAPES), h, w) float16 from their targets:
    `ae`'s appearance channels of the circles, then the label maps (`shape_maps`; their
    statistics are 0 and 1, so normalised they are the maps themselves)."""
    c = ae.cfg.appearance_channels
    return torch.cat([encode(ae, circle_frames)[:, :c], label_maps(cover, shapes, ae.spatial_factor)], dim=1)


def label_maps(cover: np.ndarray, shapes: np.ndarray, factor: int) -> torch.Tensor:
    """The label channels of `label_latents` (T, len(SHAPES), h, w) float16: the circles' coverage
    (F, H, W) as a map per shape of each pixel frame's shape (F,), `factor` pixels per cell."""
    maps = shape_maps(torch.from_numpy(cover)[None], torch.from_numpy(shapes)[None], factor, TF)
    return maps[0].transpose(0, 1).half()


if __name__ == "__main__":
    main()
