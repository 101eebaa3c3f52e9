"""The `longvid` command line: parse, load, call the library, report.

Everything that makes video lives in `longvid`; this module turns options into library calls,
builds the writers, shows progress and prints what happened. A `LongvidError` (bad config,
timeline, weights or output path) is printed as one `error: ...` line with exit status 2.
"""

import contextlib
import importlib.metadata
import json
import os
import shlex
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn,
)
from rich.table import Column, Table
from rich.text import Text

from cli.live import DEFAULT_VIEW_FPS, LiveOptions, LiveRun
from longvid.config import DEFAULT_CONFIG, available_configs, config_dir, config_to_dict, load_config, weights_status
from longvid import signals
from longvid.errors import LongvidError, OutputError, ResumeError, TimelineError, WeightsError
from longvid.evaluate import evaluate_video, format_report
from longvid.frames import Frame
from longvid.resume import (
    DEFAULT_CHECKPOINT_EVERY, Checkpointer, ResumePoint, checkpoint_meta, load_resume_state,
    read_manifest, state_path_for,
)
from longvid.signals import StopOnSignal
from longvid.timeline import make_timeline
from longvid.writers import ManifestWriter, Mp4Writer, PngWriter, write_stream

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
PNG_GLOB = "frame_*.png"  # the names PngWriter writes (writers.PNG_NAME)
PROMPT_WIDTH = 26  # columns of the active prompt in the progress bar

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="markdown",  # docstring paragraphs reflow; indented lines stay as code
    add_completion=False,
    pretty_exceptions_show_locals=False,  # a bug's traceback must not dump tensors
)


# --- options shared by every command that loads a config -------------------------------------

ConfigOption = Annotated[str, typer.Option(
    "--config", "-c", metavar="NAME|PATH",
    help="Config name (see `longvid models`) or path to a .yaml config.")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE",
    help="Override a config key, e.g. --set video.height=256 (repeatable).")]
WeightsOption = Annotated[Optional[Path], typer.Option(
    "--weights", "-w", metavar="DIR",
    help="Directory the config's weight paths are relative to (weights.root); see docs/models.md.",
    show_default=False)]


def _load_config(config: str, overrides: Optional[list[str]], weights: Optional[Path]):
    """load_config, then point the weight paths at --weights DIR."""
    cfg = load_config(config, overrides or ())
    if weights is not None:
        if not weights.is_dir():
            raise WeightsError(f"--weights {weights}: no such directory; give the directory you "
                               "downloaded the model into (see docs/models.md)")
        cfg.weights.root = str(weights.resolve())
    return cfg


# --- small helpers ---------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    """Print one `error:` line on stderr and exit with status 2."""
    typer.echo(f"error: {message}".replace("\n", " "), err=True)
    raise typer.Exit(EXIT_USER_ERROR)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn a LongvidError (the user's input is wrong) into one line and exit status 2."""
    try:
        yield
    except LongvidError as error:
        _fail(str(error))


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _interactive() -> bool:
    """A live progress bar only for a person at a terminal: never in CI or when piped."""
    return not _in_ci() and sys.stdout.isatty() and sys.stderr.isatty()


def _version() -> str:
    """The installed distribution's version (robust to how the package was installed)."""
    return importlib.metadata.version("longvid")


def _torch_version() -> str:
    import torch  # a second at start-up: not for the commands that need no model

    return torch.__version__


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"longvid {_version()} (torch {_torch_version()})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version_callback, is_eager=True,
        help="Show the longvid and torch versions and exit.")] = False,
) -> None:
    """Stream long AI-generated video, chunk by chunk, while the prompt changes."""


# --- generate --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outputs:
    """Where one run writes: the MP4, its JSON manifest, optionally a PNG per frame."""

    video: Path
    manifest: Path
    png_dir: Optional[Path]

    @classmethod
    def prepare(cls, out: Path, manifest: Optional[Path], png_dir: Optional[Path],
                overwrite: bool) -> "Outputs":
        """Resolve the paths and refuse to clobber anything unless `overwrite` (checked before
        any model is loaded, so a wrong path fails in a second). With `overwrite`, old frame
        PNGs are removed so the directory matches the new video."""
        if out.suffix.lower() != ".mp4":
            raise OutputError(f"--out {out}: longvid writes H.264 in fragmented MP4 (playable while "
                              f"it is written), so the name must end in .mp4 (e.g. "
                              f"{out.with_suffix('.mp4').name}); convert it afterwards for another format")
        outputs = cls(out.resolve(), (manifest or out.with_suffix(".json")).resolve(),
                      png_dir.resolve() if png_dir else None)
        if outputs.manifest == outputs.video:
            raise OutputError(f"the manifest and the video are both {out}; pass --manifest PATH "
                              "with another name")
        for what, path in (("video", outputs.video), ("manifest", outputs.manifest)):
            if not path.parent.is_dir():
                raise OutputError(f"cannot write the {what} {path}: directory {path.parent} does "
                                  f"not exist; create it (mkdir -p {path.parent}) or choose another path")
            if path.is_dir():
                raise OutputError(f"the {what} path {path} is a directory; give a file name")
            if path.exists() and not overwrite:
                raise OutputError(f"{path} already exists; pass --overwrite to replace it, "
                                  "or choose another path")
        if outputs.png_dir is not None and outputs.png_dir.is_dir():
            old = sorted(outputs.png_dir.glob(PNG_GLOB))
            if old and not overwrite:
                raise OutputError(f"{outputs.png_dir} already holds {len(old)} frame PNGs; pass "
                                  "--overwrite to replace them, or choose another --png-dir")
            for path in old:  # --overwrite: no stale frames from a longer earlier run
                path.unlink()
        return outputs

    def describe(self) -> list[tuple[str, Path]]:
        rows = [("video", self.video), ("manifest", self.manifest)]
        return rows + ([("png", self.png_dir)] if self.png_dir else [])


class _FpsColumn(ProgressColumn):
    """Frames per second, from rich's own moving estimate."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:5.1f} fps", style="progress.data.speed")


class FrameTracker:
    """Sits between the pipeline and the writers: counts frames, times the writers, and shows
    progress (a live bar at a terminal; a line per prompt switch otherwise)."""

    def __init__(self, total: int, progress: Optional[Progress], plain: bool) -> None:
        self.total = total
        self.frames = 0
        self.start = 0  # frames already in the video (a resumed run)
        self.write_s = 0.0  # time the writers (encoding, PNG, manifest) held the stream
        self.size: Optional[tuple[int, int]] = None  # (width, height)
        self._progress = progress
        self._task = progress.add_task("", total=total) if progress else None
        self._plain = plain

    def wrap(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        prompt_index = None
        try:
            for frame in frames:
                if frame.prompt_index != prompt_index:
                    prompt_index = frame.prompt_index
                    self._show_prompt(frame)
                self.frames += 1
                self.size = self.size or (frame.width, frame.height)
                if self._progress is not None:
                    self._progress.update(self._task, completed=self.frames)
                t0 = time.perf_counter()
                yield frame
                self.write_s += time.perf_counter() - t0
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def _show_prompt(self, frame: Frame) -> None:
        text = frame.prompt
        if self._progress is not None:
            self._progress.update(self._task, description=text)
        elif self._plain and frame.index > 0:
            typer.echo(f"frame {frame.index}: prompt {frame.prompt_index}: {text}", err=True)


def _progress_bar() -> Progress:
    """prompt | bar | frames done/total | fps | ETA, fitting an 80-column terminal."""
    prompt = TextColumn("{task.description}", style="bold", markup=False,
                        table_column=Column(width=PROMPT_WIDTH, no_wrap=True, overflow="ellipsis"))
    return Progress(
        prompt, BarColumn(bar_width=20), MofNCompleteColumn(), _FpsColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
    )


def _jsonl_options(timeline: Optional[Path], line: Optional[int],
                   switch_frames: Optional[str]) -> dict:
    """--line / --switch-frames as load_timeline keywords (they only apply to a timeline file)."""
    if timeline is None and (line is not None or switch_frames is not None):
        raise TimelineError("--line and --switch-frames apply to a JSONL --timeline FILE")
    options: dict = {}
    if line is not None:
        options["line"] = line
    if switch_frames is not None:
        try:
            options["switch_frames"] = [int(f) for f in switch_frames.split(",") if f.strip()]
        except ValueError:
            raise TimelineError(f"--switch-frames {switch_frames!r} must be latent frame numbers "
                                "separated by commas, e.g. 40,80") from None
    return options


def _load(config, random_weights: bool):
    """load_pipeline, showing its warnings (random weights) as visible `warning:` lines."""
    from longvid.api import load_pipeline  # torch and diffusers: only the commands that generate

    missing = [part for part, state in weights_status(config).items() if state == "missing"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pipeline = load_pipeline(config, allow_random=random_weights)
        except LongvidError as error:
            hint = ("; or pass --random-weights to try the engine without them"
                    if "transformer" in missing and not random_weights else "")
            _fail(f"{error}{hint}")
    for warning in caught:
        typer.echo(f"warning: {warning.message}", err=True)
    return pipeline


def _open_writers(outputs: Outputs, fps: int, info: dict, timings, checkpoints=None,
                  resume=None) -> list:
    """MP4 always, PNG if asked, resume checkpoints if `checkpoints` (a function of the MP4 and
    manifest writers -> Checkpointer), manifest always; if one cannot open, close those that
    did. `resume`: (frames to keep, manifest record) of a resumed run."""
    writers: list = []
    try:
        video = Mp4Writer(outputs.video, fps, resume_frames=resume[0] if resume else None)
        writers.append(video)
        if outputs.png_dir is not None:
            writers.append(PngWriter(outputs.png_dir))
        manifest = ManifestWriter(outputs.manifest, info, timings)
        if resume:
            manifest.restore(resume[1])
        if checkpoints is not None:
            writers.append(checkpoints(video, manifest))
        writers.append(manifest)
    except BaseException as error:
        for writer in writers:
            writer.close(error)
        raise
    return writers


def _saved(tracker: FrameTracker, outputs: Outputs, checkpointer=None) -> str:
    # the video writer knows what is on disk (after a write error: its finished fragments)
    frames = checkpointer.video.frames_on_disk if checkpointer is not None else tracker.frames
    text = f"kept {frames} frame(s) in {outputs.video} (manifest {outputs.manifest})"
    if checkpointer is not None and checkpointer.published is not None:
        text += (f"; continue from frame {checkpointer.published} with: longvid generate "
                 f"--resume {outputs.manifest}")
    return text


def _resume_point(resume: Path, given: dict) -> ResumePoint:
    """--resume MANIFEST: the run's settings come from its manifest, so none may be given."""
    clashing = [name for name, value in given.items() if value]
    if clashing:
        raise ResumeError(f"--resume takes the run's settings from its manifest; drop "
                          f"{', '.join(clashing)}")
    return read_manifest(resume)


def _drop_pngs_after(png_dir: Optional[Path], frames: int) -> None:
    """Resume: PNGs of frames after the resume point are made again."""
    if png_dir is not None and png_dir.is_dir():
        for path in png_dir.glob(PNG_GLOB):
            if int(path.stem.rsplit("_", 1)[-1]) >= frames:
                path.unlink()


def _summary(tracker: FrameTracker, fps: int, wall_s: float, timings: dict,
             outputs: Outputs, overlap: bool) -> None:
    width, height = tracker.size or (0, 0)
    rate = (tracker.frames - tracker.start) / wall_s if wall_s > 0 else 0.0
    typer.echo(f"wrote {tracker.frames} frames ({tracker.frames / fps:.2f} s of video, "
               f"{width}x{height} @ {fps} fps) in {wall_s:.2f} s: {rate:.1f} frames/s")
    stages = [f"{key[:-2]} {value:.2f} s" for key, value in timings.items()
              if key.endswith("_s") and key != "load_s"]
    typer.echo("  time per stage: " + ", ".join(stages)
               + (" (decode ran beside the generator, so these add up to more)" if overlap else ""))
    typer.echo(f"  {timings.get('blocks', 0)} blocks, {timings.get('forwards', 0)} forwards, "
               f"{timings.get('recaches', 0)} recaches; torch, diffusers and the model loaded in "
               f"{timings.get('load_s', 0):.2f} s before")
    for what, path in outputs.describe():
        typer.echo(f"  {what + ':':10s}{path}")


def _replay_hint(config: str, overrides: Optional[list[str]]) -> str:
    """The options besides --timeline and --seed that a replay of this run needs."""
    parts = [] if config == DEFAULT_CONFIG else ["--config", config]
    for override in overrides or ():
        parts += ["--set", override]
    return shlex.join(parts)


@app.command()
def generate(
    prompt: Annotated[Optional[str], typer.Argument(
        help="What the video shows (or use --timeline).", show_default=False)] = None,
    seconds: Annotated[Optional[float], typer.Option(
        help="Video length in seconds (default: 10, or the timeline file's own).",
        show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output video, an .mp4 file.")] = Path("out.mp4"),
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same video.")] = 0,
    timeline: Annotated[Optional[Path], typer.Option(
        help="Prompt timeline: a .yaml file or a LongLive .jsonl file.", show_default=False)] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    overrides: SetOption = None,
    weights: WeightsOption = None,
    png_dir: Annotated[Optional[Path], typer.Option(
        help="Also write every frame as a PNG into this directory.", show_default=False)] = None,
    manifest: Annotated[Optional[Path], typer.Option(
        help="Run manifest (JSON) (default: beside the video, out.json for out.mp4).",
        show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")] = False,
    line: Annotated[Optional[int], typer.Option(
        help="Which video of a JSONL timeline, 0-based (default: 0).", show_default=False)] = None,
    switch_frames: Annotated[Optional[str], typer.Option(
        metavar="F1,F2", help="JSONL switch points in latent frames, e.g. 40,80.",
        show_default=False)] = None,
    random_weights: Annotated[bool, typer.Option(
        "--random-weights",
        help="If the config's transformer weights are missing, use random ones (noise video).")] = False,
    resume: Annotated[Optional[Path], typer.Option(
        metavar="MANIFEST", help="Continue a stopped run from its manifest (out.json); the video "
        "grows to the frames an unstopped run gives.", show_default=False)] = None,
    checkpoint_every: Annotated[int, typer.Option(
        metavar="BLOCKS", min=0, help="Save the resume state every BLOCKS blocks (0: only when "
        "stopped by Ctrl-C / SIGTERM).")] = DEFAULT_CHECKPOINT_EVERY,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary.")] = False,
    preview: Annotated[bool, typer.Option(
        "--preview", help="Watch and steer the run in a browser page (URL printed).",
        rich_help_panel="Live")] = False,
    preview_window: Annotated[bool, typer.Option(
        "--preview-window", help="Watch and steer the run in a desktop window (Tk).",
        rich_help_panel="Live")] = False,
    stdin_prompts: Annotated[bool, typer.Option(
        "--interactive", "-i", help="Type prompts on stdin while the run streams.",
        rich_help_panel="Live")] = False,
    preview_host: Annotated[str, typer.Option(
        help="Address the preview page listens on.", rich_help_panel="Live")] = "127.0.0.1",
    preview_port: Annotated[int, typer.Option(
        help="Port of the preview page (0: any free port).", rich_help_panel="Live")] = 0,
    preview_fps: Annotated[float, typer.Option(
        help="Frames a second sent to the preview page (at most the video's; each costs the "
             "browser CPU the generator could use).", rich_help_panel="Live")] = DEFAULT_VIEW_FPS,
    open_browser: Annotated[bool, typer.Option(
        "--open", help="Open the preview page in the default browser.", rich_help_panel="Live")] = False,
    live_timeline: Annotated[Optional[Path], typer.Option(
        help="Where a live run records its prompts as a replayable timeline "
             "(default: OUT.timeline.yaml).", show_default=False, rich_help_panel="Live")] = None,
) -> None:
    """Generate a video from PROMPT or a --timeline of prompts, streaming it to an MP4.

    Frames are written as they are made: an MP4 (readable even if the run is cut short), a JSON
    manifest of the run beside it and, with --png-dir, one PNG per frame.

    Examples:

        longvid generate "a red ball bouncing on black" --seconds 10 --out ball.mp4

        longvid generate --timeline prompts/example.yaml --out story.mp4

        longvid generate --timeline prompts/example.jsonl --line 1 --seconds 30

        longvid generate "a corgi surfing" --config longlive-1.3b --weights ~/models

        longvid generate "a red ball bouncing on black" --seconds 60 --preview --open
    """
    interactive, plain = _interactive(), not quiet
    live_options = LiveOptions(preview or open_browser, preview_window, stdin_prompts, preview_host, preview_port,
                               open_browser, live_timeline, preview_fps)
    tracker = checkpointer = point = state = None
    try:
        with _user_errors():
            if resume is not None:
                point = _resume_point(resume, {
                    "PROMPT": prompt, "--seconds": seconds, "--timeline": timeline,
                    "--config": config != DEFAULT_CONFIG, "--set": overrides, "--seed": seed,
                    "--out": out != Path("out.mp4"), "--png-dir": png_dir, "--manifest": manifest,
                    "--line": line, "--switch-frames": switch_frames, "--overwrite": overwrite,
                    "--random-weights": random_weights, "--weights": weights,
                    "--preview/--preview-window/--interactive": live_options.on})
                cfg, tl, seed = point.config, point.timeline, point.seed
                outputs = Outputs(point.video, point.manifest_path, point.png_dir)
                random_weights = point.random_weights
            else:
                cfg = _load_config(config, overrides, weights)
                tl = make_timeline(cfg, prompt, timeline, seconds,
                                   **_jsonl_options(timeline, line, switch_frames))
                outputs = Outputs.prepare(out, manifest, png_dir, overwrite)
            live = LiveRun.prepare(live_options, tl, block_frames=cfg.schedule.block_frames,
                                   video=outputs.video, manifest=outputs.manifest, seed=seed,
                                   overwrite=overwrite, replay_hint=_replay_hint(config, overrides))
        t0 = time.perf_counter()
        pipeline = _load(cfg, random_weights)
        with _user_errors():
            if point is not None:
                state, record = load_resume_state(point, pipeline)
                _drop_pngs_after(outputs.png_dir, state.frames)
            meta = checkpoint_meta(cfg, tl, seed, pipeline)
        load_s = time.perf_counter() - t0

        fps = cfg.video.fps
        total = tl.num_pixel_frames
        info = {
            "config": config_to_dict(cfg),
            "seed": seed,
            "timeline": tl.to_dict(),
            "outputs": {what: str(path) for what, path in outputs.describe()},
            "weights": weights_status(cfg),
            "random_weights_allowed": random_weights,
            "versions": {"longvid": _version(), "torch": _torch_version()},
            "device": str(pipeline.device),
        }
        if point is not None:
            info = {**point.manifest["info"], "versions": info["versions"], "device": info["device"]}

        def timings() -> dict:
            return {**pipeline.stats.as_dict(), "load_s": round(load_s, 4),
                    "write_s": round(tracker.write_s, 4)}

        if plain and not interactive and point is not None:
            typer.echo(f"resuming {outputs.video} at frame {state.frames} of {total}", err=True)
        elif plain and not interactive:
            typer.echo(f"generating {total} frames ({tl.seconds:g} s at {fps} fps, "
                       f"{len(tl.prompts)} prompt(s)) with {cfg.name}, seed {seed} -> {outputs.video}",
                       err=True)
        bar = plain and interactive and not live.live_typing
        with (_progress_bar() if bar else contextlib.nullcontext()) as progress, live:
            tracker = FrameTracker(total, progress, plain)
            with StopOnSignal(signals.echo) as stop:
                def checkpoints(video, manifest_writer) -> Checkpointer:
                    nonlocal checkpointer
                    checkpointer = Checkpointer(
                        state_path_for(outputs.manifest), pipeline, video, manifest_writer, meta,
                        checkpoint_every, stop, resumed_at=state.frames if state else None)
                    return checkpointer

                with _user_errors():
                    writers = _open_writers(outputs, fps, info, timings, checkpoints,
                                            (state.frames, record) if point else None)
                if state is not None:
                    tracker.frames = tracker.start = state.frames
                t0 = time.perf_counter()
                frames = live.wrap(pipeline.stream(live.timeline, seed=seed, state=state,
                                                   on_block=checkpointer.on_block), writers)
                try:
                    live.run(lambda: write_stream(tracker.wrap(frames), writers))
                except LongvidError as error:
                    _fail(f"{error} ({_saved(tracker, outputs, checkpointer)})")
            wall_s = time.perf_counter() - t0
    except KeyboardInterrupt as error:
        if tracker is not None and tracker.frames > 0:
            typer.echo(f"interrupted: {_saved(tracker, outputs, checkpointer)}", err=True)
        else:
            typer.echo("interrupted before any frame was made", err=True)
        raise typer.Exit(getattr(error, "exit_code", EXIT_INTERRUPTED)) from None
    if plain:
        _summary(tracker, fps, wall_s, timings(), outputs, cfg.runtime.overlap)


# --- eval ------------------------------------------------------------------------------------


@app.command("eval")
def eval_(
    video: Annotated[Path, typer.Argument(help="The video to score (e.g. from longvid generate).",
                                          show_default=False)],
    timeline: Annotated[Path, typer.Option(
        help="The prompt timeline the video was asked for (.yaml or LongLive .jsonl).",
        show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    line: Annotated[Optional[int], typer.Option(
        help="Which video of a JSONL timeline, 0-based (default: 0).", show_default=False)] = None,
    switch_frames: Annotated[Optional[str], typer.Option(
        metavar="F1,F2", help="JSONL switch points in latent frames, e.g. 40,80.",
        show_default=False)] = None,
) -> None:
    """Score VIDEO against the prompts of --timeline, from its pixels alone (shapes world).

    Reports prompt adherence per attribute (colour, shape, background, motion, size, count),
    switch latency and continuity, frozen motion, drift over ten chunks (LV-Bench VDE), and
    flicker at block boundaries. --config gives the block size (for flicker) and the VAE's
    time factor (to read JSONL switch points).

    Example:

        longvid generate --timeline prompts/eval-a.yaml --out a.mp4 && longvid eval a.mp4 --timeline prompts/eval-a.yaml
    """
    with _user_errors():
        cfg = load_config(config)
        report = evaluate_video(
            video, timeline, block_frames=cfg.schedule.block_frames * cfg.vae.temporal_factor,
            temporal_factor=cfg.vae.temporal_factor, **_jsonl_options(timeline, line, switch_frames))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(format_report(report))


# --- bench -----------------------------------------------------------------------------------


@app.command()
def bench(
    minutes: Annotated[Optional[float], typer.Option(
        help="Length of the timed stream in minutes of video (default 1).", show_default=False)] = None,
    seconds: Annotated[Optional[float], typer.Option(
        help="Length of the timed stream in seconds (instead of --minutes).", show_default=False)] = None,
    as_json: Annotated[Optional[Path], typer.Option(
        "--json", metavar="FILE", help="Also write the full report (every block) as JSON.",
        show_default=False)] = None,
    compare: Annotated[bool, typer.Option(
        "--compare", help="Also make the same frames without the KV cache and with diffusers' "
        "SkyReelsV2DiffusionForcingPipeline, and print the ratios.")] = False,
    compare_seconds: Annotated[float, typer.Option(
        metavar="S", help="Seconds of video for --compare.")] = 20.0,
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="torch threads (default: runtime.threads, else torch's default).",
        show_default=False)] = None,
    switch_every: Annotated[float, typer.Option(
        metavar="S", help="Seconds between prompt switches in the timed stream (0: one prompt).")] = 20.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    flops: Annotated[bool, typer.Option(help="Measure the matmul peak and count the generator's FLOPs.")] = True,
    video: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="Keep the timed stream's MP4 here (default: a scratch file).",
        show_default=False)] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    overrides: SetOption = None,
    weights: WeightsOption = None,
    random_weights: Annotated[bool, typer.Option(
        "--random-weights", help="If the transformer weights are missing, use random ones.")] = False,
) -> None:
    """Measure speed and memory: end-to-end frames/s and per stage, time to first frame, per-block
    time and memory along the stream, the generator's FLOP/s against this machine's matmul peak,
    and (--compare) longvid against a full recompute and diffusers' SkyReels-V2 pipeline.

    Examples:

        longvid bench --minutes 1 --json bench-1min.json

        longvid bench --minutes 10 --json bench-10min.json

        longvid bench --seconds 10 --compare --compare-seconds 60
    """
    from longvid.bench import render, run_bench

    with _user_errors():
        if minutes is not None and seconds is not None:
            raise TimelineError("give --minutes or --seconds, not both")
        length = seconds if seconds is not None else 60.0 * (minutes if minutes is not None else 1.0)
        if length <= 0 or compare_seconds <= 0:
            raise TimelineError("the stream length must be positive")
        cfg = _load_config(config, overrides, weights)
    if threads is not None:
        cfg.runtime.threads = threads
    console = Console()
    if not console.is_terminal:  # a file or CI log: room for the tables
        console = Console(width=120)
    t0 = time.perf_counter()
    pipeline = _load(cfg, random_weights)
    load_s = time.perf_counter() - t0
    with _user_errors():
        report = run_bench(pipeline, seconds=length, seed=seed, switch_every=switch_every or None,
                           load_s=load_s, flops=flops, peak=flops, compare=compare,
                           compare_seconds=compare_seconds, video=video.resolve() if video else None,
                           progress=lambda msg: typer.echo(f"bench: {msg} ...", err=True))
    render(report, console)
    if as_json is not None:
        as_json.write_text(json.dumps(report, indent=1, default=str))
        typer.echo(f"report: {as_json}")


# --- models ----------------------------------------------------------------------------------


MODELS_TABLE_MIN_WIDTH = 100  # columns for `longvid models` to show descriptions in a column


def _weights_summary(status: dict[str, str]) -> str:
    missing = [part for part, state in status.items() if state == "missing"]
    if missing:
        return "missing: " + ", ".join(missing)
    if all(state in ("random", "none") for state in status.values()):
        return "none (random init)"
    return "present"


@app.command()
def models(weights: WeightsOption = None) -> None:
    """List the known configs: description, video size, and whether their weight files are
    present (under --weights DIR, if given). Use a name with `longvid generate --config NAME`."""
    rows = []
    for name in available_configs():
        label = name + (" *" if name == DEFAULT_CONFIG else "")
        try:
            cfg = _load_config(name, None, weights)
            v = cfg.video
            video, description = f"{v.width}x{v.height} @ {v.fps} fps", cfg.description
            status = _weights_summary(weights_status(cfg))
        except LongvidError as error:
            video, description, status = "", str(error), "invalid"
        bad = status == "invalid" or status.startswith("missing")
        rows.append((label, video, Text(status, style="red" if bad else "green"), description))
    if not rows:
        typer.echo(f"no configs found in {config_dir()}")
        return
    console, caption = Console(), f"configs in {config_dir()}; * = default"
    if console.width < MODELS_TABLE_MIN_WIDTH:  # narrow: each description under its config
        for label, video, status, description in rows:
            console.print(Text.assemble((label, "bold"), "  ", video, "  weights ", status))
            console.print(Padding(Text(description, style="dim"), (0, 0, 1, 4)))
        console.print(Text(caption, style="dim"))
        return
    table = Table(caption=caption, box=box.SIMPLE_HEAD)
    table.add_column("config", no_wrap=True, style="bold")
    table.add_column("video", no_wrap=True)
    table.add_column("weights", ratio=1)
    table.add_column("description", ratio=2)
    for label, video, status, description in rows:
        table.add_row(label, video, status, Text(description))
    console.print(table)


# --- convert ---------------------------------------------------------------------------------


@app.command()
def convert(
    out: Annotated[Path, typer.Option("--out", "-o", help="The .safetensors file to write.")],
    config: ConfigOption = DEFAULT_CONFIG,
    overrides: SetOption = None,
    weights: WeightsOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
) -> None:
    """Write a config's transformer (any checkpoint layout, LoRA merged) as one safetensors file
    that loads faster next time: then pass `--set weights.transformer=FILE --set weights.lora=null`.

    Example:

        longvid convert --config longlive-1.3b --weights ~/models --out ~/models/longlive.safetensors
    """
    from longvid.convert import convert_transformer

    with _user_errors():
        cfg = _load_config(config, overrides, weights)
        t0 = time.perf_counter()
        summary = convert_transformer(cfg, out, overwrite)
    typer.echo(f"wrote {summary['out']}: {summary['parameters']:,} parameters ({summary['dtype']}, "
               f"{summary['bytes'] / 2**30:.2f} GiB) from {summary['source']}"
               + (f" + LoRA {summary['lora']} ({summary['lora_layers']} layers, merged)" if summary["lora"] else "")
               + f" in {time.perf_counter() - t0:.1f} s")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
