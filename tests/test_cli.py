"""The `longvid` CLI driven through its runner, on a tiny random-init config (32x32, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_config
from typer.testing import CliRunner

from cli.app import app
from longvid.config import config_to_dict
from longvid.pipeline import StreamPipeline

runner = CliRunner()
FPS, SIZE = 16, 32  # tiny_config's video
# Switch at latent frame 3 = the start of block 1 (3-frame blocks). Its first pixel frame is
# 4 * (3 - 1) + 1 = 9 (Wan VAE layout: latent 0 is pixel 0 alone, then 4 pixels per latent),
# i.e. 9 / 16 s.
SWITCH_LATENT, SWITCH_PIXEL = 3, 9


@pytest.fixture(autouse=True)
def user_paths(tmp_path, monkeypatch):
    """Home, caches and the working directory point into tmp_path; output is CI-plain."""
    home = tmp_path / "home"
    home.mkdir()
    for var in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(var, str(home))
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("LONGVID_CONFIG_DIR", raising=False)  # `models` lists the repo's configs
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()  # the tiny config pins 1 thread, process-wide
    yield
    torch.set_num_threads(threads)


def write_config(path: Path, **weights) -> Path:
    """The engine tests' tiny config as a user would write it: hash text encoder, latent
    preview decoder, no weight files (random init) unless `weights` names some. One thread:
    on a busy shared CPU, more threads make a model this small many times slower."""
    data = config_to_dict(tiny_config(weights=weights, runtime={"threads": 1}))
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def tiny(tmp_path) -> str:
    return str(write_config(tmp_path / "tiny.yaml"))


def generate(*args: str):
    return runner.invoke(app, ["generate", *args])


def decode(path: Path) -> np.ndarray:
    """Every frame of an MP4 as (N, H, W, 3) uint8."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def assert_user_error(result, *fragments: str) -> None:
    """Exit 2, exactly one `error:` line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


# --- generate ----------------------------------------------------------------------------------


def test_prompt_writes_video_and_manifest(tiny, tmp_path):
    result = generate("a red ball", "--seconds", "1", "--config", tiny, "--out", "ball.mp4")
    assert result.exit_code == 0, result.output

    video = decode(tmp_path / "ball.mp4")
    assert video.shape == (1 * FPS, SIZE, SIZE, 3)
    manifest = json.loads((tmp_path / "ball.json").read_text())  # default: beside the video
    assert manifest["status"] == "finished" and manifest["complete"]
    assert manifest["frames"] == FPS
    assert manifest["prompts"] == [{"prompt_index": 0, "prompt": "a red ball", "first_frame": 0}]
    assert [s["frame"] for s in manifest["switches"]] == [0]
    info = manifest["info"]
    assert info["seed"] == 0 and info["config"]["name"] == "tiny"
    assert info["timeline"]["prompts"][0]["text"] == "a red ball"
    assert info["outputs"]["video"] == str(tmp_path / "ball.mp4")
    assert {"longvid", "torch"} <= set(info["versions"]) and info["device"] == "cpu"
    assert manifest["timings"]["frames"] == FPS and "write_s" in manifest["timings"]

    assert f"wrote {FPS} frames" in result.stdout
    # CI: no live bar redraws, only a few plain lines
    assert "\r" not in result.output and len(result.output.splitlines()) < 10


def test_yaml_timeline_switch_lands_in_manifest(tiny, tmp_path):
    at = SWITCH_PIXEL / FPS
    (tmp_path / "tl.yaml").write_text(
        f"seconds: 2\nprompts:\n  - at: 0\n    text: a red circle\n  - at: {at}\n    text: a blue square\n"
    )
    result = generate("--timeline", "tl.yaml", "--config", tiny, "--out", "tl.mp4")
    assert result.exit_code == 0, result.output

    assert len(decode(tmp_path / "tl.mp4")) == 2 * FPS
    manifest = json.loads((tmp_path / "tl.json").read_text())
    assert [(s["frame"], s["prompt"]) for s in manifest["switches"]] == [
        (0, "a red circle"), (SWITCH_PIXEL, "a blue square")]
    assert manifest["info"]["timeline"]["prompts"][1]["start_frame"] == SWITCH_LATENT


def test_jsonl_timeline_line_and_switch_frames(tiny, tmp_path):
    (tmp_path / "tl.jsonl").write_text(
        '{"prompts": ["unused"]}\n'
        '{"prompts": ["a cat", "a dog"], "switch_frame_indices": [6], "seconds": 1}\n'
    )
    result = generate("--timeline", "tl.jsonl", "--line", "1", "--switch-frames", str(SWITCH_LATENT),
                      "--config", tiny, "--out", "j.mp4")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "j.json").read_text())
    assert [(s["frame"], s["prompt"]) for s in manifest["switches"]] == [
        (0, "a cat"), (SWITCH_PIXEL, "a dog")]


def test_png_dir_and_manifest_path(tiny, tmp_path):
    result = generate("a ball", "--seconds", "0.5", "--config", tiny, "--out", "v.mp4",
                      "--png-dir", "frames", "--manifest", "run.json")
    assert result.exit_code == 0, result.output
    pngs = sorted((tmp_path / "frames").glob("*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:06d}.png" for i in range(FPS // 2)]
    assert iio.imread(pngs[0]).shape == (SIZE, SIZE, 3)
    assert (tmp_path / "run.json").exists() and not (tmp_path / "v.json").exists()


def test_set_override_changes_frame_size(tiny, tmp_path):
    result = generate("a ball", "--seconds", "0.5", "--config", tiny, "--out", "tall.mp4",
                      "--set", "video.height=64")
    assert result.exit_code == 0, result.output
    assert decode(tmp_path / "tall.mp4").shape[1:] == (64, SIZE, 3)


def test_existing_output_refused_without_overwrite(tiny, tmp_path):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"precious")
    result = generate("a ball", "--seconds", "0.5", "--config", tiny, "--out", str(out))
    assert_user_error(result, str(out), "--overwrite")
    assert out.read_bytes() == b"precious"

    result = generate("a ball", "--seconds", "0.5", "--config", tiny, "--out", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert len(decode(out)) == FPS // 2


def test_missing_weights_error_and_random_weights(tmp_path):
    missing = tmp_path / "nowhere" / "transformer.safetensors"
    config = str(write_config(tmp_path / "weighted.yaml", transformer=str(missing)))

    result = generate("a ball", "--seconds", "0.5", "--config", config, "--out", "w.mp4")
    assert_user_error(result, str(missing), "--random-weights")
    assert not (tmp_path / "w.mp4").exists()

    result = generate("a ball", "--seconds", "0.5", "--config", config, "--out", "w.mp4",
                      "--random-weights")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "random weights" in result.stderr
    assert len(decode(tmp_path / "w.mp4")) == FPS // 2
    assert json.loads((tmp_path / "w.json").read_text())["info"]["weights"]["transformer"] == "missing"


BAD_TIMELINES = {
    "past_end": "seconds: 2\nprompts:\n  - at: 0\n    text: a\n  - at: 5\n    text: b\n",
    "malformed": "seconds: 2\nprompts: [\n",
    "no_prompts": "seconds: 2\n",
}


@pytest.mark.parametrize("name", BAD_TIMELINES)
def test_bad_timeline_is_one_line(tiny, tmp_path, name):
    (tmp_path / "bad.yaml").write_text(BAD_TIMELINES[name])
    result = generate("--timeline", "bad.yaml", "--config", tiny, "--out", "bad.mp4")
    assert_user_error(result, "bad.yaml")
    assert not (tmp_path / "bad.mp4").exists()


@pytest.mark.parametrize("args, fragment", [
    (["a", "--config", "no-such-model"], "unknown config 'no-such-model'"),
    (["a", "--set", "video.heigth=64"], "video.heigth"),
    (["a", "--line", "1"], "--timeline"),
    (["--seconds", "1"], "give a prompt"),
    (["a", "--out", "missing-dir/v.mp4"], "missing-dir"),
])
def test_user_errors(tiny, args, fragment):
    config = [] if "--config" in args else ["--config", tiny]
    assert_user_error(generate(*args, *config), fragment)


def test_ctrl_c_keeps_frames_and_exits_130(tiny, tmp_path, monkeypatch):
    real_stream = StreamPipeline.stream

    def interrupted_stream(self, timeline, seed=0, **kwargs):
        for frame in real_stream(self, timeline, seed, **kwargs):
            if frame.index == 5:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(StreamPipeline, "stream", interrupted_stream)
    result = generate("a ball", "--seconds", "1", "--config", tiny, "--out", "cut.mp4")
    assert result.exit_code == 130, result.output
    assert "interrupted: kept 5 frame(s)" in result.stderr
    assert len(decode(tmp_path / "cut.mp4")) == 5
    manifest = json.loads((tmp_path / "cut.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["frames"] == 5


# --- models, version, help ---------------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 140])
def test_models_lists_configs(monkeypatch, columns):
    """A table on a wide terminal; on a narrow one each description goes under its config's
    line instead of being squeezed into a column a few letters wide."""
    monkeypatch.setenv("COLUMNS", str(columns))
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line.rstrip()) <= columns for line in lines)
    assert "longvid-shapes" in result.stdout and "128x128" in result.stdout
    if columns < 100:
        row = next(i for i, line in enumerate(lines) if line.startswith("longvid-shapes-labels *"))
        assert "weights present" in lines[row] and "built-in shapes-world model" in lines[row + 1]
    else:
        assert "description" in lines[1] and "built-in shapes-world" in result.stdout


def test_commands_that_generate_nothing_start_without_diffusers():
    """`longvid --help`, `eval`, `models` do not import diffusers (seconds at start-up): the package
    face loads the streaming API on first use, and `generate` still finds it."""
    import subprocess
    import sys

    code = ("import sys, cli.app, longvid; assert 'diffusers' not in sys.modules, 'diffusers imported'; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert callable(longvid.stream) and 'diffusers' in sys.modules")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("problem", ["output exists", "no timeline file", "bad --set"])
def test_generate_reports_bad_input_before_it_loads_torch(tmp_path, problem):
    """A mistake in `generate`'s input is named at once (well under a second), not after the
    seconds torch, diffusers and the model take to load."""
    import subprocess
    import sys

    args = {"output exists": ["a red ball", "--out", str(tmp_path / "v.mp4")],
            "no timeline file": ["--timeline", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "w.mp4")],
            "bad --set": ["a red ball", "--set", "cache.window_frames=-1", "--out", str(tmp_path / "w.mp4")]}[problem]
    (tmp_path / "v.mp4").write_bytes(b"")
    code = ("import sys; from cli import main; sys.argv = ['longvid', 'generate', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nsys.exit(code)")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("longvid ")


@pytest.mark.parametrize("args, expected", [
    ([], "generate"),
    (["generate"], "--random-weights"),
    (["models"], "description"),
])
def test_help(args, expected):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0 and expected in result.stdout


# --- eval ----------------------------------------------------------------------------------------


def world_video(tmp_path: Path) -> tuple[Path, Path]:
    """A 6 s ground-truth shapes-world clip with one switch at 3 s, as an MP4 written by
    longvid's own writer, and the YAML timeline that describes it."""
    from longvid.frames import Frame
    from longvid.world import SceneSpec, make_clip
    from longvid.writers import Mp4Writer

    first = SceneSpec(shape="circle", colour="red", background="black", motion="right")
    second = SceneSpec(shape="circle", colour="yellow", background="black", motion="right")
    frames, _ = make_clip([(0, first), (48, second)], 96, 0, 128)
    video = tmp_path / "world.mp4"
    writer = Mp4Writer(video, FPS)
    for i, image in enumerate(frames):
        writer.write(Frame(index=i, image=image, prompt_index=int(i >= 48), prompt="", block=0))
    writer.close()
    timeline = tmp_path / "world.yaml"
    timeline.write_text(yaml.safe_dump({"seconds": 6, "prompts": [
        {"at": 0, "text": "a red ball moving right on a black background"},
        {"at": 3, "text": "a yellow disc drifting to the right over black"},
    ]}), encoding="utf-8")
    return video, timeline


def test_eval_scores_a_world_clip_near_perfect(tmp_path):
    video, timeline = world_video(tmp_path)
    result = runner.invoke(app, ["eval", str(video), "--timeline", str(timeline), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["frames"] == 96 and report["fps"] == FPS
    assert [s["frame"] for s in report["switches"]] == [48]
    for attribute in ("colour", "shape", "background", "motion"):
        assert report["adherence"][attribute] >= 0.95, (attribute, report["adherence"])
    table = runner.invoke(app, ["eval", str(video), "--timeline", str(timeline)])
    assert table.exit_code == 0 and "adherence" in table.stdout


def test_eval_catches_the_wrong_prompt(tmp_path):
    video, timeline = world_video(tmp_path)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"prompts": [{"at": 0, "text": "a blue square on gray"}]}),
                     encoding="utf-8")
    report = json.loads(runner.invoke(app, ["eval", str(video), "--timeline", str(wrong), "--json"]).stdout)
    assert report["adherence"]["colour"] < 0.1 and report["adherence"]["background"] < 0.1


@pytest.mark.parametrize("case, fragment", [
    ("missing-video", "video not found"),
    ("not-a-video", "cannot read video"),
    ("missing-timeline", "timeline file not found"),
    ("switch-past-end", "after the end of the 6 s video"),
])
def test_eval_bad_input_is_one_line(tmp_path, case, fragment):
    video, timeline = world_video(tmp_path)
    if case == "missing-video":
        video = tmp_path / "nope.mp4"
    elif case == "not-a-video":
        video = tmp_path / "text.mp4"
        video.write_text("not a video")
    elif case == "missing-timeline":
        timeline = tmp_path / "nope.yaml"
    else:
        timeline.write_text(yaml.safe_dump({"prompts": [{"at": 0, "text": "a red ball"},
                                                        {"at": 9, "text": "a blue ball"}]}))
    assert_user_error(runner.invoke(app, ["eval", str(video), "--timeline", str(timeline)]), fragment)
