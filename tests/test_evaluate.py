"""`longvid eval` checked on the world's own clips, which it must score near perfect, and on
clips corrupted on purpose (colour shift, freeze, blur, teleport, late switch, block flicker),
each of which it must catch."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import av
import numpy as np
import pytest

from longvid.errors import LongvidError
from longvid.evaluate import (
    ATTRIBUTES, CORE_ATTRIBUTES, TELEPORT_RATIO, classify_motion, detect_frame, evaluate, format_report,
    evaluate_video, read_video, video_drift_error, video_fps,
)
from longvid.frames import Frame
from longvid.world import (
    BACKGROUNDS, COLOURS, FPS, SHAPES, SIZES, Scene, SceneSpec, caption, draw, make_clip, render,
    sample_switching_clip,
)

SIZE = 128
SECONDS = 8
FRAMES = SECONDS * FPS


def switching_clip(seed: int, split: str = "train", count: int = 1, size: int = SIZE):
    return sample_switching_clip(np.random.default_rng(seed), FRAMES, 3, size=size, split=split, count=count)


def two_segment_clip(first: SceneSpec, second: SceneSpec, switch: int = FRAMES // 2, seed: int = 0):
    """Frames and a caption timeline of a clip that switches once, at `switch`."""
    rng = np.random.default_rng(seed)
    frames, _ = make_clip([(0, first), (switch, second)], FRAMES, seed, SIZE)
    return frames, [(0, caption(first, rng)), (switch, caption(second, rng))]


def render_at(spec: SceneSpec, position: np.ndarray) -> np.ndarray:
    """One frame of `spec` with its object at `position` (x, y)."""
    return draw(np.empty((SIZE, SIZE, 3), np.uint8), spec, position[None])


def write_mp4(path, frames: np.ndarray):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


CLEAN_TIMELINE = [  # every colour changes hue under an RGB rotation (white would not)
    (0, SceneSpec(shape="circle", colour="red", background="black", motion="right")),
    (30, SceneSpec(shape="circle", colour="orange", background="black", motion="bouncing")),
    (62, SceneSpec(shape="square", colour="orange", background="gray", motion="circling")),
    (97, SceneSpec(shape="square", colour="purple", background="gray", motion="up")),
]


@pytest.fixture(scope="module")
def clean():
    """A ground-truth clip with three switches, its caption timeline and its report, shared by
    the corruption tests."""
    frames, _ = make_clip(CLEAN_TIMELINE, FRAMES, 0, SIZE)
    rng = np.random.default_rng(0)
    timeline = [(start, caption(spec, rng)) for start, spec in CLEAN_TIMELINE]
    return frames, timeline, evaluate(frames, timeline)


# --- ground truth scores near perfect ------------------------------------------------------------


@pytest.mark.parametrize(("seed", "split"), [(1, "train"), (2, "heldout"), (3, "train"), (4, "heldout")])
def test_ground_truth_clips_score_near_perfect(seed: int, split: str) -> None:
    clip = switching_clip(seed, split)
    report = evaluate(clip.frames, clip.timeline)
    for attribute in CORE_ATTRIBUTES:
        assert report["adherence"][attribute] >= 0.97, (attribute, clip.timeline)
    assert report["judged_frames"]["motion"] > FRAMES / 2
    assert report["continuity"]["teleports"] == 0 and report["continuity"]["max_ratio"] < TELEPORT_RATIO
    assert report["latency"]["missed"] == 0
    assert not report["motion"]["freeze"]["frozen"]
    for switch in report["switches"]:
        for attribute in ("colour", "shape", "background"):
            assert switch["latency_per_attribute"].get(attribute, 0) == 0, "appearance switches at once"
    assert report["drift"]["adherence_vde"] == pytest.approx(0.0, abs=0.5)


def test_ground_truth_scores_at_64_pixels_and_with_two_objects() -> None:
    small = switching_clip(5, size=64)
    report = evaluate(small.frames, small.timeline)
    assert min(report["adherence"][a] for a in CORE_ATTRIBUTES) >= 0.97
    pair = switching_clip(6, count=2)
    report = evaluate(pair.frames, pair.timeline)
    # Two objects may pass through each other; while they overlap they read as one blob.
    assert report["adherence"]["colour"] >= 0.97 and report["adherence"]["background"] >= 0.97
    assert report["adherence"]["overall"] >= 0.9


def test_ground_truth_survives_h264(tmp_path) -> None:
    clip = switching_clip(7)
    path = write_mp4(tmp_path / "clip.mp4", clip.frames)
    assert video_fps(path) == FPS
    report = evaluate(read_video(path), clip.timeline)
    assert report["frames"] == FRAMES
    assert min(report["adherence"][a] for a in CORE_ATTRIBUTES) >= 0.95
    assert report["continuity"]["teleports"] == 0


def test_a_video_cut_off_mid_write_is_read_up_to_the_damage(tmp_path) -> None:
    """A killed run leaves a fragmented MP4 whose tail is damaged: eval scores the frames before
    it, as a player shows them, instead of failing on the damaged packet."""
    from longvid.writers import Mp4Writer, write_stream

    clip = switching_clip(7)
    path = tmp_path / "cut.mp4"
    write_stream([Frame(i, f) for i, f in enumerate(clip.frames)], [Mp4Writer(path, FPS, keyframe_interval=8)])
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.8)])
    frames = list(read_video(path))
    assert 0 < len(frames) < FRAMES
    made = [(f, text) for f, text in clip.timeline if f < len(frames)]  # the prompts it got to
    assert evaluate(frames, made)["frames"] == len(frames)


# --- corruptions are caught ----------------------------------------------------------------------


def test_colour_shift_is_caught(clean) -> None:
    frames, timeline, report = clean
    shifted = frames.copy()
    shifted[FRAMES // 2:] = shifted[FRAMES // 2:][..., [1, 2, 0]]  # rotate RGB: every hue moves
    bad = evaluate(shifted, timeline)
    assert report["adherence"]["colour"] >= 0.97
    assert bad["adherence"]["colour"] < 0.6
    assert bad["drift"]["adherence_vde"] > report["drift"]["adherence_vde"] + 1.0
    first_last = bad["drift"]["first_last"]
    assert first_last["adherence_last"] < first_last["adherence_first"]


def test_freeze_is_caught() -> None:
    frames, prompts = two_segment_clip(SceneSpec(motion="bouncing"), SceneSpec(motion="circling", colour="cyan"))
    frozen = frames.copy()
    frozen[FRAMES // 4:] = frozen[FRAMES // 4]
    good, bad = evaluate(frames, prompts), evaluate(frozen, prompts)
    assert not good["motion"]["freeze"]["frozen"] and good["adherence"]["motion"] >= 0.97
    assert bad["motion"]["freeze"]["frozen"]
    assert bad["motion"]["freeze"]["longest_run_seconds"] >= SECONDS * 0.7
    assert bad["adherence"]["motion"] < 0.4


def box_blur(frames: np.ndarray, radius: int = 2) -> np.ndarray:
    """(F, H, W, 3) uint8 -> the same, each pixel the mean of its (2r+1)^2 neighbourhood."""
    padded = np.pad(frames.astype(np.float32), ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    height, width = frames.shape[1:3]
    out = np.zeros(frames.shape, np.float32)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out += padded[:, dy:dy + height, dx:dx + width]
    return np.rint(out / (2 * radius + 1) ** 2).astype(np.uint8)


def test_blur_is_caught_as_sharpness_drift(clean) -> None:
    frames, timeline, report = clean
    blurred = frames.copy()
    blurred[FRAMES // 2:] = box_blur(blurred[FRAMES // 2:])
    bad = evaluate(blurred, timeline)
    # Edge sharpness is contrast-normalised, so it drifts with blur and hardly with content.
    assert report["drift"]["edge_sharpness_vde"] < 3.0
    assert bad["drift"]["edge_sharpness_vde"] > report["drift"]["edge_sharpness_vde"] + 5.0
    ours, theirs = report["drift"]["first_last"], bad["drift"]["first_last"]
    assert theirs["edge_sharpness_last"] < 0.5 * theirs["edge_sharpness_first"]
    assert ours["edge_sharpness_last"] > 0.8 * ours["edge_sharpness_first"]
    # Laplacian variance also follows the content (a gray background halves the contrast), so
    # it is read against the clean clip.
    assert theirs["sharpness_last"] / theirs["sharpness_first"] < 0.2 * ours["sharpness_last"] / ours["sharpness_first"]


def teleported_clip(teleport: bool) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """A bouncing ball that turns blue at the switch; with `teleport`, it also jumps across the frame."""
    first, second = SceneSpec(motion="bouncing"), SceneSpec(motion="bouncing", colour="blue")
    switch = FRAMES // 2
    scene = Scene(first, np.random.default_rng(0), SIZE)
    frames = np.empty((FRAMES, SIZE, SIZE, 3), np.uint8)
    for f in range(FRAMES):
        if f == switch:
            scene.switch(second)
            if teleport:
                scene.positions = np.clip(SIZE - scene.positions, *scene.walls())  # mirror through the centre
        frames[f] = render(scene)
        scene.step()
    rng = np.random.default_rng(1)
    return frames, [(0, caption(first, rng)), (switch, caption(second, rng))]


def test_a_switch_that_cannot_be_read_is_unmeasured_not_missed() -> None:
    right, left = SceneSpec(motion="right"), SceneSpec(motion="left")
    too_late = two_segment_clip(right, left, switch=FRAMES - 3)  # 3 frames: no motion can be read
    unreadable = (too_late[0], [(0, too_late[1][0][1]), (FRAMES // 2, "a cinematic shot, 4k")])
    for frames, prompts in (too_late, unreadable):
        report = evaluate(frames, prompts)
        assert report["switches"][0]["latency_frames"] is None and report["switches"][0]["unmeasured"]
        assert (report["latency"]["missed"], report["latency"]["unmeasured"]) == (0, 1)
    frozen = two_segment_clip(right, left)[0]
    frozen[FRAMES // 2:] = frozen[FRAMES // 2 - 1]  # the new motion never comes: a real miss
    report = evaluate(frozen, two_segment_clip(right, left)[1])
    assert not report["switches"][0]["unmeasured"]
    assert (report["latency"]["missed"], report["latency"]["unmeasured"]) == (1, 0)
    assert "missed 1;" in format_report(report)


def test_teleport_at_a_switch_is_caught() -> None:
    good = evaluate(*teleported_clip(teleport=False))
    bad = evaluate(*teleported_clip(teleport=True))
    assert good["switches"][0]["continuity_ratio"] < 2.0 and not good["switches"][0]["teleport"]
    assert bad["switches"][0]["jump_px"] > 20
    assert bad["switches"][0]["continuity_ratio"] > 3 * TELEPORT_RATIO and bad["switches"][0]["teleport"]
    assert bad["continuity"]["teleports"] == 1


def test_late_switch_shows_as_latency() -> None:
    """The video switches 12 frames after the prompt does: the latency is those 12 frames."""
    delay = 12
    frames, prompts = two_segment_clip(SceneSpec(motion="right", shape="square"),
                                       SceneSpec(motion="right", shape="triangle", colour="yellow"))
    early = [prompts[0], (prompts[1][0] - delay, prompts[1][1])]
    on_time, late = evaluate(frames, prompts), evaluate(frames, early)
    assert on_time["switches"][0]["latency_frames"] == 0
    assert late["switches"][0]["latency_frames"] == delay
    assert late["switches"][0]["latency_seconds"] == pytest.approx(delay / FPS)
    assert late["adherence_grace"]["colour"] < 0.5 < on_time["adherence_grace"]["colour"]


def test_block_flicker_is_caught() -> None:
    frames, prompts = two_segment_clip(SceneSpec(motion="circling"), SceneSpec(motion="circling", colour="white"))
    block = 4
    flickering = frames.astype(np.int16)
    for start in range(0, FRAMES, 2 * block):  # every other block a little brighter
        flickering[start:start + block] += 6
    flickering = np.clip(flickering, 0, 255).astype(np.uint8)
    good = evaluate(frames, prompts, block_frames=block)["flicker"]
    bad = evaluate(flickering, prompts, block_frames=block)["flicker"]
    assert good["ratio"] == pytest.approx(1.0, abs=0.3)
    assert bad["ratio"] > 3.0
    assert evaluate(frames, prompts)["flicker"] is None


def test_block_flicker_is_read_at_a_stream_s_real_block_starts() -> None:
    """A causal decoder's first block is shorter (12 frames a block, the first 9), so every
    boundary sits 3 frames before a multiple of 12; flicker there is caught only when read there."""
    frames, prompts = two_segment_clip(SceneSpec(motion="circling"), SceneSpec(motion="circling", colour="white"))
    block, first = 12, 9
    flickering = frames.astype(np.int16)
    for start in range(first, FRAMES, 2 * block):  # every other block after the first, brighter
        flickering[start:start + block] += 6
    flickering = np.clip(flickering, 0, 255).astype(np.uint8)
    read_right = evaluate(flickering, prompts, block_frames=block, first_block_frames=first)["flicker"]
    read_wrong = evaluate(flickering, prompts, block_frames=block)["flicker"]
    assert read_right["first_block_frames"] == first and read_right["ratio"] > 3.0
    assert read_wrong["ratio"] < 1.5  # the boundaries fall inside blocks: the flicker is missed


def test_eval_of_a_video_places_blocks_as_the_stream_made_them(tmp_path) -> None:
    frames, prompts = two_segment_clip(SceneSpec(motion="right"), SceneSpec(motion="right", colour="white"))
    path = write_mp4(tmp_path / "v.mp4", frames)
    timeline = tmp_path / "t.yaml"
    timeline.write_text(json.dumps({"seconds": SECONDS, "prompts": [{"at": f / FPS, "text": t} for f, t in prompts]}))
    flicker = evaluate_video(path, timeline, block_frames=12, temporal_factor=4)["flicker"]
    assert (flicker["block_frames"], flicker["first_block_frames"]) == (12, 9)


def test_a_prompt_asked_for_after_the_last_frame_is_listed_not_refused(tmp_path) -> None:
    """A switch in the video's final fraction of a frame (59.99 s of 60 s): its first frame is
    past the last, so it is reported as not judged and the rest of the video is scored."""
    frames, prompts = two_segment_clip(SceneSpec(motion="right"), SceneSpec(motion="right", colour="white"))
    path = write_mp4(tmp_path / "v.mp4", frames)
    timeline = tmp_path / "t.yaml"
    late = {"at": SECONDS - 0.01, "text": "a blue square moving up on gray"}
    timeline.write_text(json.dumps({"seconds": SECONDS, "prompts": [
        *({"at": f / FPS, "text": t} for f, t in prompts), late]}))
    report = evaluate_video(path, timeline)
    assert report["prompts_past_end"] == [{"frame": FRAMES, "prompt": late["text"]}]
    assert len(report["switches"]) == 1 and report["segments"][-1]["end"] == FRAMES
    assert report["adherence"]["colour"] > 0.95
    assert "not judged" in format_report(report)


# --- pieces --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, SIZE])
def test_detect_frame_reads_every_shape_size_colour_and_background(size: int) -> None:
    rng = np.random.default_rng(size)
    for shape in SHAPES:
        for object_size in SIZES:
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
            background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
            spec = SceneSpec(shape=shape, size=object_size, colour=colour, background=background)
            frames, truth = make_clip(spec, 1, int(rng.integers(1000)), size)
            found = detect_frame(frames[0])
            assert (found.shape, found.size, found.colour, found.background, found.count) == (
                shape, object_size, colour, background, 1), spec
            assert np.allclose(found.objects[0].centroid, truth.positions[0, 0], atol=0.05)


def test_detect_frame_on_an_empty_frame() -> None:
    found = detect_frame(np.full((32, 32, 3), BACKGROUNDS["gray"], np.uint8))
    assert (found.background, found.colour, found.shape, found.count) == ("gray", None, None, 0)


def straight(velocity: tuple[float, float], n: int = 8) -> np.ndarray:
    return np.tile(np.array(velocity, np.float64), (n, 1))


@pytest.mark.parametrize(
    ("steps", "label"),
    [(straight((2.0, 0.0)), "right"), (straight((-2.0, 0.1)), "left"), (straight((0.0, -1.5)), "up"),
     (straight((0.05, 2.0)), "down"), (straight((1.5, 1.5)), "bouncing"), (straight((0.01, 0.0)), "still"),
     (np.concatenate([straight((1.5, -1.0), 4), straight((-1.5, -1.0), 4)]), "bouncing"),
     (np.stack([[math.cos(a), math.sin(a)] for a in np.arange(8) * 0.13]) * 3.0, "circling"),
     (np.full((8, 2), np.nan), None)],
)
def test_classify_motion(steps: np.ndarray, label: str | None) -> None:
    assert classify_motion(steps, fps=FPS, frame_size=SIZE) == label


def polygon_orbit(steps_per_side: int = 4, turn_degrees: float = 30.0, n: int = 8, phase: int = 0) -> np.ndarray:
    """Steps (n, 2) along an orbit drawn as a polygon: a side of `steps_per_side` equal steps, then
    the whole turn at the corner, as a codec with one latent frame per four frames draws it."""
    headings = [math.radians(turn_degrees) * ((i + phase) // steps_per_side) for i in range(n)]
    return np.stack([[math.cos(h), math.sin(h)] for h in headings]) * 3.3


@pytest.mark.parametrize("phase", range(4))
def test_an_orbit_drawn_as_a_polygon_reads_circling(phase: int) -> None:
    assert classify_motion(polygon_orbit(phase=phase), fps=FPS, frame_size=SIZE) == "circling"
    # Reversed sense, too.
    assert classify_motion(polygon_orbit(phase=phase) * [1, -1], fps=FPS, frame_size=SIZE) == "circling"


def test_a_polygon_at_a_wall_is_a_reflection_not_an_orbit() -> None:
    assert classify_motion(polygon_orbit(), fps=FPS, frame_size=SIZE, at_wall=True) == "bouncing"
    # One reflection bends four-step chords steadily too; at a wall it stays bouncing.
    reflection = np.concatenate([straight((1.5, -1.5), 4), straight((1.5, 1.5), 4)])
    assert classify_motion(reflection, fps=FPS, frame_size=SIZE, at_wall=True) == "bouncing"


def test_world_bouncing_and_polygon_orbits_on_rendered_clips() -> None:
    """The world's own bouncing stays bouncing; its orbit drawn with one straight side per four
    frames (the orbit's own positions every fourth frame, joined by straight lines) reads circling."""
    spec = SceneSpec(shape="square", colour="red", background="gray", motion="circling", size="large")
    _, truth = make_clip(spec, 80, 0, SIZE)
    keys = truth.positions[::4, 0].astype(np.float64)  # (20, 2)
    i = np.arange(76)
    t = (i % 4 / 4.0)[:, None]
    path = keys[i // 4] * (1 - t) + keys[i // 4 + 1] * t
    frames = np.stack([render_at(spec, p) for p in path])
    report = evaluate(frames, [(0, "a large red box circling on gray")])
    assert report["adherence"]["motion"] >= 0.8
    frames, _ = make_clip(replace(spec, motion="bouncing"), 160, 5, SIZE)  # reflections in mid-window
    assert evaluate(frames, [(0, "a large red box bouncing on gray")])["adherence"]["motion"] >= 0.97


def test_random_jitter_is_no_world_motion() -> None:
    rng = np.random.default_rng(0)
    labels = [classify_motion(rng.normal(0, 2.0, (8, 2)), fps=FPS, frame_size=SIZE) for _ in range(200)]
    assert sum(label is not None for label in labels) < 20


def test_video_drift_error_formula() -> None:
    # N = 3: (3-2+1)|m2-m1|/m1 + (3-3+1)|m3-m1|/m1 = 2 * 0.5 + 1 * 1.0
    assert video_drift_error([1.0, 0.5, 2.0]) == pytest.approx(2.0)
    assert video_drift_error([0.8] * 10) == 0.0
    assert video_drift_error([0.0, 1.0]) is None


def test_stream_of_frames_equals_array(clean) -> None:
    frames, timeline, report = clean
    stream = (Frame(index=i, image=image) for i, image in enumerate(frames))
    assert evaluate(stream, timeline) == report


def test_unnamed_attributes_are_not_judged() -> None:
    frames, _ = make_clip(SceneSpec(colour="orange", motion="up"), 40, 0, 64)
    report = evaluate(frames, [(0, "something orange")])
    assert report["adherence"]["colour"] == 1.0
    assert all(report["adherence"][a] is None for a in ATTRIBUTES if a != "colour")


def test_motion_is_judged_only_on_frames_with_a_full_trailing_window() -> None:
    """A frame's motion is read from the steps before it; the first half second has too few, so it
    is not judged (it used to borrow the steps after it)."""
    spec = SceneSpec(colour="orange", motion="right")
    moving, _ = make_clip(spec, 40, 0, SIZE)
    frames = np.concatenate([np.repeat(moving[:1], 8, axis=0), moving])
    report = evaluate(frames, [(0, "an orange ball moving right")])
    assert report["judged_frames"]["motion"] == len(frames) - 8
    assert evaluate(moving, [(0, "an orange ball moving right")])["adherence"]["motion"] == 1.0


def test_eval_of_a_video_file_keeps_no_frames(tmp_path, monkeypatch) -> None:
    """`evaluate_video` reads a file in one pass and drops each frame once read (a 5-minute
    832x480 video would not fit in memory): at most a few frames are alive at any time."""
    import weakref

    from longvid import evaluate as evaluate_module

    class Tracked(np.ndarray):
        pass

    clip = switching_clip(3)
    path = write_mp4(tmp_path / "clip.mp4", clip.frames)
    alive: list[weakref.ref] = []
    most = []

    def tracked_frames(video):
        for frame in read_video(video):
            view = frame.view(Tracked)
            alive.append(weakref.ref(view))
            most.append(sum(r() is not None for r in alive))
            yield view
            del view

    monkeypatch.setattr(evaluate_module, "read_video", tracked_frames)
    timeline = tmp_path / "t.yaml"
    timeline.write_text("prompts:\n" + "".join(f"  - at: {f / FPS}\n    text: {text}\n" for f, text in clip.timeline))
    report = evaluate_video(path, timeline)
    assert report["frames"] == FRAMES and len(alive) == FRAMES
    assert max(most) <= 3, max(most)


def test_report_is_json_ready(clean) -> None:
    report = clean[2]
    assert json.loads(json.dumps(report)) == report


def test_format_report_is_a_readable_table(clean) -> None:
    text = format_report(clean[2])
    for fragment in ("adherence", "colour", "motion", "switch", "latency", "teleport", "freeze", "VDE",
                     "first vs last"):
        assert fragment in text
    assert format_report(evaluate(np.zeros((5, 16, 16, 3), np.uint8), [(0, "a red ball")]))


@pytest.mark.parametrize(
    ("frames", "prompts", "fragment"),
    [(np.zeros((4, 16, 16, 3), np.float32), [(0, "x")], "expected uint8 RGB"),
     (np.zeros((4, 16, 16, 4), np.uint8), [(0, "x")], "alpha"),
     (np.zeros((4, 16, 16, 3), np.uint8), [], "no prompts"),
     (np.zeros((4, 16, 16, 3), np.uint8), [(9, "a")], "has 4 frames"),
     (np.zeros((4, 16, 16, 3), np.uint8), [(2, "a"), (1, "b")], "sort the prompts"),
     (np.zeros((0, 16, 16, 3), np.uint8), [(0, "a")], "no frames"),
     ([np.zeros((16, 16, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)], [(0, "a")], "one size per video")],
)
def test_bad_input_raises_actionable_errors(frames, prompts, fragment: str) -> None:
    with pytest.raises(LongvidError, match=fragment):
        evaluate(frames, prompts)


def test_read_video_errors(tmp_path) -> None:
    with pytest.raises(LongvidError, match="video not found"):
        read_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(LongvidError, match="cannot read video"):
        read_video(junk)
