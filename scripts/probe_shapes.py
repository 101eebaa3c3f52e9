"""A quick look at how a model draws each shape word: short clips per prompt, read by `longvid eval`'s
frame detector, in a minute or two (the full figures take `scripts/eval_builtin.py`, 7+ minutes).

    python scripts/probe_shapes.py                                  # the default model
    python scripts/probe_shapes.py --config runs/cfg-genQ.yaml --seeds 0 1 2 --seconds 3

For every prompt and seed it prints the share of frames whose largest object reads as the
prompted shape, and that object's mean bounding-box fill and corner coverage (a square fills
its box and its corners, a circle 0.79 and almost none). Then, for the same seed, how far apart
the videos of different shape words are (mean absolute difference per pixel, grey levels): a
model that ignores a word draws nearly the same video for it.
"""

from __future__ import annotations

import argparse
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longvid import api  # noqa: E402
from longvid.config import load_config, weight_path  # noqa: E402
from longvid.evaluate import detect_frame  # noqa: E402
from longvid.loading import load_autoencoder  # noqa: E402
from longvid.vae import from_uint8  # noqa: E402
from longvid.world import SIZES, SceneSpec, make_clip, parse_prompt  # noqa: E402

PROMPTS = (
    "a red square moving right on a black background",
    "a red box moving right on a black background",
    "a red circle moving right on a black background",
    "a red triangle moving right on a black background",
    "a large yellow box moving left on dark green",
    "a white square bouncing on navy",
)


def read_clip(frames: list[np.ndarray], shape: str) -> dict[str, float]:
    """Share of frames read as `shape` and the largest object's mean fill and corners."""
    hits, fills, corners = [], [], []
    for image in frames:
        objects = detect_frame(image).objects
        hits.append(bool(objects) and objects[0].shape == shape)
        if objects:
            fills.append(objects[0].fill)
            corners.append(objects[0].corners)
    return {"right": float(np.mean(hits)), "fill": float(np.mean(fills)) if fills else float("nan"),
            "corners": float(np.mean(corners)) if corners else float("nan")}


def latent_gaps(autoencoder, sizes=SIZES, seeds=(0, 1, 2), frames: int = 25) -> dict[str, dict[str, float]]:
    """Per size, the mean latent MSE between a clip of a red circle moving right on black and
    the same clip with one thing changed (see the module docstring)."""
    def render(seed: int, size: str, **change) -> np.ndarray:
        spec = SceneSpec(**{"shape": "circle", "colour": "red", "background": "black", "motion": "right",
                            "size": size, **change})
        return make_clip(spec, frames, seed)[0]

    def encode(video: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return autoencoder.encode(from_uint8(video[None]))

    out = {}
    for size in sizes:
        gaps: dict[str, list[float]] = {}
        for seed in seeds:
            video = render(seed, size)
            changed = {"square": render(seed, size, shape="square"), "triangle": render(seed, size, shape="triangle"),
                       "moved 1 px": np.roll(video, 1, axis=2), "moved 3 px": np.roll(video, 3, axis=2),
                       "orange": render(seed, size, colour="orange")}
            base = encode(video)
            for name, other in changed.items():
                gaps.setdefault(name, []).append(float((encode(other) - base).pow(2).mean()))
        out[size] = {name: float(np.mean(v)) for name, v in gaps.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=api.DEFAULT_CONFIG)
    ap.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--latent-gaps", action="store_true", help="measure the autoencoder's latent gaps instead")
    args = ap.parse_args()
    if args.latent_gaps:
        gaps = latent_gaps(load_autoencoder(weight_path(load_config(args.config), "vae")))
        names = list(next(iter(gaps.values())))
        print(f"{'size':8s}" + "".join(f"{n:>12s}" for n in names))
        for size, row in gaps.items():
            print(f"{size:8s}" + "".join(f"{row[n]:12.4f}" for n in names))
        return
    pipe = api.load_pipeline(args.config)
    videos: dict[tuple[str, int], np.ndarray] = {}
    print(f"{'prompt':55s} seed  right  fill  corners")
    for prompt in args.prompts:
        shape = parse_prompt(prompt).shape
        for seed in args.seeds:
            timeline = api.make_timeline(pipe.config, prompt, None, args.seconds)
            frames = [f.image for f in pipe.stream(timeline, seed=seed)]
            videos[prompt, seed] = np.stack(frames).astype(np.float32)
            r = read_clip(frames, shape)
            print(f"{prompt:55s} {seed:4d}  {r['right']:.2f}  {r['fill']:.2f}  {r['corners']:.2f}", flush=True)
    print("\nsame seed, different words: mean |difference| per pixel (grey levels)")
    for a, b in combinations(args.prompts, 2):
        diffs = [np.abs(videos[a, s] - videos[b, s]).mean() for s in args.seeds]
        print(f"{np.mean(diffs):6.2f}  {a}  |  {b}")


if __name__ == "__main__":
    main()
