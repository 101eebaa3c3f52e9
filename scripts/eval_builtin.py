"""Issue-3 figures: `longvid generate` + `longvid eval` on the built-in model, every evaluation
timeline x seeds x switch mode, aggregated into one table.

    python scripts/eval_builtin.py                       # prompts/eval-*.yaml, seeds 0-4, both modes
    python scripts/eval_builtin.py --seeds 0 --modes recache --timelines prompts/eval-a.yaml

Each run is two real CLI calls (a subprocess each, as a user would type them):

    longvid generate --timeline T --seed S --out runs/eval/<T>-s<S>-<mode>.mp4 [--set switch.mode=plain]
    longvid eval runs/eval/<T>-s<S>-<mode>.mp4 --timeline T --json

Writes runs/eval/summary.json (every report) and prints a Markdown table for docs/builtin-model.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longvid.api import DEFAULT_CONFIG  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CORE = ("colour", "shape", "background", "motion")


def longvid(*args: str) -> str:
    cmd = [sys.executable, "-m", "cli.app", *args]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def run_one(timeline: Path, seed: int, mode: str, out_dir: Path, config: str) -> dict:
    video = out_dir / f"{timeline.stem}-s{seed}-{mode}.mp4"
    longvid("generate", "--timeline", str(timeline), "--seed", str(seed), "--out", str(video),
            "--config", config, "--set", f"switch.mode={mode}", "--overwrite", "--quiet")
    manifest = json.loads(video.with_suffix(".json").read_text())
    report = evaluate_one(video, timeline, config)
    report["end_to_end_fps"] = manifest["timings"]["frames"] / manifest["elapsed_seconds"]
    report["run"] = {"timeline": str(timeline.relative_to(REPO)), "seed": seed, "mode": mode}
    return report


def evaluate_one(video: Path, timeline: Path, config: str) -> dict:
    return json.loads(longvid("eval", str(video), "--timeline", str(timeline), "--json", "--config", config))


def reevaluate(reports: list[dict], out_dir: Path, config: str) -> list[dict]:
    """`longvid eval` once more on each report's video (after a change to the evaluator), keeping
    the generation's own figures (end-to-end speed) and run description."""
    fresh = []
    for old in reports:
        run = old["run"]
        video = out_dir / f"{Path(run['timeline']).stem}-s{run['seed']}-{run['mode']}.mp4"
        report = evaluate_one(video, REPO / run["timeline"], config)
        fresh.append({**report, "end_to_end_fps": old["end_to_end_fps"], "run": run})
        print(f"re-evaluated {video.name}", flush=True)
    return fresh


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def breakdown(reports: list[dict], attributes: tuple[str, ...] = ("shape", "motion")) -> dict[str, dict[str, float]]:
    """Adherence to each attribute by the value the prompt asked for (e.g. shape: square 0.03,
    circle 1.00), the mean over all segments that asked for it: which prompts keep a figure down."""
    out = {}
    for a in attributes:
        by_value: dict[str, list] = {}
        for r in reports:
            for seg in r["segments"]:
                value = seg["attributes"].get(a)
                if value is not None:
                    by_value.setdefault(str(value), []).append(seg["adherence"].get(a))
        out[a] = {v: mean(xs) for v, xs in sorted(by_value.items())}
    return out


def summarise(reports: list[dict]) -> dict:
    first_last = [r["drift"]["first_last"] for r in reports]
    latencies = [s["latency_seconds"] for r in reports for s in r["switches"]]
    return {
        "runs": len(reports),
        "adherence": {a: mean(r["adherence"][a] for r in reports) for a in CORE},
        "adherence_min_run": {a: min((r["adherence"][a] for r in reports if r["adherence"][a] is not None),
                                     default=None) for a in CORE},
        "latency_mean_s": mean(latencies),
        "latency_max_s": max((x for x in latencies if x is not None), default=None),
        "switches": len(latencies),
        "switches_missed": sum(r["latency"]["missed"] for r in reports),
        "continuity_mean_ratio": mean(s["continuity_ratio"] for r in reports for s in r["switches"]),
        "teleports": sum(r["continuity"]["teleports"] for r in reports),
        "frozen_share": mean(r["motion"]["freeze"]["frozen_share"] for r in reports),
        "adherence_first_10s": mean(f["adherence_first"] for f in first_last),
        "adherence_last_10s": mean(f["adherence_last"] for f in first_last),
        "sharpness_first_10s": mean(f["sharpness_first"] for f in first_last),
        "sharpness_last_10s": mean(f["sharpness_last"] for f in first_last),
        "adherence_vde": mean(r["drift"]["adherence_vde"] for r in reports),
        "flicker_ratio": mean((r["flicker"] or {}).get("ratio") for r in reports),
        "end_to_end_fps": mean(r["end_to_end_fps"] for r in reports),
        "by_prompt": breakdown(reports),
    }


def fmt(x, digits=3) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def table(groups: dict[str, dict]) -> str:
    rows = [
        ("runs", "runs", 0),
        *[(f"adherence: {a}", a, 3) for a in CORE],
        ("switch latency, mean (s)", "latency_mean_s", 2),
        ("switch latency, max (s)", "latency_max_s", 2),
        ("switches missed", "switches_missed", 0),
        ("continuity: jump / ordinary step (mean)", "continuity_mean_ratio", 2),
        ("teleports", "teleports", 0),
        ("frozen share of moving frames", "frozen_share", 3),
        ("adherence, first 10 s", "adherence_first_10s", 3),
        ("adherence, last 10 s", "adherence_last_10s", 3),
        ("sharpness, first 10 s", "sharpness_first_10s", 2),
        ("sharpness, last 10 s", "sharpness_last_10s", 2),
        ("adherence VDE (10 chunks)", "adherence_vde", 3),
        ("flicker (block boundary / within)", "flicker_ratio", 2),
        ("end to end (frames/s)", "end_to_end_fps", 1),
    ]
    names = list(groups)
    out = ["| figure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key, digits in rows:
        cells = []
        for n in names:
            v = groups[n].get(key) if key not in CORE else groups[n]["adherence"][key]
            cells.append(fmt(v, digits) if isinstance(v, float) else fmt(v))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def breakdown_table(groups: dict[str, dict]) -> str:
    """Adherence by prompted value (rows: 'shape: square', ...), one column per group."""
    names = list(groups)
    keys = sorted({(a, v) for g in groups.values() for a, vs in g["by_prompt"].items() for v in vs})
    out = ["| adherence by prompt | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for a, v in keys:
        out.append(f"| {a}: {v} | " + " | ".join(fmt(groups[n]["by_prompt"][a].get(v), 2) for n in names) + " |")
    return "\n".join(out)


def frame_strip(video: Path, out: Path, every_s: float = 5.0, fps: int = 16) -> None:
    """One row of frames, one every `every_s` seconds, with a white gap between them."""
    import imageio.v3 as iio

    from longvid.evaluate import read_video

    frames = list(read_video(video))
    picks = [frames[i] for i in range(0, len(frames), round(every_s * fps))]
    gap = np.full((picks[0].shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([x for f in picks for x in (f, gap)][:-1], axis=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out, row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timelines", nargs="+", default=sorted(str(p) for p in (REPO / "prompts").glob("eval-*.yaml")))
    ap.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,3")
    ap.add_argument("--modes", default="recache,plain")
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--out", default=str(REPO / "runs" / "eval"))
    ap.add_argument("--strip", type=Path, default=None,
                    help="also write a PNG strip (a frame every 5 s) of the first run's video here")
    ap.add_argument("--resummarise", action="store_true",
                    help="generate nothing: recompute the tables from --out's summary.json")
    ap.add_argument("--reevaluate", action="store_true",
                    help="generate nothing: run `longvid eval` again on --out's videos (after a change to "
                         "the evaluator; --config as they were generated) and rewrite its summary.json")
    args = ap.parse_args()
    out_dir = Path(args.out)
    if args.resummarise or args.reevaluate:
        reports = json.loads((out_dir / "summary.json").read_text())["reports"]
        if args.reevaluate:
            reports = reevaluate(reports, out_dir, args.config)
        modes = list(dict.fromkeys(r["run"]["mode"] for r in reports))
        timelines = list(dict.fromkeys(r["run"]["timeline"] for r in reports))
        report_tables(reports, modes, timelines, out_dir)
        return
    if "-" in args.seeds:
        lo, hi = args.seeds.split("-")
        seeds = list(range(int(lo), int(hi) + 1))
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    for mode in args.modes.split(","):
        for t in args.timelines:
            for seed in seeds:
                t0 = time.perf_counter()
                r = run_one(Path(t).resolve(), seed, mode, out_dir, args.config)
                reports.append(r)
                a = r["adherence"]
                print(f"{Path(t).stem} seed {seed} {mode}: " + " ".join(f"{k} {fmt(a[k], 2)}" for k in CORE)
                      + f" | {r['end_to_end_fps']:.1f} fps | {time.perf_counter() - t0:.0f} s", flush=True)
    if args.strip is not None:
        first = reports[0]["run"]
        frame_strip(out_dir / f"{Path(first['timeline']).stem}-s{first['seed']}-{first['mode']}.mp4", args.strip)
    report_tables(reports, args.modes.split(","), args.timelines, out_dir)


def report_tables(reports: list[dict], modes: list[str], timelines: list[str], out_dir: Path) -> None:
    """Group the reports by mode and timeline, write summary.json and print the tables."""
    groups = {}
    for mode in modes:
        mine = [r for r in reports if r["run"]["mode"] == mode]
        for t in timelines:
            groups[f"{Path(t).stem} ({mode})"] = summarise([r for r in mine if r["run"]["timeline"].endswith(Path(t).name)])
        groups[f"all ({mode})"] = summarise(mine)
    (out_dir / "summary.json").write_text(json.dumps({"groups": groups, "reports": reports}, indent=1))
    print()
    print(table(groups))
    print()
    print(breakdown_table(groups))


if __name__ == "__main__":
    main()
