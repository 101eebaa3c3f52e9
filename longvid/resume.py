"""Checkpoints and resuming: a stopped run continues to the same video, frame for frame.

Saving (`Checkpointer`): every `every_blocks` blocks, and when a stop is requested, the loop's
`StreamState` is copied between two blocks together with what the manifest has recorded so far.
The copy becomes the run's resume point (a state file beside the manifest, written atomically,
and a `resume` entry in the manifest) only once the video on disk holds every frame it covers: at
a checkpoint the MP4 writer starts a new fragment, so that happens with the next frame (or when
the video is closed). Whatever kills the run, the published resume point never runs ahead of the
video.

Resuming (`read_manifest`, `load_resume_state`): the manifest gives the config, timeline, seed
and outputs; the state file the stream's state. The video keeps its first `state.frames` frames
(copied, not re-encoded) and the stream continues from there. Noise is a pure function of (seed,
frame, use) and the state holds everything else the loop carries, so the frames are those of a
run that was never stopped (the manifest's per-frame hashes show it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longvid.config import Config, config_from_dict, config_to_dict
from longvid.errors import LongvidError, OutputError, ResumeError
from longvid.frames import Frame
from longvid.timeline import Prompt, Timeline

if TYPE_CHECKING:
    from longvid.state import StreamState
# `longvid.state` (torch, a second at start-up) is imported where a state is saved or loaded, so
# the CLI reads a manifest and checks its options before it loads torch.

STATE_SUFFIX = ".state.safetensors"
DEFAULT_CHECKPOINT_EVERY = 10  # blocks (7.5 s of video with 3-latent-frame blocks at 16 fps)


def state_path_for(manifest: str | os.PathLike) -> Path:
    """Where a run's resume state lives: beside its manifest, `run.json` -> `run.state.safetensors`."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + STATE_SUFFIX)


def run_fingerprint(config: Config, timeline: Timeline, seed: int) -> str:
    """What must not change between a run and its resumption."""
    from longvid.state import fingerprint

    return fingerprint(config_to_dict(config), timeline.to_dict(), seed)


class Checkpointer:
    """A writer (see `writers.Writer`) that publishes resume points; see the module docstring.

    Place it after the Mp4Writer and before the ManifestWriter in the writer list, and pass
    `on_block` to `StreamPipeline.stream`. `stop`: a `signals.StopOnSignal` whose request is
    honoured at the end of the block (after saving the state). `resumed_at`: the frame a resumed
    run continues from (its state file stays the resume point until a newer one is published).
    """

    def __init__(self, path: str | os.PathLike, pipeline, video, manifest, meta: dict[str, Any],
                 every_blocks: int = DEFAULT_CHECKPOINT_EVERY, stop=None,
                 resumed_at: int | None = None) -> None:
        if every_blocks < 0:
            raise ValueError(f"every_blocks must be >= 0, got {every_blocks}")
        self.path = Path(path)
        self.pipeline = pipeline
        self.video = video
        self.manifest = manifest
        self.meta = dict(meta)
        self.every_blocks = every_blocks
        self.stop = stop
        self.published: int | None = None  # frame of the last published resume point
        if resumed_at is not None:  # a resumed run: its state file is the resume point so far
            self.published = resumed_at
            self.manifest.resume = {"state": str(self.path), "frame": resumed_at}
        self._pending: tuple[StreamState, dict] | None = None
        self._closed = False

    def on_block(self, state: StreamState) -> None:
        """Between two blocks: capture the state if a checkpoint is due or a stop requested."""
        stopping = self.stop is not None and self.stop.requested
        if stopping or (self.every_blocks and state.blocks % self.every_blocks == 0):
            self._pending = (self.pipeline.snapshot(state), self.manifest.record())
            self.video.cut()
        if stopping:
            self.stop.check()

    def write(self, frame: Frame) -> None:
        self._publish_if_durable()

    def close(self, error: BaseException | None = None) -> None:
        """After the video is closed: publish the last capture if the video holds its frames.
        A finished run needs no resume point: the state file is removed."""
        if self._closed:
            return
        self._closed = True
        if error is None:
            self._pending = None
            self.path.unlink(missing_ok=True)
            self.manifest.resume = None
            return
        self._publish_if_durable()

    def _publish_if_durable(self) -> None:
        if self._pending is None or self.video.frames_on_disk < self._pending[0].frames:
            return
        from longvid.state import save_state

        state, record = self._pending
        self._pending = None
        try:
            save_state(self.path, state, {**self.meta, "manifest": record})
        except OSError as exc:
            raise OutputError(f"cannot save the resume state {self.path} ({exc.strerror or exc}); "
                              "free space or choose another disk") from exc
        self.published = state.frames
        self.manifest.resume = {"state": str(self.path), "frame": state.frames}
        self.manifest.flush()


# --- resuming ----------------------------------------------------------------------------------


@dataclass
class ResumePoint:
    """What a manifest says about a run to resume."""

    manifest_path: Path
    manifest: dict[str, Any]
    config: Config
    timeline: Timeline
    seed: int
    video: Path
    png_dir: Path | None
    random_weights: bool
    state_path: Path


def read_manifest(path: str | os.PathLike) -> ResumePoint:
    """Read a run's manifest for `--resume`. Raises ResumeError naming the problem and the fix."""
    path = Path(path).resolve()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResumeError(f"manifest {path} not found; pass the .json written beside the video") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise ResumeError(f"cannot read manifest {path} ({reason}); pass the .json longvid wrote "
                          "beside the video") from None
    if not isinstance(data, dict) or "longvid_manifest" not in data or not isinstance(data.get("info"), dict):
        raise ResumeError(f"{path} is not a longvid run manifest; pass the .json written beside the video")
    if data.get("status") == "finished":
        raise ResumeError(f"the run of {path} already finished; nothing to resume")
    info = data["info"]
    try:
        outputs = info["outputs"]
        config = config_from_dict(info["config"], source=f"{path}: info.config")
        tl = info["timeline"]
        timeline = Timeline(
            tuple(Prompt(p["text"], float(p["start_seconds"]), int(p["start_frame"])) for p in tl["prompts"]),
            float(tl["seconds"]), int(tl["fps"]), int(tl["temporal_factor"]),
        )
        seed = int(info["seed"])
        video = Path(outputs["video"])
        png_dir = Path(outputs["png"]) if outputs.get("png") else None
    except LongvidError as error:
        raise ResumeError(f"{path} cannot be resumed: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise ResumeError(f"{path} is damaged (bad or missing {error}); start the run again "
                          "without --resume") from None
    state_path = state_path_for(path)
    if data.get("resume") is None and not state_path.is_file():
        raise ResumeError(f"the run of {path} saved no resume state (it stopped before its "
                          "first checkpoint); start it again without --resume")
    return ResumePoint(path, data, config, timeline, seed, video, png_dir,
                       bool(info.get("random_weights_allowed", False)), state_path)


def load_resume_state(point: ResumePoint, pipeline) -> tuple[StreamState, dict[str, Any]]:
    """The saved stream state of `point`, checked against the run and the loaded weights ->
    (state ready for `pipeline.stream`, the manifest record at that frame)."""
    from longvid.state import load_state, weights_fingerprint

    state, meta = load_state(point.state_path, pipeline.new_cache())
    if meta.get("run") != run_fingerprint(point.config, point.timeline, point.seed):
        raise ResumeError(f"{point.state_path} belongs to another run than {point.manifest_path} "
                          "(config, timeline or seed differ); start the run again without --resume")
    if meta.get("weights") != weights_fingerprint(pipeline.model):
        raise ResumeError(f"the model weights changed since {point.manifest_path} was started, so "
                          "the rest of the video would not match; restore them or start again "
                          "without --resume")
    record = meta.get("manifest")
    if not isinstance(record, dict) or int(record.get("frames", -1)) != state.frames:
        raise ResumeError(f"{point.state_path} is damaged (its frame record does not match); "
                          "start the run again without --resume")
    return state, record


def checkpoint_meta(config: Config, timeline: Timeline, seed: int, pipeline) -> dict[str, Any]:
    """What a state file records to check a resumption against."""
    from longvid.state import weights_fingerprint

    return {"run": run_fingerprint(config, timeline, seed), "weights": weights_fingerprint(pipeline.model)}
