"""Soak run: a long stream through everything `longvid generate` does, with per-block wall time
and process memory logged, to show both stay flat.

    python scripts/soak.py --minutes 10 --out runs/soak            # the 10-minute soak
    python scripts/soak.py --seconds 30 --out runs/soak-short      # a quick check

Unlike `longvid bench` (which times the stages), every block goes the CLI's whole way:
generation with a prompt switch (KV-recache) every `--switch-every` seconds, streaming decode,
the fragmented MP4, the manifest with per-frame hashes, and a resume checkpoint every
`--checkpoint-every` blocks. Writes OUT/soak.mp4, OUT/soak.json (manifest), OUT/blocks.jsonl
(one row per block: block, video seconds, wall ms, RSS MiB) and OUT/summary.json, and prints a
table per window of video. Exit status 1 if the last window's mean block time or RSS is more
than `--tolerance` above the second window's (the first holds the warm-up).
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
from longvid.bench import bench_timeline, rss_mib  # noqa: E402
from longvid.config import config_to_dict  # noqa: E402
from longvid.resume import Checkpointer, checkpoint_meta, state_path_for  # noqa: E402
from longvid.writers import ManifestWriter, Mp4Writer, write_stream  # noqa: E402

def windows(rows: list[dict], window_s: float) -> list[dict]:
    out = []
    last = rows[-1]["video_s"] if rows else 0
    for w in range(int(-(-last // window_s))):
        rs = [r for r in rows if w * window_s <= r["video_s"] - 1e-9 < (w + 1) * window_s]
        if not rs:
            continue
        times = sorted(r["block_ms"] for r in rs)
        out.append({"window": w + 1, "until_s": (w + 1) * window_s, "blocks": len(rs),
                    "mean_block_ms": statistics.mean(times),
                    "p95_block_ms": times[int(0.95 * (len(times) - 1))],
                    "rss_mb": rs[-1]["rss_mb"], "max_rss_mb": max(r["rss_mb"] for r in rs)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=10.0)
    length.add_argument("--seconds", type=float, help="video length in seconds (instead of --minutes)")
    ap.add_argument("--switch-every", type=float, default=20.0, help="seconds between prompt switches")
    ap.add_argument("--checkpoint-every", type=int, default=10, help="blocks between resume checkpoints")
    ap.add_argument("--window", type=float, help="seconds of video per summary row (default: 60, "
                    "or a tenth of the video if shorter than 10 minutes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.15, help="allowed growth, last vs second window")
    ap.add_argument("--out", type=Path, default=Path("runs/soak"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    window_s = args.window or (60.0 if seconds >= 600 else max(seconds / 10, 1.0))
    args.out.mkdir(parents=True, exist_ok=True)

    t_load = time.perf_counter()
    pipe = load_pipeline(args.config, args.overrides, allow_random=True)
    cfg = pipe.config
    fps = cfg.video.fps
    tl = bench_timeline(cfg, seconds, args.switch_every)
    load_s = time.perf_counter() - t_load

    video = Mp4Writer(args.out / "soak.mp4", fps)
    manifest = ManifestWriter(args.out / "soak.json", {
        "config": config_to_dict(cfg), "seed": args.seed, "timeline": tl.to_dict(),
        "outputs": {"video": str(args.out / "soak.mp4"), "manifest": str(args.out / "soak.json")},
        "soak": True}, lambda: pipe.stats.as_dict())
    checkpointer = Checkpointer(state_path_for(args.out / "soak.json"), pipe, video, manifest,
                                checkpoint_meta(cfg, tl, args.seed, pipe), args.checkpoint_every)
    rows: list[dict] = []
    log = open(args.out / "blocks.jsonl", "w")
    block_k = pipe.schedule.block_frames
    t_prev = t_start = time.perf_counter()

    def on_block(state) -> None:
        nonlocal t_prev
        now = time.perf_counter()
        row = {"block": state.blocks - 1, "frames": state.frames,
               "video_s": round(state.frames / fps, 3), "block_ms": round(1000 * (now - t_prev), 2),
               "rss_mb": round(rss_mib(), 1)}
        rows.append(row)
        log.write(json.dumps(row) + "\n")
        log.flush()
        checkpointer.on_block(state)
        t_prev = now  # the checkpoint capture counts in the next block, with its publication

    frames = write_stream(pipe.stream(tl, seed=args.seed, on_block=on_block),
                          [video, checkpointer, manifest])
    wall = time.perf_counter() - t_start
    log.close()

    per = windows(rows, window_s)
    print(f"config {cfg.name}: {cfg.video.width}x{cfg.video.height} @ {fps} fps, schedule "
          f"{cfg.schedule.kind} ({block_k} latent frames per block), sink {cfg.cache.sink_frames} + "
          f"window {cfg.cache.window_frames}, threads {args.threads}, {len(tl.prompts)} prompts")
    print(f"{frames} frames ({seconds:g} s of video) in {wall:.1f} s: {frames / wall:.1f} frames/s "
          f"end to end (generate, decode, MP4, manifest, checkpoint every {args.checkpoint_every} "
          f"blocks); model load {load_s:.1f} s")
    print(f"{'until s':>8} {'blocks':>6} {'mean ms/block':>14} {'p95 ms/block':>13} {'RSS MiB':>8} {'max RSS':>8}")
    for r in per:
        print(f"{r['until_s']:>8.0f} {r['blocks']:>6} {r['mean_block_ms']:>14.1f} "
              f"{r['p95_block_ms']:>13.1f} {r['rss_mb']:>8.1f} {r['max_rss_mb']:>8.1f}")
    verdict = {"ok": True}
    if len(per) >= 3:
        ref, last = per[1], per[-1]
        growth_t = last["mean_block_ms"] / ref["mean_block_ms"] - 1
        growth_m = last["max_rss_mb"] / ref["max_rss_mb"] - 1
        verdict = {"ok": growth_t <= args.tolerance and growth_m <= args.tolerance,
                   "block_time_growth": round(growth_t, 4), "rss_growth": round(growth_m, 4)}
        print(f"last window vs second: block time {100 * growth_t:+.1f}%, max RSS {100 * growth_m:+.1f}% "
              f"-> {'flat' if verdict['ok'] else 'GROWING'} (tolerance {100 * args.tolerance:.0f}%)")
    (args.out / "summary.json").write_text(json.dumps(
        {"config": cfg.name, "seconds": seconds, "frames": frames, "wall_s": wall, "load_s": load_s,
         "threads": args.threads, "windows": per, "verdict": verdict}, indent=1))
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
