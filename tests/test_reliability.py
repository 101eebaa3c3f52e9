"""Never lose a frame: real `longvid generate` processes stopped by SIGINT, SIGTERM and SIGKILL,
the video decoded with PyAV and counted, and stopped runs resumed to the frames of a run that was
never stopped (per-frame hashes in the manifest, and the PNGs pixel for pixel).

Each process runs the CLI on a tiny config (32x32, 2 layers, saved weights, so every process
builds the same model). To stop a run at an exact frame, the process runs through HARNESS, which
sends the signal to itself right after that frame was written; one test signals from outside.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_config

from longvid.config import config_to_dict
from longvid.loading import save_safetensors
from longvid.model import build_transformer

REPO = Path(__file__).resolve().parents[1]
SECONDS = 20  # 320 frames, 27 blocks: 9 frames in the first block, then 12 per block
FRAMES = 16 * SECONDS
TIMEOUT = 120

HARNESS = """
import os, signal, sys
from longvid import writers
plan = [(int(at), getattr(signal, name)) for at, name in
        (item.split(":") for item in os.environ.get("LONGVID_TEST_SIGNALS", "").split(",") if item)]
real = writers.ManifestWriter.write
def write(self, frame):
    real(self, frame)
    for at, sig in plan:
        if frame.index == at:
            os.kill(os.getpid(), sig)
writers.ManifestWriter.write = write
from cli.app import main
sys.argv = ["longvid", *sys.argv[1:]]
main()
"""


def block_end(frame: int) -> int:
    """Frames in the video once the block holding `frame` is finished."""
    return 9 + 12 * max(0, -(-(frame + 1 - 9) // 12))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A tiny config with saved random weights."""
    d = tmp_path_factory.mktemp("rel")
    cfg = tiny_config(runtime={"threads": 1})
    torch.manual_seed(0)
    save_safetensors(build_transformer(cfg.model), d / "tiny.safetensors")
    cfg.weights.transformer = str(d / "tiny.safetensors")
    (d / "tiny.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    return d


def run(workdir: Path, *args: str, signals: str = "", wait: bool = True):
    env = dict(os.environ, PYTHONPATH=str(REPO), CI="true", OMP_NUM_THREADS="1",
               LONGVID_TEST_SIGNALS=signals, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-c", HARNESS, *args], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def generate(workdir: Path, name: str, *extra: str, signals: str = ""):
    return run(workdir, "generate", "a red ball bouncing", "--seconds", str(SECONDS), "--seed", "3",
               "--config", "tiny.yaml", "--out", f"{name}.mp4", "--png-dir", f"{name}_png",
               "--checkpoint-every", "2", *extra, signals=signals)


def resume(workdir: Path, name: str, signals: str = ""):
    return run(workdir, "generate", "--resume", f"{name}.json", signals=signals)


def decoded(path: Path) -> int:
    """Frames PyAV decodes, stopping at the first damaged packet (as a player does)."""
    n = 0
    with av.open(str(path)) as container:
        try:
            for _ in container.decode(video=0):
                n += 1
        except av.error.FFmpegError:
            pass
    return n


def manifest(workdir: Path, name: str) -> dict:
    return json.loads((workdir / f"{name}.json").read_text())


def pngs(workdir: Path, name: str) -> np.ndarray:
    return np.stack([iio.imread(p) for p in sorted((workdir / f"{name}_png").glob("frame_*.png"))])


@pytest.fixture(scope="module")
def reference(workdir) -> dict:
    """The run that was never stopped."""
    code, _, err = generate(workdir, "ref")
    assert code == 0, err
    m = manifest(workdir, "ref")
    assert m["status"] == "finished" and len(m["frame_hashes"]) == FRAMES
    assert decoded(workdir / "ref.mp4") == FRAMES
    assert not (workdir / "ref.state.safetensors").exists()  # finished: nothing to resume
    return m


def assert_same_as_reference(workdir, name, reference):
    m = manifest(workdir, name)
    assert m["status"] == "finished" and m["frames"] == FRAMES
    assert m["frame_hashes"] == reference["frame_hashes"]
    assert m["switches"] == reference["switches"] and m["prompts"] == reference["prompts"]
    assert decoded(workdir / f"{name}.mp4") == FRAMES
    np.testing.assert_array_equal(pngs(workdir, name), pngs(workdir, "ref"))
    assert not (workdir / f"{name}.state.safetensors").exists()


def test_sigint_finishes_the_block_then_resume_equals_uninterrupted(workdir, reference):
    at = 30
    code, _, err = generate(workdir, "int", signals=f"{at}:SIGINT")
    assert code == 130, err
    kept = block_end(at)  # 33: the block holding frame 30 was finished
    assert "stopping after the current block" in err
    assert f"kept {kept} frame(s)" in err and "--resume" in err and "Traceback" not in err
    m = manifest(workdir, "int")
    assert (m["status"], m["reason"], m["frames"]) == ("interrupted", "SIGINT", kept)
    assert m["resume"]["frame"] == kept
    assert decoded(workdir / "int.mp4") == kept
    assert m["frame_hashes"] == reference["frame_hashes"][:kept]

    code, _, err = resume(workdir, "int")
    assert code == 0, err
    assert_same_as_reference(workdir, "int", reference)
    assert manifest(workdir, "int")["resumed_at"] == [kept]


def test_overlapped_decode_sigint_then_resume_equals_uninterrupted(workdir, reference):
    """runtime.overlap (decode one block behind, in a second thread): Ctrl-C keeps the same
    frames as without it, and the resumed run (overlapped too: the manifest's config) ends with
    the frames of the unstopped, non-overlapped reference."""
    at = 30
    code, _, err = generate(workdir, "ovl", "--set", "runtime.overlap=true", signals=f"{at}:SIGINT")
    assert code == 130, err
    kept = block_end(at)
    m = manifest(workdir, "ovl")
    assert (m["status"], m["frames"], m["resume"]["frame"]) == ("interrupted", kept, kept)
    assert decoded(workdir / "ovl.mp4") == kept
    assert m["frame_hashes"] == reference["frame_hashes"][:kept]
    code, _, err = resume(workdir, "ovl")
    assert code == 0, err
    assert_same_as_reference(workdir, "ovl", reference)


def test_sigterm_then_sigkill_then_resume(workdir, reference):
    """SIGTERM stops cleanly (exit 143); the resumed run is SIGKILLed: the video still plays
    up to its last fragment and a second resume, from the last checkpoint, completes it."""
    code, _, err = generate(workdir, "term", signals="100:SIGTERM")
    assert code == 143, err
    kept = block_end(100)
    assert manifest(workdir, "term")["frames"] == decoded(workdir / "term.mp4") == kept

    code, _, err = resume(workdir, "term", signals="250:SIGKILL")
    assert code == -signal.SIGKILL
    m = manifest(workdir, "term")
    assert m["status"] == "running"  # the killed process never closed it
    last_checkpoint = m["resume"]["frame"]
    assert kept < last_checkpoint <= 250
    frames = decoded(workdir / "term.mp4")
    # every frame of a finished fragment survives: at most one fragment (1 s) is lost
    assert 251 - 16 <= frames <= 251 and frames >= last_checkpoint

    code, _, err = resume(workdir, "term")
    assert code == 0, err
    assert_same_as_reference(workdir, "term", reference)


def test_second_sigint_stops_at_once(workdir, reference):
    code, _, err = generate(workdir, "twice", signals="40:SIGINT,40:SIGINT")
    assert code == 130, err
    assert "again: stopping now" in err and "Traceback" not in err
    m = manifest(workdir, "twice")
    # the block was not finished: the frames up to 40 are kept, and the last checkpoint
    # (every 2 blocks: frame 21) is the resume point
    assert m["status"] == "interrupted" and m["frames"] == 41 == decoded(workdir / "twice.mp4")
    assert m["resume"]["frame"] == 21
    assert m["frame_hashes"] == reference["frame_hashes"][:41]


def test_sigkill_before_the_first_checkpoint(workdir, monkeypatch):
    code, _, _ = generate(workdir, "early", signals="20:SIGKILL")
    assert code == -signal.SIGKILL
    assert 21 - 16 <= decoded(workdir / "early.mp4") <= 21  # at most one fragment (1 s) lost
    from typer.testing import CliRunner

    from cli.app import app

    monkeypatch.chdir(workdir)
    result = CliRunner().invoke(app, ["generate", "--resume", "early.json"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1 and "saved no resume state" in result.stderr


@pytest.mark.parametrize("sig, moment", [(signal.SIGINT, "first frames"),
                                         (signal.SIGTERM, "after a checkpoint")],
                         ids=["SIGINT-first-frames", "SIGTERM-after-a-checkpoint"])
def test_external_signal_on_a_long_run(workdir, sig, moment):
    """A signal from outside, at whatever moment the run is at: the block is finished and
    every frame made is in the video."""
    name = f"long-{sig.name}"
    proc = run(workdir, "generate", "a ball", "--seconds", "3600", "--config", "tiny.yaml",
               "--out", f"{name}.mp4", wait=False)
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            path = workdir / f"{name}.json"
            if moment == "first frames" and path.exists() and json.loads(path.read_text())["frames"] > 0:
                break
            if moment == "after a checkpoint" and (workdir / f"{name}.state.safetensors").exists():
                break
            time.sleep(0.1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    m = manifest(workdir, name)
    assert (m["status"], m["reason"]) == ("interrupted", sig.name)
    assert m["frames"] > 0 and (m["frames"] - 9) % 12 == 0  # whole blocks
    assert decoded(workdir / f"{name}.mp4") == m["frames"] == m["resume"]["frame"]


def test_same_seed_same_frames_across_processes(workdir, reference, monkeypatch):
    """Point 4: the reference ran in its own process; the same seed, config and timeline in this
    process give the same frame hashes, and another seed does not."""
    from typer.testing import CliRunner

    from cli.app import app

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("CI", "true")
    for seed, name in (("3", "again"), ("4", "other")):
        result = CliRunner().invoke(app, ["generate", "a red ball bouncing", "--seconds", str(SECONDS),
                                          "--seed", seed, "--config", "tiny.yaml", "--out", f"{name}.mp4"])
        assert result.exit_code == 0, result.output
    assert manifest(workdir, "again")["frame_hashes"] == reference["frame_hashes"]
    other = manifest(workdir, "other")["frame_hashes"]
    assert sum(a == b for a, b in zip(other, reference["frame_hashes"])) == 0


def test_resumed_run_stopped_at_once_keeps_its_resume_point(workdir, reference, monkeypatch):
    """In this process: SIGINT at frame 30; the resumed run is stopped at once (two SIGINTs) on
    its first new frame; the resume point is still there and a third run completes the video."""
    from typer.testing import CliRunner

    from cli.app import app
    from longvid import writers

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("CI", "true")
    real = writers.ManifestWriter.write
    plan: list[int] = []

    def write(self, frame):
        real(self, frame)
        for at in plan:
            if frame.index == at:
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(writers.ManifestWriter, "write", write)
    runner = CliRunner()
    plan[:] = [30]
    result = runner.invoke(app, ["generate", "a red ball bouncing", "--seconds", str(SECONDS), "--seed", "3",
                                 "--config", "tiny.yaml", "--out", "again.mp4", "--overwrite"])
    assert result.exit_code == 130, result.output
    plan[:] = [33, 33]
    result = runner.invoke(app, ["generate", "--resume", "again.json"])
    assert result.exit_code == 130, result.output
    m = manifest(workdir, "again")
    assert m["frames"] == 34 == decoded(workdir / "again.mp4") and m["resume"]["frame"] == 33
    assert "--resume" in result.stderr
    plan[:] = []
    assert runner.invoke(app, ["generate", "--resume", "again.json"]).exit_code == 0
    m = manifest(workdir, "again")
    assert m["status"] == "finished" and m["frame_hashes"] == reference["frame_hashes"]
    assert m["resumed_at"] == [33]  # the frames after 33 were all made by the last run


# --- a signal while the command is still starting ---------------------------------------------

STARTUP_HARNESS = """
import builtins, os, signal, sys
sig, swallowed = getattr(signal, sys.argv[1]), sys.argv[2] == "swallowed"
real = builtins.__import__

class Doomed:
    def __del__(self):  # the signal lands while Python runs a destructor, which swallows it
        os.kill(os.getpid(), sig)
        for _ in range(100000):
            pass

def hook(name, *args, **kwargs):
    if name == "typer":  # while the app imports (torch comes later, for the commands that generate)
        builtins.__import__ = real
        if swallowed:
            Doomed()
        else:
            os.kill(os.getpid(), sig)
    return real(name, *args, **kwargs)

builtins.__import__ = hook
from cli import main
sys.argv = ["longvid", "--help"]
main()
"""


@pytest.mark.parametrize("sig, how", [("SIGINT", "raised"), ("SIGINT", "swallowed"), ("SIGTERM", "raised")])
def test_a_signal_while_starting_stops_with_one_line(sig, how):
    """Ctrl-C while the app is importing (seconds with torch): one line and 128 + signal, no
    traceback, and not lost when it lands in a destructor (the run would otherwise go on)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), CI="true")
    proc = subprocess.run([sys.executable, "-c", STARTUP_HARNESS, sig, how], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 128 + getattr(signal, sig), (proc.returncode, proc.stderr)
    assert proc.stderr.strip() == f"{sig} while starting: stopped before anything was written"
    assert proc.stdout == ""  # the app never ran (--help would print its usage)
