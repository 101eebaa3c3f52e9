"""The shapes world: exact palette, motion semantics read back from the ground truth, continuity
across switches, determinism, captions that parse back to their spec (held-out phrasings too).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from longvid.errors import LongvidError
from longvid.world import (
    BACKGROUND_NOUNS, BACKGROUND_WORDS, BACKGROUNDS, BOUNCE_SPEED, CIRCLE_PERIOD, COLOUR_WORDS, COLOURS, FPS,
    MOTIONS, MOVE_SPEED, SHAPE_WORDS, SHAPES, SIZE_WORDS, SIZES, SWITCHABLE, TEMPLATES, Attributes, Scene,
    SceneSpec, caption, make_clip, object_radius, parse_prompt, random_spec, render, sample_switching_clip,
    shape_extents,
)

SIZE = 128
SPEED_PX = MOVE_SPEED * SIZE / FPS  # 2 px per frame


def clip_of(seed: int = 0, frames: int = 96, **spec) -> tuple[np.ndarray, object]:
    return make_clip(SceneSpec(**spec), frames, seed, SIZE)


def expected_attributes(spec: SceneSpec) -> Attributes:
    """What a caption of `spec` says: everything but a medium size, which captions leave unsaid."""
    return Attributes(shape=spec.shape, colour=spec.colour, background=spec.background, motion=spec.motion,
                      size=None if spec.size == "medium" else spec.size, count=spec.count)


# --- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", SIZES)
def test_colours_exact_inside_and_background_exact_away_from_edges(shape: str, size: str) -> None:
    frames, truth = clip_of(shape=shape, size=size, colour="purple", background="navy", frames=1)
    frame, (x, y) = frames[0], truth.positions[0, 0]
    radius = object_radius(size, SIZE)
    assert tuple(frame[int(y), int(x)]) == COLOURS["purple"]  # the centroid is inside every shape
    left, right, top, bottom = shape_extents(shape, radius)
    ys, xs = np.mgrid[:SIZE, :SIZE] + 0.5
    far = (xs < x - left - 1) | (xs > x + right + 1) | (ys < y - top - 1) | (ys > y + bottom + 1)
    assert (frame[far] == BACKGROUNDS["navy"]).all()
    near = ~far
    blended = ~(frame[near] == COLOURS["purple"]).all(axis=1) & ~(frame[near] == BACKGROUNDS["navy"]).all(axis=1)
    assert blended.any(), "edges are anti-aliased"


def test_shapes_cover_their_nominal_area() -> None:
    for shape in SHAPES:
        frames, _ = clip_of(shape=shape, size="large", colour="white", background="black", frames=1)
        coverage = frames[0].astype(np.float64)[..., 0].sum() / 245.0
        radius = object_radius("large", SIZE)
        nominal = {"circle": math.pi, "square": 4 * 0.9**2, "triangle": 3 * math.sqrt(3) / 4 * 1.3**2}[shape]
        assert coverage == pytest.approx(nominal * radius**2, rel=0.03)


def test_render_matches_scene_state() -> None:
    rng = np.random.default_rng(3)
    scene = Scene(SceneSpec(motion="bouncing", count=2), rng, SIZE)
    for _ in range(5):
        scene.step()
    frame = render(scene)
    assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
    for x, y in scene.positions:
        assert tuple(frame[int(y), int(x)]) == COLOURS["red"]


def test_same_seed_same_clip_other_seed_other_clip() -> None:
    a, ta = clip_of(seed=5, motion="bouncing", frames=40)
    b, tb = clip_of(seed=5, motion="bouncing", frames=40)
    c, _ = clip_of(seed=6, motion="bouncing", frames=40)
    assert np.array_equal(a, b) and np.array_equal(ta.positions, tb.positions, equal_nan=True)
    assert not np.array_equal(a, c)


# --- motion semantics, read from the ground truth ----------------------------------------------


def walls_hold(truth, spec: SceneSpec) -> None:
    """Every object entirely in view."""
    radius = object_radius(spec.size, SIZE)
    left, right, top, bottom = shape_extents(spec.shape, radius)
    pos = truth.positions[:, :spec.count]
    assert (pos[..., 0] - left >= -1e-3).all() and (pos[..., 0] + right <= SIZE + 1e-3).all()
    assert (pos[..., 1] - top >= -1e-3).all() and (pos[..., 1] + bottom <= SIZE + 1e-3).all()


@pytest.mark.parametrize(("motion", "axis", "sign"), [("right", 0, 1), ("left", 0, -1), ("down", 1, 1), ("up", 1, -1)])
def test_axis_motion_is_constant_velocity_that_reenters_at_the_far_wall(motion: str, axis: int, sign: int) -> None:
    spec = SceneSpec(motion=motion, shape="square", size="large")
    _, truth = make_clip(spec, 160, 1, SIZE)
    steps = np.diff(truth.positions[:, 0], axis=0)  # (F-1, 2)
    assert np.allclose(steps[:, 1 - axis], 0.0)
    wraps = np.abs(steps[:, axis]) > SIZE / 2
    assert wraps.sum() >= 2, "320 px of travel crosses a 128 px frame more than twice"
    assert np.allclose(steps[~wraps, axis], sign * SPEED_PX, atol=1e-4)
    assert (np.sign(steps[wraps, axis]) == -sign).all(), "a wrap jumps back to the opposite wall"
    walls_hold(truth, spec)


def test_bouncing_keeps_speed_and_diagonal_heading_and_reflects_at_walls() -> None:
    spec = SceneSpec(motion="bouncing", size="small")
    _, truth = make_clip(spec, 400, 2, SIZE)
    vel = truth.velocities[:, 0]
    assert np.allclose(np.linalg.norm(vel, axis=1), BOUNCE_SPEED * SIZE / FPS, rtol=1e-4)
    angles = np.degrees(np.arctan2(np.abs(vel[:, 1]), np.abs(vel[:, 0])))
    assert ((angles >= 25 - 1e-3) & (angles <= 65 + 1e-3)).all()
    flips = np.sign(vel[1:]) != np.sign(vel[:-1])  # (F-1, 2)
    assert flips.any(axis=0).all(), "it bounced off both a vertical and a horizontal wall"
    pos = truth.positions[1:, 0]
    radius = object_radius("small", SIZE)
    reach = max(shape_extents(s, radius)[0] for s in SHAPES)
    assert (np.minimum(pos[flips[:, 0], 0], SIZE - pos[flips[:, 0], 0]) < reach + 3).all(), "x flips at walls only"
    walls_hold(truth, spec)


def test_circling_turns_at_a_constant_rate_around_a_fixed_centre() -> None:
    spec = SceneSpec(motion="circling", size="large", count=2)
    _, truth = make_clip(spec, 2 * int(CIRCLE_PERIOD * FPS), 3, SIZE)
    for k in range(2):
        pos = truth.positions[:, k].astype(np.float64)
        centre = pos.mean(axis=0)  # two full turns: the mean is the centre
        radii = np.linalg.norm(pos - centre, axis=1)
        assert radii.std() < 1e-3 * radii.mean()
        turn = np.diff(np.unwrap(np.arctan2(*(pos - centre).T[::-1])))
        assert np.allclose(np.abs(turn), 2 * math.pi / (CIRCLE_PERIOD * FPS), atol=1e-4)
    gaps = np.linalg.norm(truth.positions[:, 0] - truth.positions[:, 1], axis=1)
    assert gaps.min() > 0, "two fresh circling objects share the orbit, opposite each other"
    walls_hold(truth, spec)


def test_still_does_not_move() -> None:
    _, truth = clip_of(motion="still", count=2, frames=30)
    assert np.ptp(truth.positions[:, :2], axis=0).max() == 0


# --- switches ----------------------------------------------------------------------------------


def max_ordinary_step() -> float:
    """The longest step any world motion takes per frame, in pixels."""
    return max(MOVE_SPEED, BOUNCE_SPEED, 2 * math.pi * 0.2 / CIRCLE_PERIOD) * SIZE / FPS + 1e-3


@pytest.mark.parametrize("count", [1, 2])
def test_switches_carry_the_scene_on_without_jumps(count: int) -> None:
    """Over many random switches (colour, shape, background, motion), no object ever moves more
    than one ordinary step, except re-entry wraps."""
    rng = np.random.default_rng(count)
    for _ in range(25):
        clip = sample_switching_clip(rng, 96, 4, size=SIZE, count=count, min_segment_frames=12)
        steps = np.diff(clip.truth.positions[:, :count], axis=0)  # (F-1, K, 2)
        wrap = np.abs(steps) > SIZE / 2
        longest = np.where(wrap, 0.0, np.abs(steps)).max()
        assert longest <= max_ordinary_step()
        for start, spec in zip(clip.truth.starts, clip.truth.specs):
            assert clip.truth.spec_at(start) == spec


def test_switch_keeps_position_and_heading_where_the_motion_allows() -> None:
    rng = np.random.default_rng(0)
    scene = Scene(SceneSpec(motion="bouncing"), rng, SIZE)
    for _ in range(7):
        scene.step()
    place, heading = scene.positions.copy(), np.sign(scene.velocities)
    scene.switch(SceneSpec(motion="bouncing", colour="blue", shape="triangle", background="gray"))
    assert np.array_equal(scene.positions, place) and np.array_equal(np.sign(scene.velocities), heading)
    scene.switch(SceneSpec(motion="circling"))
    assert np.allclose(scene.positions, place)
    tangent = scene.velocities[0] / np.linalg.norm(scene.velocities[0])
    assert tangent @ (heading[0] / np.linalg.norm(heading[0])) > 0.9, "the orbit continues the heading"
    scene.switch(SceneSpec(motion="right"))
    assert np.allclose(scene.positions, place) and scene.velocities[0, 0] > 0 == scene.velocities[0, 1]


def test_sampled_clip_timeline_matches_truth() -> None:
    rng = np.random.default_rng(4)
    clip = sample_switching_clip(rng, 80, 3, size=64)
    assert clip.frames.shape == (80, 64, 64, 3)
    assert [f for f, _ in clip.timeline] == clip.truth.starts and clip.timeline[0][0] == 0
    assert min(np.diff(clip.truth.starts + [80])) >= FPS  # segments of at least a second
    for (_, text), spec in zip(clip.timeline, clip.truth.specs):
        assert parse_prompt(text) == expected_attributes(spec)
    for before, after in zip(clip.truth.specs, clip.truth.specs[1:]):
        changed = [a for a in SWITCHABLE if getattr(before, a) != getattr(after, a)]
        assert 1 <= len(changed) <= 2 and before.size == after.size and before.count == after.count


@pytest.mark.parametrize(
    ("call", "fragment"),
    [(lambda: sample_switching_clip(np.random.default_rng(0), 20, 3), "need at least"),
     (lambda: make_clip([(5, SceneSpec())], 10, 0), "start at frame 0"),
     (lambda: make_clip([(0, SceneSpec()), (0, SceneSpec())], 10, 0), "must increase"),
     (lambda: SceneSpec(colour="mauve"), "unknown colour 'mauve'"),
     (lambda: caption(SceneSpec(), np.random.default_rng(0), split="test"), "unknown caption split"),
     (lambda: make_clip(SceneSpec(), 4, 0, size=4), "too small")],
)
def test_bad_requests_raise_actionable_errors(call, fragment: str) -> None:
    with pytest.raises(LongvidError, match=fragment):
        call()


# --- captions and parsing ----------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_caption_parses_back_to_its_spec(split: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(1500):
        spec = random_spec(rng)
        text = caption(spec, rng, split)
        assert parse_prompt(text) == expected_attributes(spec), text


def heldout_phrases() -> set[str]:
    phrases: set[str] = set()
    for table in (COLOUR_WORDS, BACKGROUND_WORDS, SIZE_WORDS):
        for words in table.values():
            phrases |= set(words.heldout)
    for words in SHAPE_WORDS.values():
        phrases |= {form for pair in words.heldout for form in pair}
    phrases |= set(BACKGROUND_NOUNS.heldout)
    return phrases


def test_train_captions_never_use_heldout_words_or_templates() -> None:
    rng = np.random.default_rng(8)
    heldout = heldout_phrases() | {"ricochet", "rebound", "orbit", "loop", "glid", "heading", "footage",
                                   "in front of", "there is", "there are", "pair", "twin", "climb", "sink"}
    for _ in range(1500):
        text = caption(random_spec(rng), rng, "train")
        for phrase in heldout:
            assert not re.search(rf"\b{re.escape(phrase)}", text), (phrase, text)


def test_heldout_captions_use_heldout_templates() -> None:
    rng = np.random.default_rng(9)
    openings = {t.split("{")[0] for t in TEMPLATES["heldout"]} | {""}
    assert not set(TEMPLATES["train"]) & set(TEMPLATES["heldout"])
    texts = [caption(random_spec(rng), rng, "heldout") for _ in range(200)]
    assert any(t.startswith("footage of") for t in texts) and any(t.startswith("against") for t in texts)
    assert all(any(t.startswith(o) for o in openings) for t in texts)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a red ball bouncing on black", dict(colour="red", shape="circle", motion="bouncing", background="black",
                                              count=1)),
        ("A large crimson circle bounces across a dark background!", dict(colour="red", shape="circle",
                                                                         motion="bouncing", background="black",
                                                                         size="large", count=1)),
        ("a dark green ball on black", dict(colour="green", shape="circle", background="black", count=1)),
        ("a dark red box sliding right", dict(colour="red", shape="square", motion="right", count=1)),
        ("two violet squares drifting from right to left over forest green", dict(
            colour="purple", shape="square", motion="left", background="dark green", count=2)),
        ("a ball circles on grey", dict(shape="circle", motion="circling", background="gray", count=1)),
        ("a box moving in a circle", dict(shape="square", motion="circling", count=1)),
        ("the triangle is still bouncing", dict(shape="triangle", motion="bouncing", count=1)),
        ("a teal orb on a white background", dict(colour="cyan", shape="circle", count=1)),
        ("something sinking slowly", dict(motion="down")),
        ("a purple thing on dark blue", dict(colour="purple", background="navy")),
        ("medium-sized jet-black nothing", dict(size="medium", background="black")),
        ("", {}),
        ("a cat playing the piano", {}),
    ],
)
def test_parse_prompt_examples(text: str, expected: dict) -> None:
    assert parse_prompt(text).named() == expected


def test_parse_prompt_reads_every_vocabulary_value() -> None:
    for colour in COLOURS:
        assert parse_prompt(f"a {colour} ball").colour == colour
    for background in BACKGROUNDS:
        assert parse_prompt(f"a ball on a {background} background").background == background
    rng = np.random.default_rng(0)
    for motion in MOTIONS:
        for split in ("train", "heldout"):
            assert parse_prompt(caption(SceneSpec(motion=motion), rng, split)).motion == motion
