"""Stage 2 data: shapes-world clips encoded to latents by the trained autoencoder.

    python scripts/prepare_latents.py --clips 1200        # resumable: finished shards are kept

Each clip is `--latent-frames` latent frames long (4T-3 pixel frames) with 0-2 prompt switches
placed on block boundaries (where the engine switches prompts), the scene carrying on across
each switch. A shard holds latents (N, T, C, h, w) float16, each latent frame's segment index,
and each segment's spec; captions are drawn at training time, so every epoch phrases them anew.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from trainutil import REPO

from longvid.loading import load_autoencoder
from longvid.vae import from_uint8
from longvid.world import make_clip, random_spec, switched_spec

BLOCK = 3  # latent frames per block (configs/longvid-shapes.yaml)
TF = 4  # pixel frames per latent frame


def sample_clip(rng: np.random.Generator, latent_frames: int, size: int):
    blocks = latent_frames // BLOCK
    n_switch = int(rng.choice([0, 1, 2], p=[0.3, 0.45, 0.25]))
    switch_blocks = sorted(rng.choice(np.arange(1, blocks), size=min(n_switch, blocks - 1), replace=False))
    specs = [random_spec(rng)]
    for _ in switch_blocks:
        specs.append(switched_spec(rng, specs[-1]))
    # latent frame j covers pixel frames 4j-3 .. 4j; a block starting at latent m starts at 4m-3
    starts = [0] + [TF * BLOCK * int(b) - (TF - 1) for b in switch_blocks]
    pixel_frames = TF * latent_frames - (TF - 1)
    frames, truth = make_clip(list(zip(starts, specs)), pixel_frames, rng, size)
    seg_pixel = truth.segment
    seg_latent = np.array([seg_pixel[max(0, TF * j - (TF - 1))] for j in range(latent_frames)])
    return frames, seg_latent, specs


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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ae = load_autoencoder(args.autoencoder)
    for shard in range((args.clips + args.shard_size - 1) // args.shard_size):
        path = out / f"shard_{shard:04d}.pt"
        if path.exists():
            continue
        rng = np.random.default_rng([args.seed, shard])
        latents, segments, specs = [], [], []
        for _ in range(args.shard_size):
            frames, seg, sp = sample_clip(rng, args.latent_frames, args.size)
            with torch.no_grad():
                z = ae.encode(from_uint8(frames[None]))[0]  # (C, T, h, w)
            latents.append(z.transpose(0, 1).half())
            segments.append(torch.from_numpy(seg))
            specs.append([asdict(s) for s in sp])
        tmp = path.with_suffix(".tmp")
        torch.save({"latents": torch.stack(latents), "segments": torch.stack(segments), "specs": specs}, tmp)
        tmp.rename(path)
        print(f"{path.name}: {len(latents)} clips", flush=True)


if __name__ == "__main__":
    main()
