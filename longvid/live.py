"""Steering a stream while it runs: a growing prompt timeline and the controls around it.

`LiveTimeline` has the interface the pipeline's loop reads (`prompt_index_at`, `prompts`,
`num_latent_frames`, `num_pixel_frames`), so the loop runs unchanged over a timeline that grows
while it streams. The loop asks for a block's prompt when the block enters generation; the
timeline remembers the furthest latent frame asked for (the *frontier*), and a prompt given live
starts at the first block past it: the next block not yet started. That block then sees a new
prompt and the loop switches there (with KV-recache), exactly as it would for a prompt scripted
at that block. Prompts at or before the frontier never change, so every frame already made keeps
its prompt, and the prompts with their latent start frames are a complete record of the run:
written as a timeline file, they replay to the same video under the same seed and config.

`LiveSession` sits in the frame stream between the pipeline and the writers: it hands each frame
to a `FrameHub` (latest frame only, for viewers), counts frames and fps, blocks while paused,
ends the stream at a block boundary on "stop and save", and keeps the manifest and the replay
timeline file up to date with every live prompt. Viewers (the web page in `preview`, the window
in `window`, the stdin reader here) only call its thread-safe methods.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import yaml

from longvid.errors import LongvidError
from longvid.frames import Frame
from longvid.timeline import (
    MAX_PROMPT_CHARS, Prompt, Timeline, _check_text, latent_frame_to_seconds, latent_frames_for,
    seconds_to_pixel_frame,
)

FPS_WINDOW_SECONDS = 2.0  # the fps shown is measured over the last this many seconds
PAUSE_POLL_SECONDS = 0.25  # a paused stream re-checks stop / Ctrl-C this often


class LivePromptError(LongvidError):
    """A prompt given live cannot be applied (empty, too long, or the video is nearly done)."""


def first_pixel_frame(latent_frame: int, temporal_factor: int) -> int:
    """The first video frame decoded from `latent_frame` (latent 0 is pixel 0 alone, then
    `temporal_factor` pixels per latent)."""
    return 0 if latent_frame == 0 else temporal_factor * (latent_frame - 1) + 1


class LiveTimeline:
    """A prompt timeline that grows while the stream runs (thread-safe).

    base: the timeline the run starts from (its length and scripted switches are kept).
    block_frames: latent frames per block; live prompts start on block boundaries.
    """

    def __init__(self, base: Timeline, block_frames: int) -> None:
        if block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {block_frames}")
        self._lock = threading.Lock()
        self._prompts: list[Prompt] = list(base.prompts)
        self.seconds = base.seconds
        self.fps = base.fps
        self.temporal_factor = base.temporal_factor
        self.block_frames = block_frames
        self._frontier = -1  # furthest latent frame whose prompt the loop has read
        self.version = 0  # bumped at every change

    # --- what the pipeline's loop reads ---------------------------------------------------------
    @property
    def prompts(self) -> tuple[Prompt, ...]:
        with self._lock:
            return tuple(self._prompts)

    @property
    def num_latent_frames(self) -> int:
        return latent_frames_for(self.seconds, self.fps, self.temporal_factor)

    @property
    def num_pixel_frames(self) -> int:
        return seconds_to_pixel_frame(self.seconds, self.fps)

    def prompt_index_at(self, latent_frame: int) -> int:
        """Index of the prompt in effect at `latent_frame`; fixes the prompts up to that frame
        (the loop asks when a block enters generation, so that block's prompt is now final)."""
        if latent_frame < 0:
            raise ValueError(f"latent_frame must be >= 0, got {latent_frame}")
        with self._lock:
            self._frontier = max(self._frontier, latent_frame)
            return bisect.bisect_right([p.start_frame for p in self._prompts], latent_frame) - 1

    # --- steering ---------------------------------------------------------------------------------
    @property
    def frontier(self) -> int:
        """The furthest latent frame whose prompt is fixed (-1 before the stream starts)."""
        with self._lock:
            return self._frontier

    def next_start_frame(self) -> int | None:
        """The latent frame where a prompt given now would start (None: the last block has
        started, too late to steer)."""
        with self._lock:
            return self._next_start()

    def _next_start(self) -> int | None:
        k = self.block_frames
        block = max(self._frontier // k + 1, 1)  # the first prompt always owns block 0
        start = block * k
        return start if start < self.num_latent_frames else None

    def add(self, text: str) -> tuple[Prompt, list[Prompt]]:
        """Start `text` at the next block not yet started; return the new prompt and the
        not-yet-started prompts it replaced (one already waiting for that same block).

        Scripted prompts later in the timeline stay. Raises LivePromptError for an empty or
        overlong prompt, or when the video's last block has already started.
        """
        if not isinstance(text, str):
            raise LivePromptError(f"a prompt must be text, got {type(text).__name__}")
        try:
            text = _check_text(text, "live prompt")
        except LongvidError as error:
            raise LivePromptError(str(error)) from None
        with self._lock:
            start = self._next_start()
            if start is None:
                raise LivePromptError("the video's last block has already started: there is no "
                                      "block left for a new prompt")
            prompt = Prompt(text, latent_frame_to_seconds(start, self.fps, self.temporal_factor), start)
            replaced = [p for p in self._prompts if p.start_frame == start]
            kept = [p for p in self._prompts if p.start_frame != start]
            kept.insert(bisect.bisect_right([p.start_frame for p in kept], start), prompt)
            self._prompts = kept
            self.version += 1
            return prompt, replaced

    # --- records ----------------------------------------------------------------------------------
    def snapshot(self, seconds: float | None = None) -> Timeline:
        """A frozen `Timeline` of the prompts so far over `seconds` (default: the full length);
        prompts that start past a shorter length are left out."""
        seconds = self.seconds if seconds is None else seconds
        frames = latent_frames_for(seconds, self.fps, self.temporal_factor)
        prompts = tuple(p for p in self.prompts if p.start_frame < frames)
        return Timeline(prompts, seconds, self.fps, self.temporal_factor)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the manifest (as `Timeline.to_dict`)."""
        return self.snapshot().to_dict()


def timeline_yaml(timeline: Timeline, header: str = "") -> str:
    """`timeline` as the YAML that `load_timeline` reads back to the same latent frames.

    Each `at:` is the prompt's start in seconds (a live prompt's is the time of the first video
    frame of its block), written exactly (float repr), so it maps back to the same latent frame.
    """
    data = {
        "seconds": timeline.seconds,
        "prompts": [{"at": p.start_seconds, "text": p.text} for p in timeline.prompts],
    }
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)


class FrameHub:
    """The latest frame, for any number of viewers; the producer never waits for them.

    `publish` only stores a reference and wakes waiting viewers. A viewer asks for the JPEG of
    the latest frame: it is encoded at most once per frame, on the viewer's thread, and only if
    someone asks, so a slow or absent viewer costs the stream nothing and simply skips frames.
    """

    def __init__(self, jpeg_quality: int = 90) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._seq = 0
        self._closed = False
        self._jpeg_lock = threading.Lock()
        self._jpeg: tuple[int, bytes] = (0, b"")
        self.jpeg_quality = jpeg_quality
        self.encoded = 0  # JPEGs encoded so far (at most one per published frame)

    def publish(self, frame: Frame) -> None:
        with self._cond:
            self._frame = frame
            self._seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        """No more frames: wake every viewer so it can finish."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def latest(self) -> tuple[int, Frame | None]:
        """(sequence number, frame) of the newest frame; (0, None) before the first."""
        with self._cond:
            return self._seq, self._frame

    def wait(self, after: int, timeout: float) -> int:
        """Block until a frame newer than sequence `after` exists, the hub closes, or `timeout`
        seconds pass; return the newest sequence number."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self._closed, timeout)
            return self._seq

    def jpeg(self) -> tuple[int, bytes | None]:
        """(sequence number, JPEG bytes) of the newest frame, encoding it if no viewer has yet."""
        seq, frame = self.latest()
        if frame is None:
            return 0, None
        with self._jpeg_lock:
            if self._jpeg[0] != seq:
                self._jpeg = (seq, encode_jpeg(frame.image, self.jpeg_quality))
                self.encoded += 1
            return self._jpeg


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


class LiveSession:
    """Controls of one live run, shared by the generation thread and any number of viewers.

    timeline: the `LiveTimeline` the pipeline streams from.
    seed: recorded in the replay file's header.
    record_path: where to keep the replay timeline (YAML); None: no file.
    replay_hint: the command line suggested in that file's header (e.g. the config used).
    """

    def __init__(self, timeline: LiveTimeline, *, seed: int = 0, record_path: str | Path | None = None,
                 replay_hint: str = "") -> None:
        self.timeline = timeline
        self.seed = seed
        self.record_path = Path(record_path) if record_path is not None else None
        self.replay_hint = replay_hint
        self.hub = FrameHub()
        self.total = timeline.num_pixel_frames
        self._lock = threading.Lock()
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self.state = "starting"  # starting | running | paused | stopping | finished
        self.frames = 0  # frames the writers have taken
        self.prompt_index = 0
        self.prompt_text = timeline.prompts[0].text
        self.events: list[dict[str, Any]] = []  # every live action, in order
        self.stopped_at: int | None = None
        self._rate: deque[tuple[float, int]] = deque()
        self._recorded_version = -1

    # --- controls (any thread) ---------------------------------------------------------------------
    def submit_prompt(self, text: str, source: str = "api") -> dict[str, Any]:
        """Apply `text` from the next block not yet started; returns where it starts.
        Raises LivePromptError if it cannot be applied."""
        if self._stop.is_set() or self.state == "finished":
            raise LivePromptError("the stream is stopping: no more prompts")
        prompt, replaced = self.timeline.add(text)
        event = {
            "action": "prompt",
            "source": source,
            "text": prompt.text,
            "start_latent_frame": prompt.start_frame,
            "first_frame": first_pixel_frame(prompt.start_frame, self.timeline.temporal_factor),
            "block": prompt.start_frame // self.timeline.block_frames,
            "received_after_frames": self.frames,
            "replaced": [p.text for p in replaced],
        }
        self._log(event)
        return event

    def pause(self, source: str = "api") -> None:
        if self.state in ("stopping", "finished") or not self._running.is_set():
            return
        self._running.clear()
        self._log({"action": "pause", "source": source, "received_after_frames": self.frames})

    def resume(self, source: str = "api") -> None:
        if self._running.is_set():
            return
        self._running.set()
        self._log({"action": "resume", "source": source, "received_after_frames": self.frames})

    def stop(self, source: str = "api") -> None:
        """Stop and save: the stream ends after the frames of the current block; writers close
        normally, so the video is complete up to there."""
        if self._stop.is_set() or self.state == "finished":
            return
        self._stop.set()
        self._running.set()
        self._log({"action": "stop", "source": source, "received_after_frames": self.frames})

    def interrupt(self) -> None:
        """End the stream as Ctrl-C would (raises KeyboardInterrupt in the generation thread)."""
        self._interrupt.set()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def _log(self, event: dict[str, Any]) -> None:
        with self._lock:
            event["time"] = round(time.time(), 3)
            self.events.append(event)

    # --- status (any thread) -------------------------------------------------------------------------
    def fps(self) -> float:
        with self._lock:
            if len(self._rate) < 2:
                return 0.0
            (t0, n0), (t1, n1) = self._rate[0], self._rate[-1]
        if self.paused:
            return 0.0
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def status(self) -> dict[str, Any]:
        """Everything a viewer shows, as plain JSON-able data."""
        tl, tf = self.timeline, self.timeline.temporal_factor
        prompts = tl.prompts
        frontier = tl.frontier
        nxt = tl.next_start_frame()
        state = self.state
        if state in ("starting", "running") and self.paused:
            state = "paused"
        return {
            "state": state,
            "frame": self.frames,
            "total": self.total,
            "fps": round(self.fps(), 2),
            "video_fps": tl.fps,
            "prompt_index": self.prompt_index,
            "prompt": self.prompt_text,
            "prompts": [
                {
                    "text": p.text,
                    "first_frame": first_pixel_frame(p.start_frame, tf),
                    "start_latent_frame": p.start_frame,
                    "fixed": p.start_frame <= frontier,
                }
                for p in prompts
            ],
            "next_prompt_frame": None if nxt is None else first_pixel_frame(nxt, tf),
            "max_prompt_chars": MAX_PROMPT_CHARS,
            "stopped_at": self.stopped_at,
        }

    # --- the stream (generation thread) ------------------------------------------------------------
    def wrap(self, frames: Iterable[Frame], manifest: Any = None) -> Iterator[Frame]:
        """Pass `frames` on to the writers, applying the controls between frames.

        manifest: a `ManifestWriter` whose `info` gets the live timeline and events (updated on
        this thread, so the writer never sees a dict change mid-write).
        """
        iterator = iter(frames)
        self.state = "running"
        k, tf = self.timeline.block_frames, self.timeline.temporal_factor
        ended = False
        try:
            self._record(manifest)
            for frame in iterator:
                if self._interrupt.is_set():
                    raise KeyboardInterrupt
                self.hub.publish(frame)
                self.prompt_index, self.prompt_text = frame.prompt_index, frame.prompt
                self._record(manifest)
                yield frame
                self.frames = frame.index + 1
                now = time.monotonic()
                with self._lock:
                    self._rate.append((now, self.frames))
                    while len(self._rate) > 2 and now - self._rate[0][0] > FPS_WINDOW_SECONDS:
                        self._rate.popleft()
                while not self._running.wait(PAUSE_POLL_SECONDS):
                    pass  # paused: the generator is not advanced, so nothing is computed
                if self._interrupt.is_set():
                    raise KeyboardInterrupt
                if self._stop.is_set():
                    self.state = "stopping"
                    # the rest of this block is already decoded: write it, then end
                    if frame.index >= first_pixel_frame((frame.block + 1) * k, tf) - 1:
                        self.stopped_at = self.frames
                        break
            ended = self.stopped_at is None
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            self.state = "finished"
            self.hub.close()
            self._record(manifest, final_seconds=None if ended else self.frames / self.timeline.fps)

    def replay_timeline(self, seconds: float | None = None) -> Timeline:
        return self.timeline.snapshot(seconds)

    def _record(self, manifest: Any, final_seconds: float | None = None, force: bool = False) -> None:
        """Bring the manifest info and the replay file up to date (on the generation thread)."""
        final = final_seconds is not None or self.state == "finished"
        version = self.timeline.version
        if version == self._recorded_version and not final and not force:
            return
        self._recorded_version = version
        seconds = final_seconds if final_seconds and final_seconds > 0 else None
        replay = self.replay_timeline(seconds)
        if manifest is not None:
            info = manifest.info
            info["timeline"] = self.timeline.to_dict()
            with self._lock:
                events = list(self.events)
            info["live"] = {
                "replay_timeline": str(self.record_path) if self.record_path else None,
                "replay_seconds": replay.seconds,
                "events": events,
                "stopped_at_frame": self.stopped_at,
            }
        if self.record_path is not None:
            self.write_replay(replay)

    def write_replay(self, replay: Timeline) -> None:
        from longvid.writers import _atomic_write_text  # the manifest's atomic write

        header = (f"longvid timeline recorded live ({len(replay.prompts)} prompt(s)); replay the same "
                  f"video with:\n  longvid generate --timeline {self.record_path.name} --seed {self.seed}"
                  f"{(' ' + self.replay_hint) if self.replay_hint else ''}")
        _atomic_write_text(self.record_path, timeline_yaml(replay, header))


# --- typing prompts on standard input -----------------------------------------------------------------

STDIN_HELP = ("type a prompt and press Enter to switch at the next block; "
              ":pause, :resume, :stop (stop and save), :help")


def handle_command(session: LiveSession, line: str, source: str = "stdin") -> str:
    """Apply one line typed by a person: a prompt, or :pause / :resume / :stop / :help.
    Returns the reply to show."""
    line = line.strip()
    if not line:
        return ""
    if line.startswith(":"):
        command = line[1:].strip().lower()
        actions: dict[str, Callable[[], str]] = {
            "pause": lambda: (session.pause(source), "paused")[1],
            "resume": lambda: (session.resume(source), "resumed")[1],
            "stop": lambda: (session.stop(source), "stopping after this block; the video is saved")[1],
            "help": lambda: STDIN_HELP,
        }
        if command not in actions:
            return f"unknown command {line!r}: {STDIN_HELP}"
        return actions[command]()
    try:
        event = session.submit_prompt(line, source)
    except LivePromptError as error:
        return f"prompt refused: {error}"
    replaced = f" (replaces {event['replaced'][0]!r})" if event["replaced"] else ""
    return f"prompt from frame {event['first_frame']} (block {event['block']}): {event['text']}{replaced}"


def read_commands(session: LiveSession, stream: TextIO, reply: Callable[[str], None]) -> threading.Thread:
    """Read lines from `stream` in a daemon thread until it ends or the stream finishes."""

    def run() -> None:
        for line in stream:
            if session.state == "finished":
                break
            answer = handle_command(session, line)
            if answer:
                reply(answer)

    thread = threading.Thread(target=run, name="longvid-stdin", daemon=True)
    thread.start()
    return thread
