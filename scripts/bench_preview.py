"""Generation speed with and without the live preview page open in a browser.

    python scripts/bench_preview.py --seconds 60 --repeats 3          # built-in model
    python scripts/bench_preview.py --repeats 0 --screenshot docs/preview.png   # screenshot only
    python scripts/bench_preview.py --config PATH --json out.json

Runs the same stream (same prompt, seed, MP4 writer) alternately without a preview ("off") and
with the preview server up and a headless Chromium watching the page ("on"), pairs in ABBA order
(off/on, on/off, ...), and prints frames/s for each run, the ratio of the medians and each pair's
own ratio. Both are measured the same way: from the request for
the first frame of block 1 (after warm-up, and in "on" runs after the page shows its first
frame) to the end of the MP4. With --screenshot, one more (untimed) run types a prompt into the
page and saves a screenshot of it mid-run.

    python scripts/bench_preview.py --browser-cpu 0.1,2,5,10,16,30

measures instead what the page costs the browser: Chromium's CPU time (all its processes, from
/proc, Linux) over 10 s of watching a synthetic 170 frames/s stream, at each viewer frame rate.

Needs Debian's chromium and chromium-driver and `pip install selenium` (nothing is downloaded).
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from browser import missing, start_chromium  # noqa: E402

from longvid.api import DEFAULT_CONFIG, load_pipeline, make_timeline  # noqa: E402
from longvid.frames import Frame  # noqa: E402
from longvid.live import LiveSession, LiveTimeline, first_pixel_frame  # noqa: E402
from longvid.preview import DEFAULT_VIEW_FPS, PreviewServer  # noqa: E402
from longvid.timeline import single  # noqa: E402
from longvid.writers import Mp4Writer, write_stream  # noqa: E402

PROMPT = "a red circle bouncing on a black background"
SWITCH = "a yellow triangle circling on a navy background"
WAIT = 120


def wait_for(condition, what: str):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class Timed:
    """Records when each frame was asked for (so a pause before it is not counted)."""

    def __init__(self, frames, start_index: int) -> None:
        self.frames, self.start_index = frames, start_index
        self.t0: float | None = None
        self.count = 0

    def __iter__(self):
        iterator = iter(self.frames)
        while True:
            asked = time.perf_counter()
            try:
                frame = next(iterator)
            except StopIteration:
                return
            if frame.index == self.start_index:
                self.t0 = asked
            self.count += 1
            yield frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--seconds", type=float, default=60.0, help="video length of each run")
    ap.add_argument("--repeats", type=int, default=3, help="pairs of off/on runs (0: screenshot only)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the built-in config's is 1)")
    ap.add_argument("--preview-fps", type=float, default=DEFAULT_VIEW_FPS, help="frames a second sent to the page")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--screenshot", type=Path, help="also save a screenshot of the page mid-run")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--browser-cpu", help="comma-separated viewer frame rates: measure Chromium's CPU instead")
    args = ap.parse_args()
    reason = missing()
    if reason:
        sys.exit(f"cannot run: {reason}")
    if args.browser_cpu:
        return browser_cpu([float(x) for x in args.browser_cpu.split(",")])
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.config, args.overrides, allow_random=True)
    timeline = make_timeline(pipe.config, PROMPT, seconds=args.seconds)
    print(f"{args.config}: {timeline.num_pixel_frames} frames per run, {args.repeats} off/on pairs",
          file=sys.stderr)
    results: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        browser = start_chromium(str(Path(tmp) / "profile"))
        try:
            list(pipe.stream(make_timeline(pipe.config, PROMPT, seconds=2), seed=args.seed))  # warm-up
            for i in range(args.repeats):
                # ABBA order: a slow drift of the machine's speed hits both modes alike
                for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                    fps = measure(pipe, timeline, args.seed, Path(tmp) / f"{mode}{i}.mp4",
                                  browser if mode == "on" else None, view_fps=args.preview_fps)
                    results[mode].append(fps)
                    print(f"run {i} {mode:3s}: {fps:7.2f} frames/s", file=sys.stderr)
            if args.screenshot is not None:
                measure(pipe, make_timeline(pipe.config, PROMPT, seconds=max(args.seconds, 20)),
                        args.seed, Path(tmp) / "shot.mp4", browser, args.screenshot, args.preview_fps)
                print(f"screenshot: {args.screenshot}", file=sys.stderr)
        finally:
            browser.quit()
    if not args.repeats:
        return
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    # each pair's own ratio: the machine's speed drifts between pairs more than within one
    pairs = sorted(100 * (b / a - 1) for a, b in zip(results["off"], results["on"]))
    summary = {"config": args.config, "seconds": args.seconds, "repeats": args.repeats,
               "threads": args.threads, "preview_fps": args.preview_fps, "fps_off": results["off"], "fps_on": results["on"],
               "median_off": round(off, 2), "median_on": round(on, 2),
               "on_vs_off_percent": round(100 * (on / off - 1), 2),
               "pair_percent": [round(p, 2) for p in pairs],
               "pair_median_percent": round(statistics.median(pairs), 2)}
    print("| preview | runs | median frames/s |\n|---|---:|---:|")
    print(f"| off | {args.repeats} | {off:.2f} |\n| on (headless Chromium watching) | {args.repeats} | {on:.2f} |")
    print(f"\nwith the page open: {summary['on_vs_off_percent']:+.2f} % frames/s (medians); per pair: "
          f"median {summary['pair_median_percent']:+.2f} %, range {pairs[0]:+.1f} to {pairs[-1]:+.1f} %")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")

def _tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) of every descendant process of `root`, from /proc."""
    tick, parent, cpu = os.sysconf("SC_CLK_TCK"), {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry)], cpu[int(entry)] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        for child, p in parent.items():
            if p == pid:
                total += cpu[child]
                todo.append(child)
    return total


def browser_cpu(rates: list[float], seconds: float = 10.0) -> None:
    """Chromium's CPU share while its page watches a synthetic stream at each viewer rate."""
    images = [np.random.default_rng(i).integers(0, 255, (128, 128, 3), dtype=np.uint8) for i in range(8)]
    print("| viewer frames/s | Chromium CPU (% of one core) |\n|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        browser = start_chromium(str(Path(tmp) / "profile"))
        try:
            for rate in rates:
                session = LiveSession(LiveTimeline(single(PROMPT, 600.0, 16, 4), 3))
                server = PreviewServer(session, view_fps=rate).start()
                session.hub.publish(Frame(index=0, image=images[0]))
                browser.get(server.url)
                time.sleep(2.0)  # page loaded and settled
                done = threading.Event()

                def produce() -> None:
                    i = 0
                    while not done.is_set():
                        session.hub.publish(Frame(index=i, image=images[i % len(images)]))
                        i += 1
                        time.sleep(1 / 170)
                producer = threading.Thread(target=produce)
                producer.start()
                c0, t0 = _tree_cpu_seconds(os.getpid()), time.monotonic()
                time.sleep(seconds)
                share = (_tree_cpu_seconds(os.getpid()) - c0) / (time.monotonic() - t0)
                done.set()
                producer.join()
                browser.get("about:blank")
                server.close()
                print(f"| {rate:g} | {100 * share:.1f} |")
        finally:
            browser.quit()


def measure(pipe, timeline, seed: int, out: Path, browser=None, screenshot: Path | None = None,
            view_fps: float = DEFAULT_VIEW_FPS) -> float:
    """Frames/s from the first frame of block 1 to the end of the MP4."""
    k, tf = pipe.schedule.block_frames, timeline.temporal_factor
    start_index = first_pixel_frame(k, tf)
    session = server = helper = None
    if browser is None:
        frames = timer = Timed(pipe.stream(timeline, seed=seed), start_index)
    else:
        session = LiveSession(LiveTimeline(timeline, k), seed=seed)
        timer = Timed(pipe.stream(session.timeline, seed=seed), start_index)
        frames = session.wrap(timer)
        server = PreviewServer(session, view_fps=view_fps).start()
        session.pause("bench")  # held after frame 0 until the page shows it
        helper = threading.Thread(target=_watch, args=(browser, server, session, screenshot), daemon=True)
        helper.start()
    count = write_stream(frames, [Mp4Writer(out, timeline.fps, fsync=False)])
    t_end = time.perf_counter()
    if server is not None:
        helper.join(WAIT)
        browser.get("about:blank")  # the next "off" run has no page polling a closed server
        server.close()
    return (count - start_index) / (t_end - timer.t0)


def _watch(browser, server, session, screenshot: Path | None) -> None:
    """The viewer: open the page, release the stream once a frame shows; optionally type a
    prompt and take a screenshot."""
    browser.get(server.url)
    wait_for(lambda: browser.execute_script(
        "const i = document.querySelector('#video'); return i.complete && i.naturalWidth > 0"),
        "the page's first frame")
    session.resume("bench")
    if screenshot is None:
        return
    wait_for(lambda: session.frames >= session.total // 3, "a third of the run")
    browser.find_element("css selector", "#text").send_keys(SWITCH)
    browser.find_element("css selector", "#send").click()
    wait_for(lambda: SWITCH in browser.find_element("css selector", "#prompt").text,
             "the new prompt on the page")
    time.sleep(1.0)  # a second of frames under the new prompt
    browser.find_element("css selector", "#text").send_keys(
        "a cyan square moving up on a dark green background")
    browser.save_screenshot(str(screenshot))


if __name__ == "__main__":
    main()
