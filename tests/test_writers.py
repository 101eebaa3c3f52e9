"""Writers: MP4 roundtrip and kill-safety, PNG, manifest, and write_stream's closing guarantee."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import imageio.v3 as iio
import numpy as np
import pytest

from longvid.errors import OutputError
from longvid.frames import Frame
from longvid.writers import ManifestWriter, Mp4Writer, PngWriter, write_stream

H, W = 48, 64
FPS = 8


def flat_frame(index: int, value: int, prompt_index: int = 0, prompt: str = "a") -> Frame:
    image = np.full((H, W, 3), value, dtype=np.uint8)
    return Frame(index=index, image=image, prompt_index=prompt_index, prompt=prompt)


def decode(path: Path) -> list[np.ndarray]:
    """Decode every frame PyAV can read, stopping at the first error (a truncated fragment)."""
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError:
        pass
    return frames


# --- MP4 ---------------------------------------------------------------------------------


def test_mp4_roundtrip_count_and_colours(tmp_path):
    path = tmp_path / "v.mp4"
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (128, 128, 128)] * 5
    with Mp4Writer(path, FPS, keyframe_interval=4) as writer:
        for i, colour in enumerate(colours):
            image = np.empty((H, W, 3), np.uint8)
            image[:] = colour
            writer.write(Frame(index=i, image=image))
    decoded = decode(path)
    assert len(decoded) == len(colours)
    for image, colour in zip(decoded, colours):
        assert image.shape == (H, W, 3)
        # yuv420p + CRF quantisation: a flat colour comes back within a few levels.
        assert np.abs(image.astype(int) - np.array(colour)).max() <= 6
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == FPS


def test_mp4_odd_size_is_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    with Mp4Writer(path, FPS) as writer:
        for i in range(3):
            writer.write(Frame(index=i, image=np.full((H - 1, W - 1, 3), 90, np.uint8)))
        assert writer.size == (W, H)
    decoded = decode(path)
    assert len(decoded) == 3 and decoded[0].shape == (H, W, 3)


def test_mp4_rejects_size_change_and_write_after_close(tmp_path):
    writer = Mp4Writer(tmp_path / "v.mp4", FPS)
    writer.write(flat_frame(0, 10))
    with pytest.raises(ValueError, match="one size"):
        writer.write(Frame(index=1, image=np.zeros((H, W + 2, 3), np.uint8)))
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(flat_frame(2, 10))


def test_mp4_without_frames_leaves_no_file(tmp_path):
    path = tmp_path / "empty.mp4"
    Mp4Writer(path, FPS).close()
    assert not path.exists()


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from longvid.frames import Frame
    from longvid.writers import Mp4Writer

    writer = Mp4Writer(sys.argv[1], 8, keyframe_interval=4)
    for i in range(10_000):
        writer.write(Frame(index=i, image=np.full((48, 64, 3), (i * 7) % 256, np.uint8)))
        print(i + 1, writer.frames_on_disk, flush=True)
        time.sleep(0.02)
    """
)


def test_mp4_survives_sigkill_up_to_last_fragment(tmp_path):
    path = tmp_path / "killed.mp4"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    on_disk = written = 0
    try:
        deadline = time.monotonic() + 60
        while written < 14 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            written, on_disk = map(int, line.split())
    finally:
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert written >= 14, f"writer process produced too little output: {stderr}"
    # Keyframes at 0, 4, 8, 12: after 14 frames the fragments [0, 12) are finished.
    assert on_disk >= 12
    decoded = decode(path)
    assert len(decoded) >= on_disk > 0
    # The frames that survived are the right ones, in order.
    expected = [(i * 7) % 256 for i in range(len(decoded))]
    assert np.abs(np.array([int(f[H // 2, W // 2, 0]) for f in decoded]) - expected).max() <= 6


# --- PNG ---------------------------------------------------------------------------------


def test_png_count_and_contents(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(5)]
    out = tmp_path / "frames"  # created by the writer
    with PngWriter(out) as writer:
        for i, image in enumerate(images):
            writer.write(Frame(index=i, image=image))
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"frame_{i:06d}.png" for i in range(5)]
    for f, image in zip(files, images):
        np.testing.assert_array_equal(iio.imread(f), image)  # PNG is lossless


# --- manifest ----------------------------------------------------------------------------


def test_manifest_records_prompt_switches_and_completes(tmp_path):
    path = tmp_path / "run.json"
    calls = []

    def timings() -> dict:
        calls.append(1)
        return {"denoise": 1.5 * len(calls)}

    info = {"seed": 7, "config": {"fps": FPS}, "output": tmp_path / "v.mp4"}
    writer = ManifestWriter(path, info, timings, every_frames=4, every_seconds=3600)
    at_open = json.loads(path.read_text())  # exists from the start
    assert at_open["frames"] == 0 and at_open["complete"] is False
    assert at_open["status"] == "running"
    assert at_open["info"]["output"] == str(tmp_path / "v.mp4")

    # prompts: 0 for frames 0-4, 1 for 5-9, 0 again for 10-11
    plan = [0] * 5 + [1] * 5 + [0] * 2
    for i, p in enumerate(plan):
        writer.write(flat_frame(i, 0, prompt_index=p, prompt=f"prompt {p}"))
        if i == 3:
            mid = json.loads(path.read_text())
            assert mid["frames"] == 4 and mid["complete"] is False
    writer.close()

    final = json.loads(path.read_text())
    assert final["frames"] == len(plan)
    assert final["complete"] is True and final["status"] == "finished"
    assert final["prompts"] == [
        {"prompt_index": 0, "prompt": "prompt 0", "first_frame": 0},
        {"prompt_index": 1, "prompt": "prompt 1", "first_frame": 5},
    ]
    assert [(s["frame"], s["prompt_index"]) for s in final["switches"]] == [(0, 0), (5, 1), (10, 0)]
    assert final["timings"] == {"denoise": 1.5 * len(calls)}
    assert final["info"]["seed"] == 7
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp left over


# --- write_stream ------------------------------------------------------------------------


class ListWriter:
    def __init__(self) -> None:
        self.frames: list[int] = []
        self.closed_with: list[BaseException | None] = []

    def write(self, frame: Frame) -> None:
        self.frames.append(frame.index)

    def close(self, error: BaseException | None = None) -> None:
        self.closed_with.append(error)


def test_write_stream_returns_count_and_closes():
    a, b = ListWriter(), ListWriter()
    assert write_stream((flat_frame(i, 0) for i in range(3)), [a, b]) == 3
    assert a.frames == b.frames == [0, 1, 2]
    assert a.closed_with == b.closed_with == [None]


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_write_stream_closes_every_writer_when_the_iterator_raises(tmp_path, exc_type):
    def frames():
        for i in range(6):
            yield flat_frame(i, 100)
        raise exc_type("generator broke")

    spy = ListWriter()
    manifest = ManifestWriter(tmp_path / "run.json", {})
    writers = [Mp4Writer(tmp_path / "v.mp4", FPS), spy, manifest]
    with pytest.raises(exc_type, match="generator broke"):
        write_stream(frames(), writers)
    assert spy.frames == list(range(6))
    assert len(spy.closed_with) == 1 and isinstance(spy.closed_with[0], exc_type)
    assert len(decode(tmp_path / "v.mp4")) == 6  # the frames already made are kept
    final = json.loads((tmp_path / "run.json").read_text())
    assert final["complete"] is True and final["frames"] == 6
    if exc_type is KeyboardInterrupt:
        assert final["status"] == "interrupted"
    else:
        assert final["status"] == "failed" and "generator broke" in final["reason"]


def test_write_stream_closes_others_when_a_writer_raises():
    class Broken(ListWriter):
        def write(self, frame: Frame) -> None:
            raise OSError("disk full")

    released = []

    def frames():
        try:
            for i in range(3):
                yield flat_frame(i, 0)
        finally:
            released.append(True)  # e.g. the pipeline freeing its KV cache

    ok, broken = ListWriter(), Broken()
    with pytest.raises(OSError, match="disk full"):
        write_stream(frames(), [ok, broken])
    assert ok.frames == [0] and len(ok.closed_with) == 1
    assert isinstance(ok.closed_with[0], OSError)
    assert released == [True]  # the generator was closed, not left suspended


def test_a_writer_failing_to_finish_is_the_end_the_later_writers_record(tmp_path):
    """The video's last write fails as it closes (disk full) after a normal end: the manifest
    closed after it says "failed", not "finished", so the run can still be resumed."""
    class FailsToFinish(ListWriter):
        def close(self, error: BaseException | None = None) -> None:
            super().close(error)
            raise OutputError("cannot write the video v.mp4 (No space left on device)")

    video, spy = FailsToFinish(), ListWriter()
    manifest = ManifestWriter(tmp_path / "run.json", {})
    with pytest.raises(OutputError, match="No space left"):
        write_stream((flat_frame(i, 0) for i in range(3)), [video, spy, manifest])
    assert video.closed_with == [None] and isinstance(spy.closed_with[0], OutputError)
    final = json.loads((tmp_path / "run.json").read_text())
    assert final["status"] == "failed" and "No space left" in final["reason"]


# --- output path errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [lambda p: Mp4Writer(p / "v.mp4", FPS), lambda p: PngWriter(p / "frames"),
             lambda p: ManifestWriter(p / "run.json", {})],
    ids=["mp4", "png", "manifest"],
)
def test_missing_directory_is_an_output_error(tmp_path, make):
    missing = tmp_path / "nope"
    with pytest.raises(OutputError, match=r"nope.*does not exist.*mkdir -p"):
        make(missing)


def test_parent_that_is_a_file_is_an_output_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        Mp4Writer(tmp_path / "file" / "v.mp4", FPS)


def test_unwritable_directory_is_an_output_error(tmp_path, monkeypatch):
    # Tests may run as root, for whom every directory is writable: fake the permission check.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    for make in (lambda: Mp4Writer(tmp_path / "v.mp4", FPS), lambda: PngWriter(tmp_path),
                 lambda: ManifestWriter(tmp_path / "run.json", {})):
        with pytest.raises(OutputError, match=rf"{tmp_path}.*not writable.*permissions"):
            make()
