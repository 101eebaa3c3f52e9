"""Bad input, row by row (issue 6, point 3): every case gives one `error:` line naming the
problem and the fix, exit status 2, no traceback, and no frame already made is lost.

Runs `longvid generate` in-process (typer's runner) on the tiny config with saved weights.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config
from test_cli import decode, user_paths  # noqa: F401 - user_paths: autouse fixture
from typer.testing import CliRunner

from cli.app import app
from longvid import writers
from longvid.config import config_to_dict
from longvid.loading import save_safetensors
from longvid.model import build_transformer

runner = CliRunner()
FPS = 16


@pytest.fixture
def weights(tmp_path) -> Path:
    cfg = tiny_config()
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_safetensors(build_transformer(cfg.model), path)
    return path


def config_file(path: Path, transformer: Path | str | None, **sections) -> str:
    cfg = tiny_config(runtime={"threads": 1}, weights={"transformer": str(transformer) if transformer else None},
                      **sections)
    path.write_text(yaml.safe_dump(config_to_dict(cfg)), encoding="utf-8")
    return str(path)


@pytest.fixture
def tiny(tmp_path, weights) -> str:
    return config_file(tmp_path / "tiny.yaml", weights)


def generate(*args: str):
    return runner.invoke(app, ["generate", *args])


def one_line_error(result, *fragments: str) -> str:
    """Exit 2, no traceback, and the last stderr line is one `error:` line with `fragments`."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in line, line
    return line


# --- timelines ---------------------------------------------------------------------------------

TIMELINES = {
    "malformed YAML": ("t.yaml", "seconds: 2\nprompts: [\n", ["malformed YAML", "fix the syntax"]),
    "malformed JSON": ("t.jsonl", '{"prompts": ["a", "b"\n', ["malformed JSON", "fix the line"]),
    "switches out of order": (
        "t.yaml", "seconds: 4\nprompts:\n  - {at: 0, text: a}\n  - {at: 2, text: b}\n  - {at: 1, text: c}\n",
        ["comes before", "list prompts in time order"]),
    "negative time": ("t.yaml", "seconds: 4\nprompts:\n  - {at: 0, text: a}\n  - {at: -1, text: b}\n",
                      ["negative", "times count from 0"]),
    "beyond the end": ("t.yaml", "seconds: 2\nprompts:\n  - {at: 0, text: a}\n  - {at: 5, text: b}\n",
                       ["after the end", "move it earlier or make the video longer"]),
    "empty prompt": ("t.yaml", "seconds: 2\nprompts:\n  - {at: 0, text: '  '}\n",
                     ["prompt text is empty", "write what the video should show"]),
    "absurdly long prompt": ("t.yaml", f"seconds: 2\nprompts:\n  - {{at: 0, text: {'x' * 5000}}}\n",
                             ["5000 characters", "shorten it"]),
    "not UTF-8": ("t.yaml", b"seconds: 2\nprompts:\n  - {at: 0, text: caf\xe9}\n",
                  ["not UTF-8", "save the file as UTF-8"]),
}


@pytest.mark.parametrize("row", TIMELINES)
def test_bad_timeline(tiny, tmp_path, row):
    name, content, fragments = TIMELINES[row]
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    one_line_error(generate("--timeline", name, "--config", tiny, "--out", "v.mp4"), name, *fragments)
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.parametrize("prompt, fragment", [("   ", "prompt text is empty"), ("y" * 3000, "shorten it")])
def test_bad_prompt_argument(tiny, tmp_path, prompt, fragment):
    one_line_error(generate(prompt, "--config", tiny, "--out", "v.mp4"), fragment)


# --- configs -----------------------------------------------------------------------------------

CONFIGS = {
    "unknown key": (["--set", "video.heigth=64"], ["video.heigth", "did you mean 'video.height'"]),
    "unknown key in the file": ("file-key", ["unknown key 'video.colour'", "valid keys"]),
    "wrong type": (["--set", "video.height=tall"], ["video.height must be an integer", "fix the value"]),
    "wrong type in the file": ("file-type", ["cache.sink_frames must be an integer"]),
    "resolution not divisible": (["--set", "video.height=100"],
                                 ["video.height=100 must be divisible by 16", "nearest valid: 96"]),
    "seconds zero": (["--seconds", "0"], ["must be > 0 seconds"]),
    "seconds under one frame": (["--seconds", "1e-9"], ["under one frame at 16 fps", "give at least 0.0625 s"]),
    "seconds negative": (["--seconds", "-5"], ["negative"]),
    "seconds absurd": (["--seconds", "1e9"], ["over 86400 s", "give the length in seconds"]),
    "seconds not finite": (["--seconds", "inf"], ["finite"]),
    "unknown config name": (["--config", "longvid-shapez"], ["unknown config 'longvid-shapez'",
                                                             "did you mean 'longvid-shapes'"]),
}


@pytest.mark.parametrize("row", CONFIGS)
def test_bad_config(tiny, tmp_path, row):
    args, fragments = CONFIGS[row]
    if args in ("file-key", "file-type"):
        data = yaml.safe_load(Path(tiny).read_text())
        if args == "file-key":
            data["video"]["colour"] = "red"
        else:
            data["cache"]["sink_frames"] = "three"
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(data))
        args = ["--config", str(path)]
    config = [] if "--config" in args else ["--config", tiny]
    one_line_error(generate("a ball", *args, *config, "--out", "v.mp4"), *fragments)
    assert not (tmp_path / "v.mp4").exists()


# --- weights -----------------------------------------------------------------------------------


class RunsCode:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # would create the marker file


@pytest.mark.parametrize("row", ["missing", "truncated", "corrupt", "pickle that runs code"])
def test_bad_weights(weights, tmp_path, row):
    marker = tmp_path / "code-ran"
    if row == "missing":
        path, fragments = tmp_path / "nowhere.safetensors", ["weight file not found", "--random-weights"]
    elif row == "truncated":
        path = tmp_path / "cut.safetensors"
        path.write_bytes(weights.read_bytes()[:5000])
        fragments = ["cannot read weight file", "truncated, corrupt", "download or convert it again"]
    elif row == "corrupt":
        path = tmp_path / "junk.safetensors"
        path.write_bytes(os.urandom(4096))
        fragments = ["cannot read weight file", "download or convert it again"]
    else:
        path = tmp_path / "evil.pt"
        with open(path, "wb") as f:
            pickle.dump({"weight": RunsCode(marker)}, f, protocol=2)  # as torch.save writes
        fragments = ["refusing to open", "(`io.open`)", "never executes", ".safetensors"]
    config = config_file(tmp_path / "w.yaml", path)
    one_line_error(generate("a ball", "--seconds", "1", "--config", config, "--out", "v.mp4"),
                   str(path), *fragments)
    assert not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "v.mp4").exists()


# --- output ------------------------------------------------------------------------------------


def test_output_directory_not_writable(tiny, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)  # enough for a normal user; root ignores modes, so also:
    real_access = os.access
    monkeypatch.setattr(writers.os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    one_line_error(generate("a ball", "--seconds", "1", "--config", tiny, "--out", "locked/v.mp4"),
                   "not writable", "fix its permissions or choose another output path")


def test_output_missing_directory(tiny):
    one_line_error(generate("a ball", "--config", tiny, "--out", "nowhere/v.mp4"),
                   "does not exist", "mkdir -p")


@pytest.mark.parametrize("name", ["v.avi", "v.gif", "v.webm", "v"])
def test_output_must_be_an_mp4(tiny, tmp_path, name):
    """Only MP4 is written: another name would hold an MP4 under a misleading extension."""
    one_line_error(generate("a ball", "--seconds", "1", "--config", tiny, "--out", name),
                   f"--out {name}", "must end in .mp4", "convert it afterwards")
    assert not (tmp_path / name).exists() and not list(tmp_path.glob("v*.json"))


def test_existing_output_needs_overwrite(tiny, tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"precious")
    one_line_error(generate("a ball", "--seconds", "1", "--config", tiny, "--out", "v.mp4"),
                   "already exists", "--overwrite")
    assert (tmp_path / "v.mp4").read_bytes() == b"precious"


class FillingFile(io.FileIO):
    """A file on a disk that fills up after `room` bytes: writes past it fail with ENOSPC."""

    room = 0

    def write(self, data):
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_disk_full_mid_run_keeps_playable_frames_then_resume(tiny, tmp_path, monkeypatch):
    """The video's disk fills up mid-run: one-line error, exit 2, the frames of finished
    fragments play, the resume point is kept; with space again, --resume completes the video
    with the frames of a run that never failed."""
    assert generate("a ball", "--seconds", "10", "--config", tiny, "--out", "ref.mp4",
                    "--checkpoint-every", "2").exit_code == 0
    reference = json.loads((tmp_path / "ref.json").read_text())

    real_open = writers._open_for_writing
    FillingFile.room = (tmp_path / "ref.mp4").stat().st_size // 2

    def open_on_small_disk(path, what):
        if path.suffix == ".mp4":
            real_open(path, what).close()
            return FillingFile(path, "wb")
        return real_open(path, what)

    monkeypatch.setattr(writers, "_open_for_writing", open_on_small_disk)
    result = generate("a ball", "--seconds", "10", "--config", tiny, "--out", "full.mp4",
                      "--checkpoint-every", "2")
    line = one_line_error(result, "full.mp4", "No space left on device", "free space",
                          "--resume")
    manifest = json.loads((tmp_path / "full.json").read_text())
    assert manifest["status"] == "failed" and "No space left" in manifest["reason"]
    playable = len(decode(tmp_path / "full.mp4"))
    assert 0 < manifest["resume"]["frame"] <= playable < 10 * FPS, line
    assert f"kept {playable} frame(s)" in line
    assert manifest["frame_hashes"][:playable] == reference["frame_hashes"][:playable]

    monkeypatch.setattr(writers, "_open_for_writing", real_open)  # space again
    result = runner.invoke(app, ["generate", "--resume", "full.json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "full.json").read_text())
    assert manifest["status"] == "finished" and manifest["frame_hashes"] == reference["frame_hashes"]
    assert len(decode(tmp_path / "full.mp4")) == 10 * FPS


def test_manifest_disk_full_is_one_line(tiny, tmp_path, monkeypatch):
    """The disk fills up while the manifest is rewritten: same one-line error."""
    real = writers._atomic_write_text
    calls = {"n": 0}

    def failing(path, text):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, text)

    monkeypatch.setattr(writers, "_atomic_write_text", failing)
    result = generate("a ball", "--seconds", "10", "--config", tiny, "--out", "m.mp4")
    one_line_error(result, "manifest", "No space left on device")
    assert len(decode(tmp_path / "m.mp4")) > 0


# --- resume ------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ["missing manifest", "not a manifest", "finished run", "clashing option"])
def test_bad_resume(tiny, tmp_path, row):
    args = []
    if row == "missing manifest":
        name, fragments = "nope.json", ["not found"]
    elif row == "not a manifest":
        (tmp_path / "x.json").write_text("[1, 2]")
        name, fragments = "x.json", ["not a longvid run manifest"]
    else:
        assert generate("a ball", "--seconds", "1", "--config", tiny, "--out", "done.mp4").exit_code == 0
        name = "done.json"
        if row == "finished run":
            fragments = ["already finished"]
        else:
            args, fragments = ["--seed", "4"], ["drop --seed"]
    one_line_error(runner.invoke(app, ["generate", "--resume", name, *args]), *fragments)


# --- property: whatever the timeline file holds, the CLI never shows a traceback --------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import cli.app as cli_app  # noqa: E402


class Parsed(Exception):
    """Raised instead of loading the model: the timeline was accepted."""


TIMELINE_TEXT = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(
                     st.sampled_from(["seconds", "prompts", "at", "text", "switch_frame_indices", "x"]),
                     c, max_size=3), max_leaves=10).map(lambda d: yaml.safe_dump(d).encode()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=TIMELINE_TEXT, suffix=st.sampled_from([".yaml", ".jsonl", ".yml"]))
def test_random_timeline_files_never_crash_the_cli(tiny, tmp_path, monkeypatch, content, suffix):
    def parsed(*args, **kwargs):
        raise Parsed

    monkeypatch.setattr(cli_app, "_load", parsed)
    path = tmp_path / f"random{suffix}"
    path.write_bytes(content)
    result = generate("--timeline", str(path), "--config", tiny, "--out", "r.mp4", "--overwrite")
    if isinstance(result.exception, Parsed):
        return
    one_line_error(result, str(path))


def test_resume_with_changed_weights_is_refused(tiny, tmp_path, weights, monkeypatch):
    """A run stopped by SIGINT (in this process), then its weights replaced: resuming would not
    give the frames of the original run, so it is refused."""
    import signal

    real = writers.ManifestWriter.write

    def write(self, frame):
        real(self, frame)
        if frame.index == 30:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(writers.ManifestWriter, "write", write)
    result = generate("a ball", "--seconds", "10", "--config", tiny, "--out", "w.mp4")
    assert result.exit_code == 130, result.output
    monkeypatch.setattr(writers.ManifestWriter, "write", real)
    assert json.loads((tmp_path / "w.json").read_text())["resume"]["frame"] == 33

    torch.manual_seed(1)
    save_safetensors(build_transformer(tiny_config().model), weights)  # other weights, same file
    one_line_error(runner.invoke(app, ["generate", "--resume", "w.json"]),
                   "model weights changed", "without --resume")
