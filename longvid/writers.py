"""Writers: consumers of the frame stream (MP4, PNG, manifest).

Every writer reads the same `Frame` iterator through `write_stream`, which closes all of them
however the stream ends (normal end, exception, Ctrl-C), so frames already produced are kept.
A writer knows nothing of how the frames were made.

Kill-safety, writer by writer:
- `Mp4Writer` writes fragmented MP4: a fragment is cut at every keyframe and flushed to the OS
  (and fsynced) at once, so a file cut off at any moment plays up to its last complete fragment.
  Readers should stop at the first decode error: only the fragment being written can be partial.
  `cut()` ends a fragment at the next frame (checkpoints use it); `resume_frames=N` continues an
  existing video after its first N frames (copied as they are, not re-encoded).
- `PngWriter` writes each image to a temp file and renames it, so every `frame_*.png` is whole.
- `ManifestWriter` rewrites its JSON atomically (temp file + `os.replace`) at open, periodically
  and at close.
- A write that fails (disk full, I/O error) raises a one-line `OutputError` naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import av
import imageio.v3 as iio
import numpy as np

from longvid.errors import OutputError
from longvid.frames import Frame

# H.264 defaults: CRF 23 is x264's own default quality; "veryfast" keeps encoding far cheaper
# than generation on CPU; yuv420p is the pixel format every player decodes.
DEFAULT_CRF = 23
DEFAULT_PRESET = "veryfast"
PIXEL_FORMAT = "yuv420p"
# Fragmented MP4: an empty `moov` up front, then one `moof`+`mdat` fragment per keyframe. With
# `default_base_moof` each fragment addresses its own data, so a truncated file stays readable.
MP4_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
# Largest fps denominator we keep (covers NTSC rates such as 30000/1001).
MAX_FPS_DENOMINATOR = 1001

PNG_NAME = "frame_{index:06d}.png"
# zlib level 1: about twice as fast as the default 6, and noise-like generated frames barely
# compress better at higher levels.
PNG_COMPRESS_LEVEL = 1

MANIFEST_FORMAT_VERSION = 1
DEFAULT_MANIFEST_EVERY_FRAMES = 64
DEFAULT_MANIFEST_EVERY_SECONDS = 2.0


class Writer(Protocol):
    """A consumer of the frame stream."""

    def write(self, frame: Frame) -> None:
        """Consume one frame."""
        ...

    def close(self, error: BaseException | None = None) -> None:
        """Finish the output. `error` is what ended the stream early (None: normal end).
        Must be idempotent."""
        ...


def write_stream(frames: Iterable[Frame], writers: Sequence[Writer]) -> int:
    """Drive every writer from one frame iterator; return the number of frames consumed.

    Every writer is closed whatever happens (normal end, exception in the producer or in a
    writer, KeyboardInterrupt), so the frames already produced are kept; the original
    exception is then re-raised. The iterator is closed too if it is a generator. A writer
    whose close fails passes that failure to the writers closed after it (in list order).
    """
    count = 0
    error: BaseException | None = None
    iterator = iter(frames)
    try:
        for frame in iterator:
            for writer in writers:
                writer.write(frame)
            count += 1
    except BaseException as exc:  # noqa: BLE001 - re-raised below, after closing the writers
        error = exc
    close_errors: list[BaseException] = []
    if error is not None and callable(getattr(iterator, "close", None)):
        try:
            iterator.close()  # let the generator release what it holds
        except BaseException as exc:  # noqa: BLE001 - even a 2nd Ctrl-C: close the writers first
            close_errors.append(exc)
    # A writer that fails to finish (the video's last write hits a full disk) ends the run for
    # the writers after it too: the manifest must not say "finished", and the resume state must
    # be kept.
    failure = error
    for writer in writers:
        try:
            writer.close(failure)
        except BaseException as exc:  # noqa: BLE001 - even a 2nd Ctrl-C: close the rest first
            close_errors.append(exc)
            failure = failure if failure is not None else exc
    if error is not None:
        for exc in close_errors:
            _add_note(error, f"while closing after this error, another failed: {exc!r}")
        raise error
    if close_errors:
        raise close_errors[0]
    return count


class _ClosingContext:
    """`with writer:` closes the writer, passing it the exception that ended the block."""

    def close(self, error: BaseException | None = None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exc)


class Mp4Writer(_ClosingContext):
    """H.264 in fragmented MP4 that survives the process being killed.

    The video size is taken from the first frame. H.264 in yuv420p needs even width and height:
    an odd size is padded by one row / column repeating the edge pixels (`size` reports the
    encoded size); every later frame must match the first frame's size.

    Durability: with `keyframe_interval=K` a fragment is cut every K frames; as soon as the
    next keyframe is encoded the finished fragment is written, flushed, and (with
    `fsync=True`) synced to disk. `frames_on_disk` counts the frames in finished fragments.
    `low_latency=True` uses x264's `zerolatency` tune (no B-frames, no lookahead) so a frame
    leaves the encoder as soon as it is written; otherwise up to a few dozen frames more can be
    lost when the process is killed.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction,
        *,
        crf: int = DEFAULT_CRF,
        preset: str = DEFAULT_PRESET,
        keyframe_interval: int | None = None,
        low_latency: bool = True,
        fsync: bool = True,
        resume_frames: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(MAX_FPS_DENOMINATOR)
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        # Default: one keyframe (one fragment) per second of video.
        if keyframe_interval is None:
            keyframe_interval = max(1, round(self.fps))
        self.keyframe_interval = keyframe_interval
        if keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be >= 1, got {keyframe_interval}")
        self._codec_options = {"crf": str(crf), "preset": preset}
        if low_latency:
            self._codec_options["tune"] = "zerolatency"
        self._fsync = fsync
        self._cut_next = False
        self._failed = False  # a write failed (e.g. disk full): only finished fragments count
        self._resume_count = resume_frames or 0
        # Resuming: the kept frames are copied into a temp file that replaces `path` once they
        # are on disk in it (until then the old video stays whole).
        self._replace: Path | None = None
        target = self.path
        if resume_frames is not None:
            self._replace = self.path.with_name(f".{self.path.name}.resume.tmp")
            target = self._replace

        self._file: BinaryIO = _open_for_writing(target, "MP4 video")
        # Container (format) options, not codec options: passing them as `options=` would also
        # hand them to every stream's codec, where they are unused.
        try:
            self._container = av.open(
                self._file,
                "w",
                format="mp4",
                container_options={"movflags": MP4_MOVFLAGS, "flush_packets": "1"},
            )
        except BaseException:
            self._file.close()
            raise
        self._stream: av.VideoStream | None = None
        self._shape: tuple[int, int] | None = None  # (H, W) of the input frames
        self._frames_in = 0
        self._packets_muxed = 0
        self.frames_on_disk = 0
        self._closed = False
        if resume_frames is not None:
            try:
                self._copy_frames(resume_frames)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._container.close()
                self._file.close()
                self._replace.unlink(missing_ok=True)
                raise

    @property
    def size(self) -> tuple[int, int] | None:
        """Encoded (width, height), known after the first frame."""
        if self._stream is None:
            return None
        return self._stream.width, self._stream.height

    def write(self, frame: Frame) -> None:
        """Encode one frame; (H, W, 3) uint8 RGB, same size as the first frame."""
        _check_open(self._closed, self.path)
        image = _check_image(frame)
        if self._stream is None:
            self._open_stream(image.shape[0], image.shape[1])
        elif self._shape is None:  # resumed: the first new frame must fit the copied ones
            if (image.shape[0] + image.shape[0] % 2, image.shape[1] + image.shape[1] % 2) != (
                    self._stream.height, self._stream.width):
                raise ValueError(f"frame {frame.index} is {image.shape[1]}x{image.shape[0]} but "
                                 f"the resumed video is {self._stream.width}x{self._stream.height}")
            self._shape = image.shape[:2]
        elif image.shape[:2] != self._shape:
            raise ValueError(
                f"frame {frame.index} is {image.shape[1]}x{image.shape[0]} but the video is "
                f"{self._shape[1]}x{self._shape[0]}: every frame of one video must have one size"
            )
        image = _pad_to_even(image)
        video_frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        video_frame.pts = self._frames_in  # in units of 1/fps (the codec time base)
        if self._cut_next:
            video_frame.pict_type = av.video.frame.PictureType.I  # a keyframe: a new fragment
            self._cut_next = False
        self._frames_in += 1
        with self._disk_errors():
            self._mux(self._stream.encode(video_frame))

    def cut(self) -> None:
        """Start a new fragment at the next frame (it is encoded as a keyframe), so that every
        frame written so far reaches the disk as soon as that frame is encoded."""
        self._cut_next = True

    def close(self, error: BaseException | None = None) -> None:
        """Flush the encoder and finish the file (also after an error, to keep the frames).

        A video that never received a frame is removed rather than left as an empty file.
        After an error (e.g. a full disk) closing does what it can and raises nothing more: the
        fragments already written stay playable.
        """
        if self._closed:
            return
        self._closed = True
        quiet = contextlib.suppress(OSError, OutputError) if error is not None else contextlib.nullcontext()
        try:
            with quiet, self._disk_errors():
                if self._stream is not None:
                    self._mux(self._stream.encode(None))
                self._container.close()
        finally:
            with quiet, self._disk_errors():
                try:
                    self._file.flush()
                    if self._fsync:
                        os.fsync(self._file.fileno())
                finally:
                    self._file.close()
            if self._stream is None and self._replace is None:
                self.path.unlink(missing_ok=True)
        if not self._failed:
            self.frames_on_disk = self._packets_muxed
        self._finish_replace()

    def _copy_frames(self, count: int) -> None:
        """Resume: copy the first `count` frames of the existing video, without re-encoding."""
        from av.bitstream import BitStreamFilterContext

        if not self.path.is_file():
            raise OutputError(f"cannot resume the video {self.path}: the file is gone; start "
                              "the run again without --resume")
        copied = 0
        try:
            with av.open(str(self.path)) as source:
                video = source.streams.video[0]
                self._open_stream(video.codec_context.height, video.codec_context.width)
                # MP4 stores H.264 length-prefixed; our encoder's stream takes Annex B
                annexb = BitStreamFilterContext("h264_mp4toannexb", in_stream=video)
                for packet in _packets_until_error(source, video):
                    for out in annexb.filter(packet):
                        if copied < count:
                            out.stream = self._stream
                            self._mux([out])
                            copied += 1
                    if copied >= count:
                        break
        except av.error.FFmpegError as exc:
            raise OutputError(f"cannot resume the video {self.path}: it is not a readable MP4 "
                              f"({exc}); start the run again without --resume") from None
        if copied < count:
            raise OutputError(f"cannot resume the video {self.path}: it holds {copied} frames but "
                              f"the saved state is at frame {count}; start the run again without "
                              "--resume")
        self._frames_in = copied
        self._shape = None  # set by the first new frame, which must match the copied ones

    def _finish_replace(self) -> None:
        """Resume: once the kept frames are on disk in the new file, it becomes the video."""
        if self._replace is not None and self.frames_on_disk >= self._resume_count:
            os.replace(self._replace, self.path)
            self._replace = None

    @contextlib.contextmanager
    def _disk_errors(self) -> Iterator[None]:
        """An OSError while writing (disk full, I/O error) -> OutputError naming the video."""
        try:
            yield
        except OSError as exc:
            self._failed = True
            raise OutputError(
                f"cannot write the video {self.path} ({exc.strerror or exc}): its finished "
                "fragments are kept and play; free space or choose another disk, then resume"
            ) from exc

    def _open_stream(self, height: int, width: int) -> None:
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width = width + width % 2
        stream.height = height + height % 2
        stream.pix_fmt = PIXEL_FORMAT
        stream.codec_context.gop_size = self.keyframe_interval
        stream.options = dict(self._codec_options)  # libx264 private options
        self._stream = stream
        self._shape = (height, width)

    def _mux(self, packets: list[av.Packet]) -> None:
        """Mux packets; a keyframe packet makes the muxer write out the previous fragment."""
        finished = None  # frames in the fragments this call completes
        for packet in packets:
            if packet.is_keyframe and self._packets_muxed > 0:
                finished = self._packets_muxed
            self._container.mux(packet)
            self._packets_muxed += 1
        # `flush_packets` pushed the bytes into our file object; push them on to the OS.
        self._file.flush()
        if finished is not None:
            if self._fsync:
                os.fsync(self._file.fileno())
            self.frames_on_disk = finished
            self._finish_replace()


class PngWriter(_ClosingContext):
    """One PNG per frame: `directory/frame_000000.png`, named by `frame.index`.

    The directory is created if its parent exists. Each image is written to a temp file and
    renamed, so a killed run never leaves a half-written PNG. Existing files are overwritten.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            _require_writable_dir(self.directory.parent, f"PNG directory {self.directory}")
            try:
                self.directory.mkdir()
            except OSError as exc:
                raise OutputError(
                    f"cannot create the PNG directory {self.directory} ({exc.strerror}): "
                    "choose another output directory"
                ) from exc
        _require_writable_dir(self.directory, "PNG frames")
        self.count = 0
        self._closed = False

    def write(self, frame: Frame) -> None:
        """Write `frame.image` (H, W, 3) uint8 RGB as one PNG."""
        _check_open(self._closed, self.directory)
        image = _check_image(frame)
        target = self.directory / PNG_NAME.format(index=frame.index)
        tmp = target.with_name(f".{target.name}.tmp")
        with disk_errors(f"the PNG {target}"):
            try:
                iio.imwrite(tmp, image, extension=".png", compress_level=PNG_COMPRESS_LEVEL)
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        self.count += 1

    def close(self, error: BaseException | None = None) -> None:
        """Nothing is buffered: every frame is already complete on disk."""
        self._closed = True


class ManifestWriter(_ClosingContext):
    """A JSON record of the run beside the video, valid at every moment.

    Holds the static `info` (config, seed, timeline, output paths, versions: anything JSON-able;
    paths, numpy values and dataclasses are converted) plus what it observes in the stream: the
    frame count, the first frame at which each prompt took effect, every prompt switch, and the
    per-stage timings returned by `timings()` each time the file is written.

    It also records a hash of every frame (`frame_hashes`, see `frame_hash`: equal frames, equal
    hashes, so runs can be compared although the MP4 is lossy) and, when a `resume.Checkpointer`
    sets it, where the run can be resumed from (`resume`).

    The file is rewritten atomically at open, every `every_frames` frames or `every_seconds`
    seconds (whichever comes first), and at close. At close `complete` becomes true and
    `status` says how the stream ended: "finished", "interrupted" (KeyboardInterrupt) or
    "failed" (with `reason`). While the run is going on, `status` is "running".
    """

    def __init__(
        self,
        path: str | os.PathLike,
        info: dict[str, Any],
        timings: Callable[[], dict] | None = None,
        *,
        every_frames: int = DEFAULT_MANIFEST_EVERY_FRAMES,
        every_seconds: float = DEFAULT_MANIFEST_EVERY_SECONDS,
    ) -> None:
        self.path = Path(path)
        _require_writable_dir(self.path.parent, f"manifest {self.path}")
        if every_frames < 1:
            raise ValueError(f"every_frames must be >= 1, got {every_frames}")
        self.info = dict(info)
        self._timings = timings
        self._every_frames = every_frames
        self._every_seconds = every_seconds

        self.frames = 0
        self.prompts: list[dict[str, Any]] = []  # first effect of each prompt, in stream order
        self.switches: list[dict[str, Any]] = []  # every change of prompt (a prompt may return)
        self.frame_hashes: list[str] = []  # frame_hash of every frame, in order
        self.resume: dict[str, Any] | None = None  # where a stopped run can be resumed from
        self.resumed_at: list[int] = []  # frames at which this run was resumed
        self._seen_prompts: set[int] = set()
        self._current_prompt: int | None = None
        self._started_at = datetime.now(timezone.utc)
        self._t0 = time.monotonic()
        self._last_flush = self._t0
        self._frames_at_flush = 0
        self._status = "running"
        self._reason: str | None = None
        self._closed = False
        self.flush()

    def write(self, frame: Frame) -> None:
        """Record the frame; rewrite the file if enough frames or time have passed."""
        _check_open(self._closed, self.path)
        if frame.prompt_index != self._current_prompt:
            prompt = {"prompt_index": frame.prompt_index, "prompt": frame.prompt}
            self.switches.append({"frame": frame.index, **prompt})
            if frame.prompt_index not in self._seen_prompts:
                self._seen_prompts.add(frame.prompt_index)
                self.prompts.append({**prompt, "first_frame": frame.index})
            self._current_prompt = frame.prompt_index
        self.frame_hashes.append(frame_hash(frame.image))
        self.frames += 1
        now = time.monotonic()
        if (
            self.frames - self._frames_at_flush >= self._every_frames
            or now - self._last_flush >= self._every_seconds
        ):
            self.flush()

    def close(self, error: BaseException | None = None) -> None:
        """Write the final manifest with `complete: true` and how the stream ended."""
        if self._closed:
            return
        self._closed = True
        if error is None:
            self._status, self._reason = "finished", None
        elif isinstance(error, KeyboardInterrupt):
            self._status, self._reason = "interrupted", str(error) or "KeyboardInterrupt"
        else:
            self._status, self._reason = "failed", f"{type(error).__name__}: {error}"
        self.flush()

    def to_dict(self) -> dict[str, Any]:
        """The manifest as written to disk."""
        return {
            "longvid_manifest": MANIFEST_FORMAT_VERSION,
            "info": self.info,
            "frames": self.frames,
            "prompts": self.prompts,
            "switches": self.switches,
            "resume": self.resume,
            "resumed_at": self.resumed_at,
            "frame_hashes": self.frame_hashes,
            "timings": self._timings() if self._timings is not None else {},
            "started_at": self._started_at.isoformat(),
            "updated_at": datetime.now(timezone.utc).isoformat(),
            "elapsed_seconds": round(time.monotonic() - self._t0, 3),
            "complete": self._closed,
            "status": self._status,
            "reason": self._reason,
        }

    def record(self) -> dict[str, Any]:
        """What the manifest has observed so far (a copy), for `restore` in a resumed run."""
        return {"frames": self.frames, "prompts": [dict(p) for p in self.prompts],
                "switches": [dict(s) for s in self.switches],
                "frame_hashes": list(self.frame_hashes), "resumed_at": list(self.resumed_at)}

    def restore(self, record: dict[str, Any]) -> None:
        """Continue from a `record()` of an earlier run: its frames count as this run's."""
        self.frames = int(record["frames"])
        self.prompts = [dict(p) for p in record["prompts"]]
        self.switches = [dict(s) for s in record["switches"]]
        self.frame_hashes = list(record["frame_hashes"])
        self.resumed_at = [*record.get("resumed_at", []), self.frames]
        self._seen_prompts = {p["prompt_index"] for p in self.prompts}
        self._current_prompt = self.switches[-1]["prompt_index"] if self.switches else None
        self._frames_at_flush = self.frames
        self.flush()

    def flush(self) -> None:
        """Rewrite the manifest file atomically now."""
        text = json.dumps(self.to_dict(), indent=2, default=_jsonable)
        with disk_errors(f"the manifest {self.path}"):
            _atomic_write_text(self.path, text + "\n")
        self._last_flush = time.monotonic()
        self._frames_at_flush = self.frames


# --- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def disk_errors(what: str) -> Iterator[None]:
    """An OSError while writing `what` (disk full, I/O error) -> one-line OutputError."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {what} ({exc.strerror or exc}); the frames written so far "
                          "are kept; free space or choose another disk, then resume") from exc


def frame_hash(image: np.ndarray) -> str:
    """A short hash of a frame's uint8 pixels (and shape): equal frames, equal hashes."""
    image = np.ascontiguousarray(image)
    h = hashlib.blake2b(str(image.shape).encode(), digest_size=8)
    h.update(image.tobytes())
    return h.hexdigest()


def _require_writable_dir(directory: Path, what: str) -> None:
    """Raise OutputError unless `directory` exists and we may create files in it."""
    if not directory.exists():
        raise OutputError(
            f"cannot write the {what}: directory {directory} does not exist; "
            f"create it (mkdir -p {directory}) or choose another output path"
        )
    if not directory.is_dir():
        raise OutputError(
            f"cannot write the {what}: {directory} is not a directory; choose another output path"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write the {what}: directory {directory} is not writable; "
            "fix its permissions or choose another output path"
        )


def _packets_until_error(container, stream) -> Iterator[av.Packet]:
    """The packets of `stream` that can be read, stopping at the first damaged one (a video cut
    off by a kill ends in a partial fragment)."""
    demux = container.demux(stream)
    while True:
        try:
            packet = next(demux)
        except (StopIteration, av.error.FFmpegError):
            return
        if packet.dts is not None:  # skip the demuxer's empty flush packet
            yield packet


def _open_for_writing(path: Path, what: str) -> BinaryIO:
    _require_writable_dir(path.parent, f"{what} {path}")
    try:
        return open(path, "wb")
    except OSError as exc:
        raise OutputError(
            f"cannot write the {what} {path} ({exc.strerror}): choose another output path"
        ) from exc


def _atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_open(closed: bool, path: Path) -> None:
    if closed:
        raise RuntimeError(f"writer for {path} is closed: it cannot take more frames")


def _check_image(frame: Frame) -> np.ndarray:
    """The frame's image as a C-contiguous (H, W, 3) uint8 array."""
    image = frame.image
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"frame {frame.index}: expected a uint8 (H, W, 3) RGB image, "
            f"got {image.dtype} {tuple(image.shape)}"
        )
    return np.ascontiguousarray(image)


def _pad_to_even(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H + H%2, W + W%2, 3), repeating the last row / column."""
    pad_h, pad_w = image.shape[0] % 2, image.shape[1] % 2
    if not (pad_h or pad_w):
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _jsonable(value: Any) -> Any:
    """`json.dumps` fallback for the types a run's info commonly holds."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)


def _add_note(error: BaseException, note: str) -> None:
    if hasattr(error, "add_note"):  # Python >= 3.11
        error.add_note(note)
