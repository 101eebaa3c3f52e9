"""Prompt timelines: which prompt is in effect at every latent frame of the video.

Three sources, one result (`Timeline`):
- a YAML file with `seconds:` and `prompts: [{at: TIME, text: ...}, ...]` (TIME in seconds or
  "mm:ss" / "h:mm:ss"),
- a LongLive-style JSONL file, one video per line, `{"prompts": [...], "switch_frame_indices":
  [...]}` with switch points in latent frames,
- a single prompt (`single`).

Time -> latent frame follows the Wan VAE's causal layout: latent 0 holds pixel frame 0 alone and
latent k >= 1 holds pixel frames tf*(k-1)+1 .. tf*k, so T latent frames decode to tf*T-(tf-1)
pixel frames and pixel frame p lies in latent (p + tf - 1) // tf. A switch at time t takes
effect at the first pixel frame shown at or after t, i.e. p = ceil(t * fps).

Every bad input raises TimelineError on one line naming the file, the entry and the fix.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from longvid.config import (
    Config, StrictYamlLoader, VaeConfig, VideoConfig, closest, short_repr, yaml_error_line,
    yaml_error_reason,
)
from longvid.errors import ConfigError, TimelineError

MAX_PROMPT_CHARS = 2000  # far beyond any text encoder's context; longer is surely a mistake
MAX_SECONDS = 24 * 60 * 60  # one day: longer is surely a typo (minutes for seconds, ...)
SECONDS_PER_MINUTE = 60
YAML_SUFFIXES = (".yaml", ".yml")
JSONL_SUFFIXES = (".jsonl",)
_FRAME_TOLERANCE = 1e-6  # in pixel frames: absorbs float error in seconds * fps
_YAML_KEYS = ("seconds", "prompts")
_YAML_PROMPT_KEYS = ("at", "text")
_JSONL_KEYS = ("prompts", "switch_frame_indices", "seconds")
_TIME_FORMS = "write seconds (12 or 12.5) or a clock time in quotes (\"0:20\", \"1:02:03.5\")"


@dataclass(frozen=True)
class Prompt:
    """One prompt and where it starts: `start_frame` is a latent frame index."""

    text: str
    start_seconds: float
    start_frame: int


@dataclass(frozen=True)
class Timeline:
    """Prompts in time order (the first starts at 0) over a video of `seconds` seconds.

    `fps` and `temporal_factor` (the VAE's) fix the latent-frame grid; they default to the
    config defaults, but the loaders always pass the run's values.
    """

    prompts: tuple[Prompt, ...]
    seconds: float
    fps: int = VideoConfig.fps
    temporal_factor: int = VaeConfig.temporal_factor

    def __post_init__(self) -> None:
        _check_grid(self.fps, self.temporal_factor)
        _check_prompts(self.prompts, self.seconds, self.fps, self.temporal_factor, "timeline",
                       [f"prompts[{i}]" for i in range(len(self.prompts))])

    @property
    def num_latent_frames(self) -> int:
        """Latent frames needed to cover `seconds` of video."""
        return latent_frames_for(self.seconds, self.fps, self.temporal_factor)

    @property
    def num_pixel_frames(self) -> int:
        """Frames of the video: `seconds` at `fps`."""
        return seconds_to_pixel_frame(self.seconds, self.fps)

    @property
    def switch_frames(self) -> tuple[int, ...]:
        """Latent frames where the prompt changes (every start but the first)."""
        return tuple(p.start_frame for p in self.prompts[1:])

    def prompt_index_at(self, latent_frame: int) -> int:
        """Index of the prompt in effect at `latent_frame`. Frames past the end keep the last
        prompt (a final partial block may run over)."""
        if latent_frame < 0:
            raise ValueError(f"latent_frame must be >= 0, got {latent_frame}")
        return bisect.bisect_right([p.start_frame for p in self.prompts], latent_frame) - 1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the manifest."""
        return {
            "seconds": self.seconds,
            "fps": self.fps,
            "temporal_factor": self.temporal_factor,
            "num_latent_frames": self.num_latent_frames,
            "prompts": [
                {"text": p.text, "start_seconds": p.start_seconds, "start_frame": p.start_frame}
                for p in self.prompts
            ],
        }


# ---------------------------------------------------------------------------------------------
# Time <-> frames
# ---------------------------------------------------------------------------------------------


def parse_time(value: Any) -> float:
    """Seconds from 12, 12.5, "12", "12.5", "0:20" (m:ss) or "1:02:03.5" (h:mm:ss).

    Raises TimelineError naming the value for anything else, negative or non-finite times.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TimelineError(
            f"invalid time {short_repr(value)}: not a number or text; {_TIME_FORMS}"
        )
    if isinstance(value, str):
        seconds = _parse_clock(value)
    else:
        try:
            seconds = float(value)
        except OverflowError:
            raise TimelineError(f"invalid time {short_repr(value)}: too large") from None
    if not math.isfinite(seconds):
        raise TimelineError(f"invalid time {short_repr(value)}: must be a finite number of seconds")
    if seconds < 0:
        raise TimelineError(f"invalid time {short_repr(value)}: negative; times count from 0")
    return seconds


def _parse_clock(text: str) -> float:
    """Seconds from "12.5", "0:20" or "1:02:03.5"."""
    parts = text.strip().split(":")
    if text.strip().startswith("-"):
        raise TimelineError(f"invalid time {short_repr(text)}: negative; times count from 0")
    max_parts = 3
    whole_fields = parts[:-1]
    last = parts[-1]
    valid_last = last.replace(".", "", 1).isdigit() and last.isascii()
    valid_whole = all(f.isdigit() and f.isascii() for f in whole_fields)
    if len(parts) > max_parts or not valid_last or not valid_whole:
        raise TimelineError(f"invalid time {short_repr(text)}: {_TIME_FORMS}")
    numbers = [int(f) for f in whole_fields] + [float(last)]
    if any(n >= SECONDS_PER_MINUTE for n in numbers[1:]):
        raise TimelineError(
            f"invalid time {short_repr(text)}: minutes and seconds after a ':' must be below 60"
        )
    seconds = 0.0
    for number in numbers:
        seconds = seconds * SECONDS_PER_MINUTE + number
    return seconds


def seconds_to_pixel_frame(seconds: float, fps: int) -> int:
    """Index of the first pixel frame shown at or after `seconds`."""
    return max(0, math.ceil(seconds * fps - _FRAME_TOLERANCE))


def seconds_to_latent_frame(seconds: float, fps: int, temporal_factor: int) -> int:
    """Latent frame holding the first pixel frame at or after `seconds`.

    Pixel frame p lies in latent (p + tf - 1) // tf: fps 16, tf 4, 20 s -> p 320 -> latent 80.
    """
    return (seconds_to_pixel_frame(seconds, fps) + temporal_factor - 1) // temporal_factor


def latent_frame_to_seconds(latent_frame: int, fps: int, temporal_factor: int) -> float:
    """Time of the first pixel frame of `latent_frame` (inverse of seconds_to_latent_frame)."""
    first_pixel = 0 if latent_frame == 0 else temporal_factor * (latent_frame - 1) + 1
    return first_pixel / fps


def latent_frames_for(seconds: float, fps: int, temporal_factor: int) -> int:
    """Latent frames T needed so that tf*T-(tf-1) pixel frames cover `seconds` of video."""
    pixel_frames = seconds_to_pixel_frame(seconds, fps)
    if pixel_frames == 0:
        return 0
    last_pixel = pixel_frames - 1
    return (last_pixel + temporal_factor - 1) // temporal_factor + 1


# ---------------------------------------------------------------------------------------------
# Checks shared by every source
# ---------------------------------------------------------------------------------------------


def _check_grid(fps: int, temporal_factor: int) -> None:
    for name, value in (("fps", fps), ("temporal_factor", temporal_factor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TimelineError(f"{name} must be a positive integer, got {short_repr(value)}")


def _check_text(text: Any, where: str) -> str:
    """The prompt text, stripped; errors for non-text, empty or overlong prompts."""
    if not isinstance(text, str):
        raise TimelineError(
            f"{where}: prompt text must be a string, got {short_repr(text)}; quote it"
        )
    stripped = text.strip()
    if not stripped:
        raise TimelineError(f"{where}: prompt text is empty; write what the video should show")
    if len(stripped) > MAX_PROMPT_CHARS:
        raise TimelineError(
            f"{where}: prompt is {len(stripped)} characters, over the limit of "
            f"{MAX_PROMPT_CHARS}; shorten it"
        )
    return stripped


def _check_seconds(value: Any, where: str) -> float:
    """The video length in seconds: a time > 0 and at most MAX_SECONDS."""
    try:
        seconds = parse_time(value)
    except TimelineError as error:
        raise TimelineError(f"{where}: video length: {error}") from None
    if seconds <= 0:
        raise TimelineError(f"{where}: video length must be > 0 seconds, got {short_repr(value)}")
    if seconds > MAX_SECONDS:
        raise TimelineError(
            f"{where}: video length {seconds:g} s is over {MAX_SECONDS} s (24 h); "
            "give the length in seconds"
        )
    return seconds


def _check_frames(seconds: float, fps: int, where: str) -> None:
    """A video of at least one frame at `fps`."""
    if seconds_to_pixel_frame(seconds, fps) < 1:
        raise TimelineError(f"{where}: video length {seconds:g} s is under one frame at {fps} fps; "
                            f"give at least {1 / fps:g} s")


def _check_prompts(
    prompts: Sequence[Prompt], seconds: float, fps: int, temporal_factor: int, where: str,
    labels: Sequence[str],
) -> None:
    """Order and range checks: first at 0, strictly later times in distinct latent frames,
    all before the end of the video."""
    if not prompts:
        raise TimelineError(f"{where}: no prompts; give at least one")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise TimelineError(f"{where}: video length must be > 0 seconds, got {short_repr(seconds)}")
    _check_frames(seconds, fps, where)
    num_frames = latent_frames_for(seconds, fps, temporal_factor)
    first = prompts[0]
    if first.start_seconds != 0 or first.start_frame != 0:
        raise TimelineError(
            f"{where}: {labels[0]} starts at {first.start_seconds:g} s; the first prompt must "
            "start at 0 (add a prompt at 0 or move this one)"
        )
    for i in range(1, len(prompts)):
        prev, cur = prompts[i - 1], prompts[i]
        if cur.start_seconds == prev.start_seconds:
            raise TimelineError(
                f"{where}: {labels[i]} and {labels[i - 1]} both start at "
                f"{cur.start_seconds:g} s; give each prompt its own time"
            )
        if cur.start_seconds < prev.start_seconds:
            raise TimelineError(
                f"{where}: {labels[i]} at {cur.start_seconds:g} s comes before {labels[i - 1]} "
                f"at {prev.start_seconds:g} s; list prompts in time order"
            )
        if cur.start_seconds >= seconds:
            raise TimelineError(
                f"{where}: {labels[i]} at {cur.start_seconds:g} s is at or after the end of the "
                f"{seconds:g} s video; move it earlier or make the video longer"
            )
        if cur.start_frame >= num_frames:
            raise TimelineError(
                f"{where}: {labels[i]} at {cur.start_seconds:g} s starts at latent frame "
                f"{cur.start_frame}, past the video's last latent frame {num_frames - 1}; "
                "move it earlier or make the video longer"
            )
        if cur.start_frame <= prev.start_frame:
            gap = temporal_factor / fps
            raise TimelineError(
                f"{where}: {labels[i]} at {cur.start_seconds:g} s falls in the same latent frame "
                f"({cur.start_frame}) as {labels[i - 1]} at {prev.start_seconds:g} s; space "
                f"switches at least {gap:g} s apart"
            )


def _prompt_at(text: str, seconds: float, fps: int, temporal_factor: int) -> Prompt:
    return Prompt(text, seconds, seconds_to_latent_frame(seconds, fps, temporal_factor))


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


def single(text: str, seconds: float, fps: int, temporal_factor: int) -> Timeline:
    """A timeline of one prompt for the whole video."""
    _check_grid(fps, temporal_factor)
    length = _check_seconds(seconds, "--seconds")
    _check_frames(length, fps, "--seconds")
    prompt = _check_text(text, "prompt")
    return Timeline((Prompt(prompt, 0.0, 0),), length, fps, temporal_factor)


def load_timeline(
    path: str | Path, *, fps: int, temporal_factor: int, seconds: float | None = None,
    line: int = 0, switch_frames: Sequence[int] | None = None,
) -> Timeline:
    """Read a timeline from a .yaml/.yml or LongLive .jsonl file.

    seconds: video length; overrides the file's (the CLI's --seconds).
    line: which video of a JSONL file (0-based, blank lines skipped).
    switch_frames: JSONL switch points in latent frames; overrides "switch_frame_indices".
    """
    _check_grid(fps, temporal_factor)
    path = Path(path)
    length = None if seconds is None else _check_seconds(seconds, f"{path}: --seconds")
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix in YAML_SUFFIXES:
        if switch_frames is not None or line != 0:
            raise TimelineError(
                f"{path}: --switch-frames and --line apply to JSONL timelines; in YAML give "
                "each prompt an `at:` time"
            )
        return _from_yaml(path, text, fps, temporal_factor, length)
    if suffix in JSONL_SUFFIXES:
        return _from_jsonl(path, text, fps, temporal_factor, length, line, switch_frames)
    raise TimelineError(
        f"{path}: unknown timeline format '{suffix}'; use a .yaml/.yml timeline or a "
        "LongLive .jsonl"
    )


def make_timeline(config: Config, prompt: str | None = None, timeline: str | os.PathLike | Timeline | None = None,
                  seconds: float | None = None, **jsonl) -> Timeline:
    """A timeline on `config`'s frame grid from one prompt (for `seconds`, default 10) or a YAML /
    JSONL file (`load_timeline`'s options in `jsonl`). Light: the CLI checks a run's prompts with
    it before it loads torch and the model."""
    fps, tf = config.video.fps, config.vae.temporal_factor
    if isinstance(timeline, Timeline):
        return timeline
    if timeline is not None:
        if prompt is not None:
            raise ConfigError("give either a prompt or a timeline file, not both")
        return load_timeline(Path(timeline), fps=fps, temporal_factor=tf, seconds=seconds, **jsonl)
    if prompt is None:
        raise ConfigError("give a prompt, or --timeline FILE")
    return single(prompt, 10.0 if seconds is None else seconds, fps, tf)


def _read_text(path: Path) -> str:
    """The file as UTF-8 text (BOM dropped); clear errors for missing or non-UTF-8 files."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TimelineError(f"timeline file not found: {path}; check the path") from None
    except IsADirectoryError:
        raise TimelineError(f"{path} is a directory; pass a timeline file") from None
    except OSError as error:
        raise TimelineError(f"{path}: cannot read timeline ({error.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        bad_line = data[: error.start].count(b"\n") + 1
        raise TimelineError(
            f"{path}:{bad_line}: not UTF-8 text (byte {error.start}); save the file as UTF-8"
        ) from None


def _unknown_keys(mapping: Mapping[Any, Any], allowed: Sequence[str], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            near = closest(str(key), allowed)
            hint = f"did you mean '{near}'? " if near else ""
            raise TimelineError(
                f"{where}: unknown key {short_repr(key)}; {hint}allowed keys: {', '.join(allowed)}"
            )


def _load_yaml(path: Path, text: str) -> tuple[Any, list[int]]:
    """Parse YAML; also return the line of each item under `prompts` (for error messages)."""
    loader = None
    try:
        loader = StrictYamlLoader(text)  # the reader rejects control characters right here
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        line = yaml_error_line(error)
        where = f"{path}:{line}" if line else str(path)
        raise TimelineError(
            f"{where}: malformed YAML ({yaml_error_reason(error)}); fix the syntax"
        ) from None
    except (ValueError, TypeError, RecursionError) as error:  # PyYAML bugs on odd scalars
        raise TimelineError(
            f"{path}: malformed YAML ({type(error).__name__}: {yaml_error_reason(error)})"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: list[int] = []
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == "prompts" and isinstance(value_node, yaml.SequenceNode):
                lines = [item.start_mark.line + 1 for item in value_node.value]
    return data, lines


def _from_yaml(
    path: Path, text: str, fps: int, temporal_factor: int, length: float | None,
) -> Timeline:
    data, lines = _load_yaml(path, text)
    if data is None:
        raise TimelineError(f"{path}: the file is empty; see prompts/example.yaml for the form")
    if not isinstance(data, Mapping):
        raise TimelineError(
            f"{path}: a YAML timeline must be a mapping with `seconds:` and `prompts:`, got "
            f"{type(data).__name__}"
        )
    _unknown_keys(data, _YAML_KEYS, str(path))
    if "prompts" not in data:
        raise TimelineError(
            f"{path}: missing key 'prompts'; add `prompts:` with `- at: 0` / `text:` entries"
        )
    if length is None:
        if "seconds" not in data:
            raise TimelineError(f"{path}: no video length; add `seconds: N` or pass --seconds")
        length = _check_seconds(data["seconds"], f"{path}: seconds")
    entries = data["prompts"]
    if not isinstance(entries, list):
        raise TimelineError(
            f"{path}: `prompts` must be a list of `- at: / text:` entries, got "
            f"{type(entries).__name__}"
        )
    if not entries:
        raise TimelineError(f"{path}: `prompts` is empty; give at least one prompt at 0")
    labels = [
        f"prompts[{i}]" + (f" (line {lines[i]})" if i < len(lines) else "")
        for i in range(len(entries))
    ]
    prompts = []
    for entry, label in zip(entries, labels):
        where = f"{path}: {label}"
        if not isinstance(entry, Mapping):
            raise TimelineError(
                f"{where}: must be a mapping with `at:` and `text:`, got {short_repr(entry)}"
            )
        _unknown_keys(entry, _YAML_PROMPT_KEYS, where)
        for key in _YAML_PROMPT_KEYS:
            if key not in entry:
                raise TimelineError(
                    f"{where}: missing key '{key}'; each prompt needs `at:` and `text:`"
                )
        try:
            start = parse_time(entry["at"])
        except TimelineError as error:
            raise TimelineError(f"{where}: {error}") from None
        prompts.append(_prompt_at(_check_text(entry["text"], where), start, fps, temporal_factor))
    _check_prompts(prompts, length, fps, temporal_factor, str(path), labels)
    return Timeline(tuple(prompts), length, fps, temporal_factor)


def _from_jsonl(
    path: Path, text: str, fps: int, temporal_factor: int, length: float | None, line: int,
    switch_frames: Sequence[int] | None,
) -> Timeline:
    data, where = _jsonl_line(path, text, line)
    _unknown_keys(data, _JSONL_KEYS, where)
    if "prompts" not in data:
        raise TimelineError(f'{where}: missing key "prompts"; add "prompts": ["...", ...]')
    texts = data["prompts"]
    if not isinstance(texts, list):
        raise TimelineError(
            f'{where}: "prompts" must be a list of strings, got {type(texts).__name__}'
        )
    if not texts:
        raise TimelineError(f'{where}: "prompts" is empty; give at least one prompt')
    texts = [_check_text(t, f"{where}: prompts[{i}]") for i, t in enumerate(texts)]
    if length is None:
        if "seconds" not in data:
            raise TimelineError(
                f'{where}: no video length; pass --seconds (or add "seconds": N to the line)'
            )
        length = _check_seconds(data["seconds"], f'{where}: "seconds"')
    if switch_frames is not None:
        given, name = switch_frames, "--switch-frames"
    else:
        given, name = data.get("switch_frame_indices"), '"switch_frame_indices"'
    frames = _check_switch_frames(given, len(texts), length, fps, temporal_factor, where, name)
    starts = [0, *frames]
    prompts = [
        Prompt(t, latent_frame_to_seconds(f, fps, temporal_factor), f)
        for t, f in zip(texts, starts)
    ]
    labels = [f"prompts[{i}]" for i in range(len(texts))]
    _check_prompts(prompts, length, fps, temporal_factor, where, labels)
    return Timeline(tuple(prompts), length, fps, temporal_factor)


def _jsonl_line(path: Path, text: str, line: int) -> tuple[dict[str, Any], str]:
    """The JSON object of video `line` (0-based, blank lines skipped) and its 'file:line'."""
    videos = [(n, raw) for n, raw in enumerate(text.splitlines(), start=1) if raw.strip()]
    if not videos:
        raise TimelineError(
            f'{path}: no videos (the file is empty); add a line {{"prompts": [...]}}'
        )
    if isinstance(line, bool) or not isinstance(line, int) or not 0 <= line < len(videos):
        raise TimelineError(
            f"{path}: line {short_repr(line)} is out of range: the file has {len(videos)} "
            f"video(s), choose --line 0..{len(videos) - 1}"
        )
    number, raw = videos[line]
    where = f"{path}:{number}"
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise TimelineError(
            f"{where}: malformed JSON at column {error.colno} ({error.msg}); fix the line"
        ) from None
    except (ValueError, RecursionError) as error:  # e.g. an integer of > 4300 digits
        raise TimelineError(
            f"{where}: malformed JSON ({type(error).__name__}); fix the line"
        ) from None
    if not isinstance(data, dict):
        raise TimelineError(
            f'{where}: each line must be a JSON object {{"prompts": [...]}}, got '
            f"{type(data).__name__}"
        )
    return data, where


def _check_switch_frames(
    frames: Any, num_prompts: int, length: float, fps: int, temporal_factor: int, where: str,
    name: str,
) -> list[int]:
    """Switch points in latent frames (`name` says where they came from): one per switch,
    strictly increasing, in (0, T)."""
    needed = num_prompts - 1
    if frames is None:
        if needed:
            raise TimelineError(
                f'{where}: {num_prompts} prompts but no switch points; add "switch_frame_indices":'
                f" [{needed} latent frame(s)] to the line or pass --switch-frames"
            )
        return []
    if not isinstance(frames, (list, tuple)) or any(
        isinstance(f, bool) or not isinstance(f, int) for f in frames
    ):
        raise TimelineError(
            f"{where}: {name} must be a list of latent frame integers, got {short_repr(frames)}"
        )
    if len(frames) != needed:
        raise TimelineError(
            f"{where}: {name} has {len(frames)} switch frame(s) but {num_prompts} prompts need "
            f"{needed} (one per switch, not counting the start)"
        )
    num_frames = latent_frames_for(length, fps, temporal_factor)
    previous = 0
    for i, frame in enumerate(frames):
        label = f"{where}: {name}[{i}]={short_repr(frame)}"
        if frame <= previous:
            rule = f"> the previous ({previous})" if i else "> 0 (the first prompt starts at 0)"
            raise TimelineError(f"{label} must be {rule}; switch frames increase strictly")
        if frame >= num_frames:
            raise TimelineError(
                f"{label} is at or after the end: the {length:g} s video has latent frames "
                f"0..{num_frames - 1}; lower it or raise --seconds"
            )
        previous = frame
    return list(frames)
