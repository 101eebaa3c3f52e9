"""How `longvid eval` reads motion on the world's own clips, on the world's orbit drawn as a
polygon (one straight side per four frames, as a codec with one latent frame per four frames
draws it), on random jitter, and optionally on generated videos, per prompted motion.

    python scripts/motion_reading.py                                  # world, polygon, jitter (~1 min)
    python scripts/motion_reading.py --videos runs/evS2               # + the videos of an eval_builtin run

Each line: the share of frames (after each segment's first 8) read as each label, most first.
docs/training.md, "Session 38", has the table this printed.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from longvid import evaluate  # noqa: E402
from longvid.world import FPS, MOTIONS, SHAPES, SIZES, SceneSpec, draw, make_clip, parse_prompt  # noqa: E402

SIZE = 128
WINDOW = round(evaluate.MOTION_WINDOW_SECONDS * FPS)


def labels(frames: np.ndarray) -> list[str | None]:
    """The evaluator's motion label of the first track, frame by frame."""
    detections = [evaluate.detect_frame(f) for f in frames]
    _, _, motion = evaluate._track_motion(detections, *frames.shape[1:3], WINDOW, FPS)
    return [t[0] for t in motion]


def polygon(path: np.ndarray, side: int = 4, phase: int = 0) -> np.ndarray:
    """`path` (F, 2) kept at every `side`-th frame from `phase` and joined by straight lines."""
    out = path.copy()
    keys = list(range(phase, len(path), side))
    for a, b in zip(keys, keys[1:]):
        t = (np.arange(a, b + 1) - a)[:, None] / (b - a)
        out[a:b + 1] = (1 - t) * path[a] + t * path[b]
    return out


def show(name: str, counts: Counter) -> None:
    n = sum(counts.values())
    print(f"{name:22s} {n:6d} frames  " + ", ".join(f"{k}: {v / n:.3f}" for k, v in counts.most_common(4)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=10, help="world clips per motion")
    ap.add_argument("--videos", type=Path, default=None,
                    help="a scripts/eval_builtin.py output directory (<timeline>-s<seed>-<mode>.mp4)")
    args = ap.parse_args()

    counts: dict[str, Counter] = {}
    for motion in MOTIONS:
        for seed in range(args.clips):
            spec = SceneSpec(shape=SHAPES[seed % 3], size=SIZES[seed % len(SIZES)], motion=motion,
                             colour="red", background="gray")
            frames, truth = make_clip(spec, 80, seed, SIZE)
            counts.setdefault(f"world {motion}", Counter()).update(labels(frames)[WINDOW:])
            if motion != "circling":
                continue
            for phase in range(4):
                path = polygon(truth.positions[:, 0].astype(np.float64), 4, phase)
                drawn = np.stack([draw(np.empty_like(frames[0]), spec, p[None]) for p in path])
                counts.setdefault("world orbit as polygon", Counter()).update(labels(drawn)[WINDOW:])
    rng = np.random.default_rng(0)
    counts["random steps (windows)"] = Counter(
        evaluate.classify_motion(rng.normal(0, 2.0, (WINDOW, 2)), FPS, SIZE) for _ in range(200))

    for video in sorted(args.videos.glob("*.mp4")) if args.videos else []:
        timeline = REPO / "prompts" / f"{video.name.split('-s')[0]}.yaml"
        prompts = yaml.safe_load(timeline.read_text())["prompts"]
        read = labels(np.stack(list(evaluate.read_video(video))))
        starts = [round(float(p["at"]) * FPS) for p in prompts] + [len(read)]
        for i, p in enumerate(prompts):
            motion = parse_prompt(p["text"]).motion
            counts.setdefault(f"generated {motion}", Counter()).update(read[starts[i] + WINDOW:starts[i + 1]])

    for name, c in counts.items():
        show(name, c)


if __name__ == "__main__":
    main()
