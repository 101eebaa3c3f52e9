"""Prompt timelines: time parsing, time -> latent frame maths, YAML / JSONL / single sources, and
every way a timeline file can be wrong (always a one-line TimelineError)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from longvid.config import REPO_ROOT
from longvid.errors import TimelineError
from longvid.timeline import (
    MAX_PROMPT_CHARS, Prompt, Timeline, latent_frame_to_seconds, latent_frames_for, load_timeline,
    parse_time, seconds_to_latent_frame, single,
)

FPS, TF = 16, 4  # the Wan2.1 setting: 16 fps, VAE temporal factor 4
GRID = {"fps": FPS, "temporal_factor": TF}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, **kwargs) -> Timeline:
    return load_timeline(path, **{**GRID, **kwargs})


# --- parse_time --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(12, 12.0), (12.5, 12.5), (0, 0.0), ("12", 12.0), ("12.5", 12.5), (" 7 ", 7.0), (".5", 0.5),
     ("0:20", 20.0), ("1:00", 60.0), ("10:05.5", 605.5), ("1:02:03.5", 3723.5), ("90:00", 5400.0)],
)
def test_parse_time(value, seconds: float) -> None:
    assert parse_time(value) == seconds


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(-1, "negative"), ("-0:20", "negative"), ("abc", "'abc'"), ("", "clock time"),
     ("1:75", "below 60"), ("1:60:00", "below 60"), ("1:2:3:4", "clock time"), ("12s", "'12s'"),
     ("1e3", "'1e3'"), (True, "True"), (None, "None"), ([1], "[1]"), (float("inf"), "finite"),
     (float("nan"), "finite"), (10**400, "too large"), ("١٢", "clock time")],
)
def test_parse_time_errors_name_the_value(value, fragment: str) -> None:
    with pytest.raises(TimelineError, match="invalid time") as info:
        parse_time(value)
    assert fragment in str(info.value)


# --- time <-> latent frames (worked by hand for fps 16, tf 4) ---------------------------------


@pytest.mark.parametrize(
    ("seconds", "fps", "tf", "frame"),
    [
        (0, 16, 4, 0),  # pixel 0 is latent 0 alone
        (1 / 16, 16, 4, 1),  # pixel 1 -> (1 + 3) // 4 = 1
        (0.25, 16, 4, 1),  # pixel 4 -> 7 // 4 = 1
        (0.3125, 16, 4, 2),  # pixel 5 -> 8 // 4 = 2
        (20, 16, 4, 80),  # pixel 320 -> 323 // 4 = 80
        (15, 16, 4, 60),  # pixel 240 -> 243 // 4 = 60
        (20.01, 16, 4, 81),  # first pixel frame at or after 20.01 s is 321 -> 324 // 4 = 81
        (2.5, 8, 1, 20),  # temporal factor 1: latent = pixel
        (0.1 * 3, 10, 4, 1),  # 0.30000000000000004 * 10 is pixel 3, not 4: float error absorbed
    ],
)
def test_seconds_to_latent_frame(seconds: float, fps: int, tf: int, frame: int) -> None:
    assert seconds_to_latent_frame(seconds, fps, tf) == frame


@pytest.mark.parametrize(
    ("seconds", "frames"),
    [(5, 21), (60, 241), (1 / 16, 1), (0.3125, 2), (0.25, 2), (10, 41)],
    # 5 s = 80 pixel frames -> 21 latents decode to 4*21-3 = 81 >= 80; 20 would give 77.
    # 0.3125 s = 5 pixel frames -> 2 latents decode to exactly 5.
)
def test_latent_frames_for(seconds: float, frames: int) -> None:
    assert latent_frames_for(seconds, FPS, TF) == frames


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=100_000), st.integers(min_value=1, max_value=60),
    st.integers(min_value=1, max_value=8),
)
def test_latent_frames_cover_the_video_minimally(pixel_frames: int, fps: int, tf: int) -> None:
    seconds = pixel_frames / fps
    latents = latent_frames_for(seconds, fps, tf)
    assert tf * latents - (tf - 1) >= pixel_frames  # covers the video
    assert tf * (latents - 1) - (tf - 1) < pixel_frames  # one fewer would not
    assert seconds_to_latent_frame(seconds - 1 / fps, fps, tf) == latents - 1  # last frame inside


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=60),
       st.integers(min_value=1, max_value=8))
def test_latent_frame_to_seconds_inverts(frame: int, fps: int, tf: int) -> None:
    assert seconds_to_latent_frame(latent_frame_to_seconds(frame, fps, tf), fps, tf) == frame


# --- valid sources -----------------------------------------------------------------------------


def test_example_yaml() -> None:
    timeline = load(REPO_ROOT / "prompts" / "example.yaml")
    assert timeline.seconds == 60 and len(timeline.prompts) == 4
    assert [p.start_seconds for p in timeline.prompts] == [0, 15, 30, 45]
    assert [p.start_frame for p in timeline.prompts] == [0, 60, 120, 180]
    assert timeline.switch_frames == (60, 120, 180)
    assert timeline.num_latent_frames == 241


@pytest.mark.parametrize("line", [0, 1])
def test_example_jsonl(line: int) -> None:
    timeline = load(REPO_ROOT / "prompts" / "example.jsonl", seconds=30, line=line)
    assert timeline.prompts[0].start_frame == 0 and len(timeline.prompts) >= 2
    assert all(p.start_frame < timeline.num_latent_frames for p in timeline.prompts)


def test_yaml_clock_times_and_hand_worked_frames(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yml", (
        "seconds: '1:00'\nprompts:\n"
        "  - {at: 0, text: a red circle bouncing on a black background}\n"
        "  - {at: '0:20', text: a blue square bouncing on a black background}\n"
        "  - {at: 0:40.5, text: a green ball still on a gray background}\n"  # unquoted: a string
        "  - {at: 1:50, text: ignored by seconds below}\n"
    ))
    with pytest.raises(TimelineError, match="at or after the end"):
        load(path)
    timeline = load(path, seconds=120)  # --seconds overrides the file
    assert [p.start_seconds for p in timeline.prompts] == [0, 20, 40.5, 110]
    # 20 s -> pixel 320 -> latent 80; 40.5 s -> pixel 648 -> 651 // 4 = 162; 110 s -> 1760 -> 440
    assert [p.start_frame for p in timeline.prompts] == [0, 80, 162, 440]
    assert timeline.seconds == 120 and timeline.num_latent_frames == 481


def test_yaml_text_is_stripped(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "seconds: 5\nprompts:\n  - at: 0\n    text: |\n      a red ball\n")
    assert load(path).prompts[0].text == "a red ball"


def test_jsonl_switch_frames(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", (
        '\n{"prompts": ["a", "b", "c"], "switch_frame_indices": [40, 80], "seconds": 30}\n\n'
        '{"prompts": ["d", "e"]}\n'
    ))
    first = load(path)  # blank lines are skipped: line 0 is the first video
    assert [p.start_frame for p in first.prompts] == [0, 40, 80]
    # latent 40 starts at pixel 4*39+1 = 157 -> 157/16 s
    assert [p.start_seconds for p in first.prompts] == [0, 157 / 16, 317 / 16]
    overridden = load(path, switch_frames=[10, 20])  # the CLI option beats the file's key
    assert overridden.switch_frames == (10, 20)
    second = load(path, line=1, seconds=10, switch_frames=[20])
    assert [p.text for p in second.prompts] == ["d", "e"] and second.num_latent_frames == 41


def test_single() -> None:
    timeline = single("  a white square moving left on a navy background ", 5, FPS, TF)
    assert timeline.prompts == (Prompt("a white square moving left on a navy background", 0.0, 0),)
    assert timeline.num_latent_frames == 21 and timeline.switch_frames == ()


def test_prompt_index_at() -> None:
    timeline = Timeline((Prompt("a", 0, 0), Prompt("b", 5, 20), Prompt("c", 10, 40)), 15, FPS, TF)
    assert [timeline.prompt_index_at(f) for f in (0, 19, 20, 39, 40, 60, 1000)] == [0, 0, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError):
        timeline.prompt_index_at(-1)


def test_to_dict() -> None:
    data = single("a red ball", 5, FPS, TF).to_dict()
    assert data == {
        "seconds": 5.0, "fps": FPS, "temporal_factor": TF, "num_latent_frames": 21,
        "prompts": [{"text": "a red ball", "start_seconds": 0.0, "start_frame": 0}],
    }
    json.dumps(data)  # manifest-ready


def test_timeline_checks_direct_construction() -> None:
    with pytest.raises(TimelineError, match="first prompt must start at 0"):
        Timeline((Prompt("a", 1.0, 4),), 5.0, FPS, TF)
    with pytest.raises(TimelineError, match="fps"):
        single("a", 5, 0, TF)


# --- every error case ----------------------------------------------------------------------------

OK_PROMPT = "a red circle bouncing on a black background"
LONG = "x" * (MAX_PROMPT_CHARS + 1)


def yaml_timeline(*entries: str, seconds: str = "seconds: 60\n") -> str:
    return seconds + "prompts:\n" + "".join(entries)


def entry(at: str, text: str = OK_PROMPT) -> str:
    return f"  - at: {at}\n    text: {text}\n"


YAML_ERRORS = [
    ("malformed", "seconds: 60\nprompts:\n  - at: 0\n   text: [x\n", "t.yaml:4: malformed YAML"),
    ("not a mapping", "- a\n- b\n", "must be a mapping"),
    ("scalar", "just text\n", "must be a mapping"),
    ("empty file", "", "the file is empty"),
    ("missing prompts", "seconds: 60\n", "missing key 'prompts'"),
    ("unknown key", yaml_timeline(entry("0")) + "promts: []\n", "unknown key 'promts'; did you mean 'prompts'"),
    ("unknown prompt key", "seconds: 60\nprompts:\n  - at: 0\n    txt: a\n", "prompts[0] (line 3): unknown key 'txt'; did you mean 'text'"),
    ("missing at", "seconds: 60\nprompts:\n  - text: a\n", "prompts[0] (line 3): missing key 'at'"),
    ("missing text", "seconds: 60\nprompts:\n  - at: 0\n", "missing key 'text'"),
    ("entry not mapping", "seconds: 60\nprompts:\n  - a red ball\n", "prompts[0] (line 3): must be a mapping"),
    ("prompts not a list", "seconds: 60\nprompts: a red ball\n", "`prompts` must be a list"),
    ("empty prompt list", "seconds: 60\nprompts: []\n", "`prompts` is empty"),
    ("first not at 0", yaml_timeline(entry("5")), "prompts[0] (line 3) starts at 5 s; the first prompt must start at 0"),
    ("out of order", yaml_timeline(entry("0"), entry("30"), entry("20")), "prompts[2] (line 7) at 20 s comes before prompts[1] (line 5) at 30 s"),
    ("duplicate time", yaml_timeline(entry("0"), entry("20"), entry("'0:20'")), "both start at 20 s"),
    ("same latent frame", yaml_timeline(entry("0"), entry("20.1"), entry("20.2")), "prompts[2] (line 7) at 20.2 s falls in the same latent frame (81) as prompts[1] (line 5) at 20.1 s; space switches at least 0.25 s apart"),
    ("negative time", yaml_timeline(entry("0"), entry("-5")), "prompts[1] (line 5): invalid time -5: negative"),
    ("bad time", yaml_timeline(entry("0"), entry("soon")), "invalid time 'soon'"),
    ("bad clock", yaml_timeline(entry("0"), entry("'0:75'")), "below 60"),
    ("time at end", yaml_timeline(entry("0"), entry("60")), "at 60 s is at or after the end of the 60 s video"),
    ("time after end", yaml_timeline(entry("0"), entry("'1:30'")), "at 90 s is at or after the end"),
    ("past last latent", yaml_timeline(entry("0"), entry("1.06"), seconds="seconds: 1.0625\n"), "past the video's last latent frame 4"),
    ("empty text", yaml_timeline(entry("0", "''")), "prompt text is empty"),
    ("whitespace text", yaml_timeline(entry("0", "'   '")), "prompt text is empty"),
    ("null text", yaml_timeline(entry("0", "null")), "prompt text must be a string, got None"),
    ("number text", yaml_timeline(entry("0", "42")), "prompt text must be a string, got 42"),
    ("long text", yaml_timeline(entry("0", LONG)), f"over the limit of {MAX_PROMPT_CHARS}"),
    ("seconds zero", yaml_timeline(entry("0"), seconds="seconds: 0\n"), "video length must be > 0"),
    ("seconds negative", yaml_timeline(entry("0"), seconds="seconds: -3\n"), "negative"),
    ("seconds huge", yaml_timeline(entry("0"), seconds="seconds: 100000\n"), "over 86400 s (24 h)"),
    ("seconds text", yaml_timeline(entry("0"), seconds="seconds: long\n"), "invalid time 'long'"),
    ("missing seconds", yaml_timeline(entry("0"), seconds=""), "no video length; add `seconds: N` or pass --seconds"),
    ("duplicate key", "seconds: 60\nseconds: 30\nprompts: []\n", "t.yaml:2: malformed YAML (found duplicate key 'seconds')"),
    ("impossible date", yaml_timeline(entry("2024-13-45")), "malformed YAML"),
    ("date as time", yaml_timeline(entry("0"), entry("2024-01-02")), "invalid time datetime.date"),
    ("two documents", "seconds: 1\n---\nseconds: 2\n", "malformed YAML"),
]


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in YAML_ERRORS], ids=[c[0] for c in YAML_ERRORS])
def test_yaml_errors(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path / "t.yaml", text)
    with pytest.raises(TimelineError) as info:
        load(path)
    message = str(info.value)
    assert fragment in message
    assert str(path) in message and "\n" not in message


GOOD_LINE = '{"prompts": ["a", "b"], "switch_frame_indices": [40]}'
JSONL_ERRORS = [
    ("malformed", '{"prompts": ["a",]}', {}, "t.jsonl:1: malformed JSON at column"),
    ("malformed line 2", GOOD_LINE + '\n{"prompts": [}', {"line": 1}, "t.jsonl:2: malformed JSON"),
    ("not an object", '["a", "b"]', {}, "must be a JSON object"),
    ("missing prompts", '{"switch_frame_indices": [4]}', {}, 'missing key "prompts"'),
    ("unknown key", '{"prompts": ["a"], "switch_frames": [4]}', {}, "unknown key 'switch_frames'; did you mean 'switch_frame_indices'"),
    ("prompts not list", '{"prompts": "a"}', {}, '"prompts" must be a list'),
    ("empty prompt list", '{"prompts": []}', {}, '"prompts" is empty'),
    ("empty prompt", '{"prompts": ["a", " "], "switch_frame_indices": [4]}', {}, "prompts[1]: prompt text is empty"),
    ("non-string prompt", '{"prompts": [1]}', {}, "prompts[0]: prompt text must be a string"),
    ("long prompt", json.dumps({"prompts": [LONG]}), {}, f"over the limit of {MAX_PROMPT_CHARS}"),
    ("missing switches", '{"prompts": ["a", "b", "c"]}', {}, '3 prompts but no switch points; add "switch_frame_indices": [2 latent frame(s)] to the line or pass --switch-frames'),
    ("too few switches", '{"prompts": ["a", "b", "c"], "switch_frame_indices": [4]}', {}, "has 1 switch frame(s) but 3 prompts need 2"),
    ("option too many", GOOD_LINE, {"switch_frames": [4, 8]}, "--switch-frames has 2 switch frame(s)"),
    ("float frame", '{"prompts": ["a", "b"], "switch_frame_indices": [4.5]}', {}, "must be a list of latent frame integers"),
    ("not a list", '{"prompts": ["a", "b"], "switch_frame_indices": 4}', {}, "must be a list of latent frame integers"),
    ("frame zero", '{"prompts": ["a", "b"], "switch_frame_indices": [0]}', {}, "[0]=0 must be > 0"),
    ("negative frame", '{"prompts": ["a", "b"], "switch_frame_indices": [-4]}', {}, "[0]=-4 must be > 0"),
    ("out of order", '{"prompts": ["a", "b", "c"], "switch_frame_indices": [40, 20]}', {}, "[1]=20 must be > the previous (40)"),
    ("duplicate frames", '{"prompts": ["a", "b", "c"], "switch_frame_indices": [40, 40]}', {}, "[1]=40 must be > the previous (40)"),
    ("frame at end", '{"prompts": ["a", "b"], "switch_frame_indices": [241]}', {}, "[0]=241 is at or after the end: the 60 s video has latent frames 0..240"),
    ("no seconds", GOOD_LINE, {"seconds": None}, "no video length; pass --seconds"),
    ("seconds zero", GOOD_LINE, {"seconds": 0}, "--seconds: video length must be > 0"),
    ("seconds huge", GOOD_LINE, {"seconds": 1e6}, "over 86400 s"),
    ("line seconds bad", '{"prompts": ["a"], "seconds": -1}', {"seconds": None}, '"seconds": video length: invalid time -1: negative'),
    ("line out of range", GOOD_LINE, {"line": 3}, "line 3 is out of range: the file has 1 video(s), choose --line 0..0"),
    ("negative line", GOOD_LINE, {"line": -1}, "line -1 is out of range"),
    ("empty file", "\n\n", {}, "no videos (the file is empty)"),
    ("huge integer", '{"prompts": ["a"], "seconds": ' + "9" * 5000 + "}", {"seconds": None}, "malformed JSON"),
]


@pytest.mark.parametrize(("text", "kwargs", "fragment"), [c[1:] for c in JSONL_ERRORS], ids=[c[0] for c in JSONL_ERRORS])
def test_jsonl_errors(tmp_path: Path, text: str, kwargs: dict, fragment: str) -> None:
    path = write(tmp_path / "t.jsonl", text + "\n")
    with pytest.raises(TimelineError) as info:
        load(path, **{"seconds": 60, **kwargs})
    message = str(info.value)
    assert fragment in message
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "fragment"),
    [
        ("missing.yaml", None, {}, "timeline file not found"),
        ("latin.yaml", "seconds: 5\nprompts:\n  - {at: 0, text: caf\xe9}\n".encode("latin-1"), {}, "latin.yaml:3: not UTF-8 text"),
        ("t.txt", b"seconds: 5\n", {}, "unknown timeline format '.txt'"),
        ("t.yaml", b"seconds: 5\nprompts: [{at: 0, text: a}]\n", {"switch_frames": [4]}, "apply to JSONL timelines"),
        ("t.yaml", b"seconds: 5\nprompts: [{at: 0, text: a}]\n", {"line": 1}, "apply to JSONL timelines"),
    ],
)
def test_file_errors(tmp_path: Path, name: str, content: bytes | None, kwargs: dict, fragment: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TimelineError) as info:
        load(path, **kwargs)
    assert fragment in str(info.value)


def test_directory_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(TimelineError, match="is a directory"):
        load(folder)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffseconds: 5\nprompts: [{at: 0, text: café}]\n".encode())
    assert load(path).prompts[0].text == "café"


@pytest.mark.parametrize(
    ("text", "seconds", "fragment"),
    [("", 5, "prompt text is empty"), (LONG, 5, "over the limit"), ("a", 0, "> 0 seconds"),
     ("a", 90_000, "over 86400"), ("a", "x", "invalid time 'x'"), (None, 5, "must be a string")],
)
def test_single_errors(text, seconds, fragment: str) -> None:
    with pytest.raises(TimelineError) as info:
        single(text, seconds, FPS, TF)
    assert fragment in str(info.value)


# --- property: any file either parses or raises TimelineError ---------------------------------

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-10**6, max_value=10**6)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(["0:20", "1:02:03.5", "0", "60", "-1", "", "  "])
)
structures = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
yaml_shaped = st.fixed_dictionaries(
    {"prompts": st.lists(st.fixed_dictionaries({"at": scalars, "text": scalars}), max_size=4)},
    optional={"seconds": scalars, "extra": scalars},
)
jsonl_shaped = st.fixed_dictionaries(
    {"prompts": st.lists(scalars, max_size=4)},
    optional={"switch_frame_indices": st.lists(st.integers(-5, 300) | scalars, max_size=4), "seconds": scalars},
)
SUFFIXES = st.sampled_from([".yaml", ".jsonl"])


def parses_or_timeline_error(path: Path, **kwargs) -> None:
    try:
        timeline = load(path, **kwargs)
    except TimelineError as error:
        assert "\n" not in str(error)
    else:
        assert timeline.prompts[0].start_frame == 0
        assert all(p.start_frame < timeline.num_latent_frames for p in timeline.prompts)


FUZZ = settings(max_examples=150, deadline=None)
SECONDS_ARG = st.none() | st.sampled_from([5, 60, 0, -1, 1e9])


@FUZZ
@given(text=st.text(max_size=200), suffix=SUFFIXES, seconds=SECONDS_ARG)
def test_random_text_parses_or_raises_timeline_error(tmp_path_factory, text: str, suffix: str, seconds) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"t{suffix}"
    path.write_text(text, encoding="utf-8")
    parses_or_timeline_error(path, seconds=seconds)


@FUZZ
@given(data=st.binary(max_size=120), suffix=SUFFIXES)
def test_random_bytes_parse_or_raise_timeline_error(tmp_path_factory, data: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"t{suffix}"
    path.write_bytes(data)
    parses_or_timeline_error(path, seconds=60)


@FUZZ
@given(data=structures | yaml_shaped | jsonl_shaped, suffix=SUFFIXES, seconds=SECONDS_ARG,
       switch_frames=st.none() | st.lists(st.integers(-5, 300), max_size=3))
def test_random_structures_parse_or_raise_timeline_error(
    tmp_path_factory, data, suffix: str, seconds, switch_frames,
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"t{suffix}"
    text = yaml.safe_dump(data) if suffix == ".yaml" else json.dumps(data)
    path.write_text(text, encoding="utf-8")
    kwargs = {"seconds": seconds}
    if suffix == ".jsonl":
        kwargs["switch_frames"] = switch_frames
    parses_or_timeline_error(path, **kwargs)
