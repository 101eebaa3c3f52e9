"""Per-block time and process memory along a long stream: both must stay flat after warm-up.

    python scripts/bench_stream.py --minutes 10                # built-in model, default config
    python scripts/bench_stream.py --minutes 1 --config PATH --json out.json

Generates latent blocks with the real engine (KV cache, schedule, recache at each switch) and
decodes them, without writing video, and prints for each minute of video: blocks, mean and p95
block time (generation + decode) and the process RSS. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from longvid.api import DEFAULT_CONFIG, load_pipeline  # noqa: E402
from longvid.timeline import Prompt, Timeline, seconds_to_latent_frame  # noqa: E402

PROMPTS = [
    "a red circle bouncing on a black background",
    "a blue square moving right on a gray background",
    "a yellow triangle circling on a navy background",
    "a green ball moving up on a dark green background",
]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--switch-every", type=float, default=20.0, help="seconds between prompt switches")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    pipe = load_pipeline(args.config, args.overrides, allow_random=True)
    cfg = pipe.config
    fps, tf = cfg.video.fps, cfg.vae.temporal_factor
    seconds = args.minutes * 60
    starts = [i * args.switch_every for i in range(int(seconds // args.switch_every))] or [0.0]
    prompts = tuple(Prompt(PROMPTS[i % len(PROMPTS)], s, seconds_to_latent_frame(s, fps, tf))
                    for i, s in enumerate(starts))
    tl = Timeline(prompts, seconds, fps, tf)
    pipe.decoder.reset()

    rows, t_prev = [], time.perf_counter()
    t_start = t_prev
    for block, lat, _ in pipe.latents(tl, seed=0):
        with torch.no_grad():
            pipe.decoder.decode(lat)
        now = time.perf_counter()
        rows.append({"block": block, "video_s": (block + 1) * pipe.schedule.block_frames * tf / fps,
                     "block_s": now - t_prev, "rss_mb": rss_mb()})
        t_prev = now
    wall = time.perf_counter() - t_start

    per_min = []
    for m in range(int(-(-seconds // 60))):
        rs = [r for r in rows if m * 60 <= r["video_s"] - 1e-9 < (m + 1) * 60]
        if not rs:
            continue
        times = sorted(r["block_s"] for r in rs)
        per_min.append({"minute": m + 1, "blocks": len(rs),
                        "mean_block_ms": 1000 * statistics.mean(times),
                        "p95_block_ms": 1000 * times[int(0.95 * (len(times) - 1))],
                        "rss_mb": rs[-1]["rss_mb"]})
    frames = tl.num_pixel_frames
    print(f"config {cfg.name}: {cfg.video.width}x{cfg.video.height} @ {fps} fps, schedule {cfg.schedule.kind}, "
          f"sink {cfg.cache.sink_frames} + window {cfg.cache.window_frames}, threads {args.threads}")
    print(f"{frames} frames ({seconds:.0f} s of video) in {wall:.1f} s: {frames / wall:.1f} fps "
          f"(generation + decode, no encode); KV cache {pipe.new_cache().memory_bytes() / 2**20:.2f} MiB")
    print(f"{'minute':>6} {'blocks':>6} {'mean ms/block':>14} {'p95 ms/block':>13} {'RSS MiB':>8}")
    for r in per_min:
        print(f"{r['minute']:>6} {r['blocks']:>6} {r['mean_block_ms']:>14.1f} {r['p95_block_ms']:>13.1f} {r['rss_mb']:>8.1f}")
    if len(per_min) > 1:
        first, last = per_min[0 if len(per_min) < 3 else 1], per_min[-1]
        print(f"last minute vs {'first' if len(per_min) < 3 else 'second'}: block time "
              f"{100 * (last['mean_block_ms'] / first['mean_block_ms'] - 1):+.1f}%, "
              f"RSS {100 * (last['rss_mb'] / first['rss_mb'] - 1):+.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"config": cfg.name, "wall_s": wall, "frames": frames,
                                         "per_minute": per_min, "blocks": rows}, indent=1))


if __name__ == "__main__":
    main()
