"""The procedural shapes world: scenes whose every frame is known, and captions that describe them.

A scene is one or two identical objects (one shape, colour and size) moving over a plain
background at `FPS` frames per second. Everything random is drawn from a numpy Generator, so one
seed gives the same frames and the same ground truth everywhere. Three users: the training data
pipeline (clips and captions made on the fly), the tests, and `longvid eval`, which reads the
vocabulary (palettes, sizes, `parse_prompt`) but never the ground truth.

Motion semantics, crisp enough to be checked from pixels:

- left / right / up / down: constant velocity along that axis, `MOVE_SPEED` frame sizes per
  second. At the edge the object *re-enters*: the step that would carry it through the wall puts it
  back, whole, against the opposite wall (position modulo the travel span). It is always entirely
  in view; these wraps are the only jumps in the world.
- bouncing: constant speed `BOUNCE_SPEED` along a diagonal (`BOUNCE_MIN_ANGLE` to 90 degrees minus
  it, from the axes), mirror reflection off the walls.
- circling: one turn per `CIRCLE_PERIOD` seconds around a fixed centre, either sense, the whole
  orbit in view.
- still: no motion.

Walls: every object of one size class moves inside the same box, the union of its three shapes'
extents, so a shape switch never moves an object; a size switch pushes it back inside its new box.
Two objects start apart (in separate lanes for axis motion, opposite on one orbit for circling)
but do not collide: bouncing ones may pass through each other.
A switch keeps positions, and velocities where the new motion allows: "right" after "bouncing"
keeps the place and takes the new velocity, "bouncing" keeps the old heading clamped to a
diagonal, "circling" puts the centre where the orbit passes through the object along its heading.

Coordinates are (x, y) in pixels, x to the right and y down; pixel (row i, column j) covers
[j, j + 1) x [i, i + 1), its centre is (j + 0.5, i + 0.5). "Frame size" means min(H, W).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace
from typing import Sequence, Union

import numpy as np

from longvid.errors import LongvidError

FPS = 16
DEFAULT_SIZE = 128
MAX_OBJECTS = 2

RGB = tuple[int, int, int]

# --- vocabulary ----------------------------------------------------------------------------------

COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 230),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "orange": (245, 140, 30),
    "purple": (150, 60, 200),
    "cyan": (40, 210, 220),
}
BACKGROUNDS: dict[str, RGB] = {
    "black": (0, 0, 0),
    "gray": (110, 110, 110),
    "navy": (20, 30, 80),
    "dark green": (20, 70, 30),
}
SHAPES = ("circle", "square", "triangle")
AXIS_MOTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0),
}
MOTIONS = (*AXIS_MOTIONS, "bouncing", "circling", "still")
SIZES = ("small", "medium", "large")
COUNTS = (1, 2)
ATTRIBUTES = ("colour", "shape", "background", "motion", "size", "count")
VALUES: dict[str, tuple] = {
    "colour": tuple(COLOURS), "shape": SHAPES, "background": tuple(BACKGROUNDS),
    "motion": MOTIONS, "size": SIZES, "count": COUNTS,
}
# Attributes a caption change alters by default; size and count changes force a jump or a new
# object, which an edited stream would not do.
SWITCHABLE = ("colour", "shape", "background", "motion")

# --- geometry and motion -------------------------------------------------------------------------

# Object radius as a share of the frame size: small stays >= 9 px at 128 so its shape is legible,
# large (18 px) still leaves a third of the frame to move in.
SIZE_RADIUS = {"small": 0.07, "medium": 0.10, "large": 0.14}
# Square half side per unit radius: 4 * 0.9^2 = 3.24, about the circle's pi, same visual weight.
# 1.0 (the circle's bounding box) doubles the square's latent distance from a circle, but a
# generator retrained on it still drew no squares (docs/training.md, "Sessions 24-25").
SQUARE_HALF_SIDE = 0.9
# Circumradius of the (upward, equilateral) triangle per unit radius; equal area would need 1.55
# and stand a third taller than the circle, pushing every other shape off the walls.
TRIANGLE_CIRCUMRADIUS = 1.3
SQRT3 = math.sqrt(3.0)
# Area per squared radius, so `longvid eval` can read a size back from a mask.
SHAPE_AREA = {
    "circle": math.pi,
    "square": 4.0 * SQUARE_HALF_SIDE**2,
    "triangle": 3.0 * SQRT3 / 4.0 * TRIANGLE_CIRCUMRADIUS**2,
}
# Frame sizes per second: crosses the frame in about 4 s (2 px per frame at 128 px, 16 fps).
MOVE_SPEED = 0.25
BOUNCE_SPEED = 0.3
# Bounce headings stay this far from both axes, so each velocity component is >= 42% of the speed
# and bouncing can never be mistaken for moving along an axis.
BOUNCE_MIN_ANGLE = math.radians(25.0)
CIRCLE_PERIOD = 3.0  # seconds per turn: 120 degrees per second
ORBIT_RADIUS = 0.2  # of the frame size; with a large object the orbit still fits the frame
# Orbit radii tried in turn when the full orbit through the object's position would leave the frame.
ORBIT_SCALES = (1.0, 0.8, 0.6, 0.45)
ORBIT_CANDIDATES = 48  # angles tried for the object's place on a new orbit (7.5 degrees apart)
TWO_OBJECT_PROBABILITY = 0.25  # most clips show one object, whose attributes are easiest to learn
PLACEMENT_ATTEMPTS = 100  # rejection sampling of non-overlapping starting places
MIN_SEGMENT_SECONDS = 1.0  # shortest prompt segment in a sampled clip: long enough to judge motion
TWO_CHANGES_PROBABILITY = 0.4  # share of switches that change two attributes rather than one


class WorldError(LongvidError):
    """A scene spec, timeline or clip request outside the world's vocabulary or limits."""


def _check_value(attribute: str, value: object) -> None:
    if value not in VALUES[attribute]:
        allowed = ", ".join(str(v) for v in VALUES[attribute])
        raise WorldError(f"unknown {attribute} {value!r}: use one of {allowed}")


@dataclass(frozen=True)
class SceneSpec:
    """Everything a caption says about a scene; every field set (see `Attributes` for partial)."""

    shape: str = "circle"
    colour: str = "red"
    background: str = "black"
    motion: str = "still"
    size: str = "medium"
    count: int = 1

    def __post_init__(self) -> None:
        for name in ATTRIBUTES:
            _check_value(name, getattr(self, name))


@dataclass(frozen=True)
class Attributes:
    """What one prompt says: like `SceneSpec`, but None where the prompt names nothing."""

    shape: str | None = None
    colour: str | None = None
    background: str | None = None
    motion: str | None = None
    size: str | None = None
    count: int | None = None

    def named(self) -> dict[str, str | int]:
        """The attributes the prompt names, {attribute: value}."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def complete(self, base: SceneSpec) -> SceneSpec:
        """A full spec: these attributes over `base`."""
        return replace(base, **self.named())


def random_spec(rng: np.random.Generator, count: int | None = None) -> SceneSpec:
    """A uniformly drawn spec; `count` None draws 2 objects with TWO_OBJECT_PROBABILITY."""
    if count is None:
        count = 2 if rng.random() < TWO_OBJECT_PROBABILITY else 1
    values = {name: VALUES[name][rng.integers(len(VALUES[name]))] for name in ATTRIBUTES if name != "count"}
    return SceneSpec(count=count, **values)


# --- scene state ---------------------------------------------------------------------------------


def frame_shape(size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from an int (square) or an (H, W) pair."""
    height, width = (size, size) if isinstance(size, (int, np.integer)) else size
    if height < 8 or width < 8:
        raise WorldError(f"frame size {height}x{width} is too small: use at least 8x8 pixels")
    return int(height), int(width)


def object_radius(size: str, unit: float) -> float:
    """Radius in pixels of an object of size class `size` in a frame of size `unit` = min(H, W)."""
    return SIZE_RADIUS[size] * unit


def shape_extents(shape: str, radius: float) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) reach of a shape from its centroid, in pixels."""
    if shape == "circle":
        return radius, radius, radius, radius
    if shape == "square":
        h = SQUARE_HALF_SIDE * radius
        return h, h, h, h
    big = TRIANGLE_CIRCUMRADIUS * radius
    half_width = big * SQRT3 / 2.0
    return half_width, half_width, big, big / 2.0


def _walls(size: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi): the box of centroid positions, (2,) each as (x, y), shared by all shapes of `size`."""
    radius = object_radius(size, min(height, width))
    reach = np.max([shape_extents(shape, radius) for shape in SHAPES], axis=0)  # (4,)
    lo = np.array([reach[0], reach[2]])
    hi = np.array([width - reach[1], height - reach[3]])
    return lo, hi


class Scene:
    """Moving state of one scene. `step()` advances one frame; `switch(spec)` applies a new spec
    mid-stream, keeping positions (and velocities where the motion kind allows).

    positions, velocities: (K, 2) float64, (x, y) in pixels and pixels per frame; K = spec.count.
    Circling objects also carry orbit centres (K, 2), angles (K,), radii (K,) and senses (K,) +-1.
    """

    def __init__(self, spec: SceneSpec, rng: np.random.Generator, size: int | tuple[int, int] = DEFAULT_SIZE):
        self.height, self.width = frame_shape(size)
        self.unit = float(min(self.height, self.width))
        self.rng = rng
        self.spec = spec
        self.omega = 2.0 * math.pi / (CIRCLE_PERIOD * FPS)  # radians per frame
        k = spec.count
        self.positions = np.zeros((k, 2))
        self.velocities = np.zeros((k, 2))
        self.orbit_centres = np.zeros((k, 2))
        self.orbit_angles = np.zeros(k)
        self.orbit_radii = np.zeros(k)
        self.orbit_senses = np.ones(k)
        if spec.motion == "circling":
            self._place_on_shared_orbit()
        else:
            self.positions = self._free_places(k, np.empty((0, 2)))
            self._start_motion(range(k), previous=None)

    # -- placement ---------------------------------------------------------------------------------

    def walls(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) (2,) each: the box the objects' centroids stay in."""
        return _walls(self.spec.size, self.height, self.width)

    def _free_places(self, k: int, taken: np.ndarray) -> np.ndarray:
        """k random places inside the walls, apart from each other and from `taken` (n, 2)."""
        lo, hi = self.walls()
        reach = object_radius(self.spec.size, self.unit) * TRIANGLE_CIRCUMRADIUS
        axis = _motion_axis(self.spec.motion)
        places = self.rng.uniform(lo, hi, size=(k, 2))
        for _ in range(PLACEMENT_ATTEMPTS):
            everyone = np.concatenate([taken, places])
            gaps = np.abs(everyone[:, None] - everyone[None])  # (n, n, 2)
            # Objects sliding along one axis must sit in different lanes or they would overlap
            # at a wrap; others only need to start apart.
            apart = gaps[..., 1 - axis] if axis is not None else np.linalg.norm(gaps, axis=-1)
            np.fill_diagonal(apart, np.inf)
            if apart.min() >= 2.0 * reach:
                break
            places = self.rng.uniform(lo, hi, size=(k, 2))
        return places

    def _place_on_shared_orbit(self) -> None:
        """Fresh circling scene: one orbit, objects evenly spaced on it (never overlapping)."""
        lo, hi = self.walls()
        radius = ORBIT_RADIUS * self.unit
        centre = self.rng.uniform(lo + radius, hi - radius)
        start = self.rng.uniform(0.0, 2.0 * math.pi)
        k = self.spec.count
        self.orbit_centres[:] = centre
        self.orbit_angles[:] = start + 2.0 * math.pi * np.arange(k) / k
        self.orbit_radii[:] = radius
        self.orbit_senses[:] = self.rng.choice([-1.0, 1.0])
        self._update_orbit_state()

    # -- motion ------------------------------------------------------------------------------------

    def _start_motion(self, objects: Sequence[int] | range, previous: np.ndarray | None) -> None:
        """Set the velocity (or orbit) of `objects` for the current motion, continuing `previous`
        velocities (K, 2) where the motion kind allows."""
        motion = self.spec.motion
        speed_unit = self.unit / FPS
        for k in objects:
            before = None if previous is None or k >= len(previous) else previous[k]
            if motion in AXIS_MOTIONS:
                self.velocities[k] = np.array(AXIS_MOTIONS[motion]) * MOVE_SPEED * speed_unit
            elif motion == "bouncing":
                self.velocities[k] = self._bounce_velocity(before) * BOUNCE_SPEED * speed_unit
            elif motion == "circling":
                self._plan_orbit(k, before)
            else:
                self.velocities[k] = 0.0

    def _bounce_velocity(self, before: np.ndarray | None) -> np.ndarray:
        """Unit diagonal heading: the previous one clamped away from the axes, or a random one."""
        signs = self.rng.choice([-1.0, 1.0], size=2)
        angle = self.rng.uniform(BOUNCE_MIN_ANGLE, math.pi / 2 - BOUNCE_MIN_ANGLE)
        if before is not None and np.hypot(*before) > 0:
            signs = np.where(before != 0, np.sign(before), signs)
            angle = float(np.clip(math.atan2(abs(before[1]), abs(before[0])),
                                  BOUNCE_MIN_ANGLE, math.pi / 2 - BOUNCE_MIN_ANGLE))
        return signs * np.array([math.cos(angle), math.sin(angle)])

    def _plan_orbit(self, k: int, before: np.ndarray | None) -> None:
        """Put object k on an orbit through its current position, inside the walls, heading as
        close as possible to its previous velocity."""
        lo, hi = self.walls()
        here = self.positions[k]
        thetas = np.arange(ORBIT_CANDIDATES) * (2.0 * math.pi / ORBIT_CANDIDATES)
        rays = np.stack([np.cos(thetas), np.sin(thetas)], axis=1)  # (N, 2): centre -> object
        for scale in ORBIT_SCALES:
            radius = ORBIT_RADIUS * self.unit * scale
            centres = here - radius * rays
            fits = np.all((centres >= lo + radius) & (centres <= hi - radius), axis=1)
            if not fits.any():
                continue
            # The tangent of sense +1 at theta is (-sin, cos); its alignment with the old heading.
            if before is not None and np.hypot(*before) > 0:
                align = (-rays[:, 1] * before[0] + rays[:, 0] * before[1]) / np.hypot(*before)
            else:
                align = self.rng.uniform(-1.0, 1.0, size=len(thetas))
            score = np.where(fits, np.abs(align), -np.inf)
            best = int(np.argmax(score))
            self.orbit_centres[k] = centres[best]
            self.orbit_angles[k] = thetas[best]
            self.orbit_radii[k] = radius
            self.orbit_senses[k] = 1.0 if align[best] >= 0 else -1.0
            self._update_orbit_state([k])
            return
        # Wedged in a corner (about 1 switch in 1000): the smallest orbit as close as it gets;
        # the object steps onto it, a jump of a few pixels.
        radius = ORBIT_RADIUS * self.unit * ORBIT_SCALES[-1]
        centre = np.clip(here, lo + radius, hi - radius)
        offset = here - centre
        angle = math.atan2(offset[1], offset[0]) if np.hypot(*offset) > 0 else self.rng.uniform(0, 2 * math.pi)
        self.orbit_centres[k] = centre
        self.orbit_angles[k] = angle
        self.orbit_radii[k] = radius
        self.orbit_senses[k] = self.rng.choice([-1.0, 1.0])
        self._update_orbit_state([k])

    def _update_orbit_state(self, objects: Sequence[int] | slice = slice(None)) -> None:
        """Positions and velocities of circling `objects` from their orbits."""
        angles = self.orbit_angles[objects]
        rays = np.stack([np.cos(angles), np.sin(angles)], axis=-1)  # (k, 2)
        radii = self.orbit_radii[objects][..., None]
        self.positions[objects] = self.orbit_centres[objects] + radii * rays
        tangent = np.stack([-rays[..., 1], rays[..., 0]], axis=-1)
        self.velocities[objects] = (self.orbit_senses[objects][..., None] * radii * self.omega) * tangent

    def step(self) -> None:
        """Advance one frame."""
        motion = self.spec.motion
        if motion == "still":
            return
        if motion == "circling":
            self.orbit_angles = self.orbit_angles + self.orbit_senses * self.omega
            self._update_orbit_state()
            return
        lo, hi = self.walls()
        moved = self.positions + self.velocities
        if motion in AXIS_MOTIONS:
            axis = _motion_axis(motion)
            span = hi[axis] - lo[axis]
            moved[:, axis] = lo[axis] + np.mod(moved[:, axis] - lo[axis], span)  # re-enter
        else:  # bouncing: mirror off each wall
            below, above = moved < lo, moved > hi
            moved = np.where(below, 2.0 * lo - moved, np.where(above, 2.0 * hi - moved, moved))
            self.velocities = np.where(below | above, -self.velocities, self.velocities)
        self.positions = moved

    def switch(self, spec: SceneSpec) -> None:
        """Apply a new spec mid-stream: the scene carries on from where it is."""
        old = self.spec
        if spec == old:
            return
        self.spec = spec
        previous = self.velocities.copy()
        restart: list[int] = []
        if spec.count < old.count:
            keep = slice(0, spec.count)
            self.positions, self.velocities = self.positions[keep], self.velocities[keep]
            self.orbit_centres, self.orbit_angles = self.orbit_centres[keep], self.orbit_angles[keep]
            self.orbit_radii, self.orbit_senses = self.orbit_radii[keep], self.orbit_senses[keep]
        elif spec.count > old.count:
            extra = spec.count - old.count
            self.positions = np.concatenate([self.positions, self._free_places(extra, self.positions)])
            self.velocities = np.concatenate([self.velocities, np.zeros((extra, 2))])
            self.orbit_centres = np.concatenate([self.orbit_centres, np.zeros((extra, 2))])
            self.orbit_angles = np.concatenate([self.orbit_angles, np.zeros(extra)])
            self.orbit_radii = np.concatenate([self.orbit_radii, np.zeros(extra)])
            self.orbit_senses = np.concatenate([self.orbit_senses, np.ones(extra)])
            restart += list(range(old.count, spec.count))
        if spec.size != old.size:
            lo, hi = self.walls()
            self.positions = np.clip(self.positions, lo, hi)
        if spec.motion != old.motion or (spec.motion == "circling" and spec.size != old.size):
            restart = list(range(spec.count))
        self._start_motion(sorted(set(restart)), previous)


def _motion_axis(motion: str) -> int | None:
    """0 for left/right, 1 for up/down, None otherwise."""
    if motion not in AXIS_MOTIONS:
        return None
    return 0 if AXIS_MOTIONS[motion][0] != 0 else 1


# --- rendering -----------------------------------------------------------------------------------


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Signed distance in pixels (negative inside) of offsets from the centroid, broadcast."""
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - radius
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - SQUARE_HALF_SIDE * radius
    # Upward equilateral triangle: the largest of the three edge distances (outward normals
    # (0, 1) and (+-sqrt3/2, -1/2)), less the inradius. Exact near edges, slightly round corners.
    inradius = TRIANGLE_CIRCUMRADIUS * radius / 2.0
    slanted = np.abs(dx) * (SQRT3 / 2.0) - dy * 0.5
    return np.maximum(dy, slanted) - inradius


def _draw_object(out: np.ndarray, shape: str, radius: float, colour: np.ndarray, centre: np.ndarray) -> None:
    """Blend one anti-aliased object into `out` (H, W, 3) uint8 in place."""
    height, width = out.shape[:2]
    left, right, top, bottom = shape_extents(shape, radius)
    x0, x1 = max(0, int(centre[0] - left) - 1), min(width, int(centre[0] + right) + 2)
    y0, y1 = max(0, int(centre[1] - top) - 1), min(height, int(centre[1] + bottom) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - np.float32(centre[0]))[None, :]  # (1, w)
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - np.float32(centre[1]))[:, None]  # (h, 1)
    coverage = np.clip(0.5 - _signed_distance(shape, dx, dy, radius), 0.0, 1.0)[..., None]  # (h, w, 1)
    patch = out[y0:y1, x0:x1].astype(np.float32)
    # Exact colour where coverage is 1, exact background where it is 0.
    out[y0:y1, x0:x1] = np.rint(patch + coverage * (colour - patch)).astype(np.uint8)


_PALETTE = {name: np.array(rgb, dtype=np.float32) for name, rgb in COLOURS.items()}


def draw(out: np.ndarray, spec: SceneSpec, positions: np.ndarray) -> np.ndarray:
    """Render `spec` with objects at `positions` (K, 2) into `out` (H, W, 3) uint8; returns out."""
    out[...] = BACKGROUNDS[spec.background]
    radius = object_radius(spec.size, min(out.shape[:2]))
    for centre in positions:
        _draw_object(out, spec.shape, radius, _PALETTE[spec.colour], centre)
    return out


def render(scene: Scene) -> np.ndarray:
    """The scene's current frame, (H, W, 3) uint8 RGB."""
    return draw(np.empty((scene.height, scene.width, 3), np.uint8), scene.spec, scene.positions)


# --- clips ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipTruth:
    """Ground truth of a clip.

    specs, starts: one per segment (the spec in force and its first frame).
    segment: (F,) int, the segment of each frame.
    positions, velocities: (F, MAX_OBJECTS, 2) float32, (x, y) pixels and pixels per frame at each
    frame; NaN rows where the scene has fewer objects.
    """

    specs: list[SceneSpec]
    starts: list[int]
    segment: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray

    def spec_at(self, frame: int) -> SceneSpec:
        return self.specs[int(self.segment[frame])]


SpecTimeline = Sequence[tuple[int, SceneSpec]]


def _as_timeline(spec: SceneSpec | SpecTimeline) -> list[tuple[int, SceneSpec]]:
    if isinstance(spec, SceneSpec):
        return [(0, spec)]
    timeline = [(int(f), s) for f, s in spec]
    if not timeline or timeline[0][0] != 0:
        raise WorldError("a spec timeline must start at frame 0: put the first spec at (0, spec)")
    for (a, _), (b, _) in zip(timeline, timeline[1:]):
        if b <= a:
            raise WorldError(f"spec timeline frames must increase, got {a} then {b}: sort the timeline")
    return timeline


def make_clip(
    spec: SceneSpec | SpecTimeline,
    num_frames: int,
    seed: int | np.random.Generator,
    size: int | tuple[int, int] = DEFAULT_SIZE,
) -> tuple[np.ndarray, ClipTruth]:
    """Render a clip of one spec, or of a timeline [(first frame, spec), ...] that switches
    mid-clip (the scene carries on across each switch).

    Returns frames (F, H, W, 3) uint8 and the per-frame `ClipTruth`.
    """
    if num_frames < 1:
        raise WorldError(f"num_frames must be at least 1, got {num_frames}")
    timeline = _as_timeline(spec)
    rng = np.random.default_rng(seed)
    scene = Scene(timeline[0][1], rng, size)
    frames = np.empty((num_frames, scene.height, scene.width, 3), np.uint8)
    positions = np.full((num_frames, MAX_OBJECTS, 2), np.nan, np.float32)
    velocities = np.full((num_frames, MAX_OBJECTS, 2), np.nan, np.float32)
    segment = np.zeros(num_frames, np.int64)
    current = 0
    for f in range(num_frames):
        while current + 1 < len(timeline) and timeline[current + 1][0] <= f:
            current += 1
            scene.switch(timeline[current][1])
        draw(frames[f], scene.spec, scene.positions)
        k = scene.spec.count
        positions[f, :k] = scene.positions
        velocities[f, :k] = scene.velocities
        segment[f] = current
        scene.step()
    truth = ClipTruth([s for _, s in timeline], [f for f, _ in timeline], segment, positions, velocities)
    return frames, truth


@dataclass(frozen=True)
class SwitchingClip:
    """A clip whose caption changes mid-stream: frames (F, H, W, 3) uint8, truth, and the
    timeline [(first frame, caption), ...] a user would have typed."""

    frames: np.ndarray
    truth: ClipTruth
    timeline: list[tuple[int, str]]


def _switch_frames(rng: np.random.Generator, num_frames: int, num_switches: int, min_segment: int) -> list[int]:
    """Segment starts [0, s1, ...] with every segment at least `min_segment` frames long."""
    slack = num_frames - (num_switches + 1) * min_segment
    cuts = np.sort(rng.integers(0, slack + 1, size=num_switches))
    return [0] + [int((i + 1) * min_segment + c) for i, c in enumerate(cuts)]


def switched_spec(rng: np.random.Generator, spec: SceneSpec, switchable: Sequence[str] = SWITCHABLE) -> SceneSpec:
    """`spec` with one or two of the `switchable` attributes changed to a different value."""
    n = 2 if len(switchable) > 1 and rng.random() < TWO_CHANGES_PROBABILITY else 1
    changes = {}
    for name in rng.choice(list(switchable), size=n, replace=False):
        _check_attribute_name(str(name))
        others = [v for v in VALUES[name] if v != getattr(spec, name)]
        changes[str(name)] = others[rng.integers(len(others))]
    return replace(spec, **changes)


def _check_attribute_name(name: str) -> None:
    if name not in ATTRIBUTES:
        raise WorldError(f"unknown attribute {name!r}: use one of {', '.join(ATTRIBUTES)}")


def sample_switching_clip(
    rng: np.random.Generator,
    num_frames: int,
    num_switches: int,
    size: int | tuple[int, int] = DEFAULT_SIZE,
    split: str = "train",
    switchable: Sequence[str] = SWITCHABLE,
    count: int | None = None,
    min_segment_frames: int | None = None,
) -> SwitchingClip:
    """A random clip with `num_switches` caption changes, each altering one or two attributes.

    Segments are at least `min_segment_frames` long (default MIN_SEGMENT_SECONDS); `count` fixes
    the number of objects (None draws it); captions come from the `split` phrasings.
    """
    min_segment = min_segment_frames or round(MIN_SEGMENT_SECONDS * FPS)
    if num_switches < 0 or (num_switches + 1) * min_segment > num_frames:
        raise WorldError(
            f"{num_switches} switches need at least {(num_switches + 1) * min_segment} frames "
            f"(segments of {min_segment}), got {num_frames}: make the clip longer or switch less"
        )
    for name in switchable:
        _check_attribute_name(name)
    starts = _switch_frames(rng, num_frames, num_switches, min_segment)
    specs = [random_spec(rng, count)]
    for _ in range(num_switches):
        specs.append(switched_spec(rng, specs[-1], switchable))
    captions = [caption(s, rng, split) for s in specs]
    frames, truth = make_clip(list(zip(starts, specs)), num_frames, rng, size)
    return SwitchingClip(frames, truth, list(zip(starts, captions)))


# --- captions ------------------------------------------------------------------------------------

SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Words:
    """Phrasings of one vocabulary value; `heldout` ones appear only in split="heldout" captions
    (which use them whenever there are any), so a model can be tested on words it never saw."""

    train: tuple
    heldout: tuple = ()

    def pick(self, rng: np.random.Generator, split: str):
        pool = self.heldout if split == "heldout" and self.heldout else self.train
        return pool[rng.integers(len(pool))]


COLOUR_WORDS = {
    "red": Words(("red", "crimson"), ("scarlet", "ruby")),
    "green": Words(("green", "emerald"), ("grass green", "jade")),
    "blue": Words(("blue", "cobalt"), ("sapphire", "royal blue")),
    "yellow": Words(("yellow", "golden"), ("lemon", "canary yellow")),
    "white": Words(("white", "snow white"), ("ivory", "pearl")),
    "orange": Words(("orange", "tangerine"), ("amber", "pumpkin")),
    "purple": Words(("purple", "violet"), ("plum", "amethyst")),
    "cyan": Words(("cyan", "teal"), ("aqua", "turquoise")),
}
BACKGROUND_WORDS = {
    "black": Words(("black", "dark"), ("jet black", "pitch black")),
    "gray": Words(("gray", "grey"), ("slate", "charcoal")),
    "navy": Words(("navy", "dark blue"), ("midnight blue", "navy blue")),
    "dark green": Words(("dark green", "forest green"), ("deep green", "pine green")),
}
BACKGROUND_NOUNS = Words(("background", "backdrop"), ("canvas", "surface"))
NEEDS_NOUN = {"dark"}  # "on dark" reads badly: always "a dark background"
BARE_BACKGROUND_PROBABILITY = 0.5  # "on black" as often as "on a black background"
SHAPE_WORDS = {  # (singular, plural)
    "circle": Words((("circle", "circles"), ("ball", "balls"), ("disc", "discs")),
                    (("orb", "orbs"), ("disk", "disks"), ("dot", "dots"))),
    "square": Words((("square", "squares"), ("box", "boxes")), (("block", "blocks"), ("tile", "tiles"))),
    "triangle": Words((("triangle", "triangles"),),
                      (("triangular shape", "triangular shapes"), ("three-sided shape", "three-sided shapes"))),
}
SIZE_WORDS = {
    "small": Words(("small", "little"), ("tiny", "miniature")),
    "medium": Words(("",)),  # never said: a caption naming no size means medium
    "large": Words(("large", "big"), ("huge", "giant")),
}
ONE_WORDS = Words(("a",), ("a", "one", "a single"))  # "a" becomes "an" before a vowel
TWO_WORDS = Words(("two",), ("a pair of", "twin"))

_MOVE_VERBS = Words(
    (("moving", "moves", "move"), ("drifting", "drifts", "drift"), ("sliding", "slides", "slide"),
     ("travelling", "travels", "travel")),
    (("gliding", "glides", "glide"), ("heading", "heads", "head")),
)
_DIRECTIONS = {
    "left": Words(("left", "to the left", "leftward"), ("leftwards", "from right to left")),
    "right": Words(("right", "to the right", "rightward"), ("rightwards", "from left to right")),
    "up": Words(("up", "upward"), ("upwards", "towards the top")),
    "down": Words(("down", "downward"), ("downwards", "towards the bottom")),
}
# Verbs that carry their own direction; (gerund, third person singular, plural).
_DIRECTED_VERBS = {
    "up": Words((("rising", "rises", "rise"),), (("climbing", "climbs", "climb"),)),
    "down": Words((("falling", "falls", "fall"),), (("sinking", "sinks", "sink"),)),
}
DIRECTED_VERB_PROBABILITY = 0.3
MOTION_WORDS = {
    "bouncing": Words(
        (("bouncing", "bounces", "bounce"), ("bouncing around", "bounces around", "bounce around"),
         ("bouncing off the walls", "bounces off the walls", "bounce off the walls")),
        (("ricocheting around", "ricochets around", "ricochet around"),
         ("rebounding off the edges", "rebounds off the edges", "rebound off the edges")),
    ),
    "circling": Words(
        (("circling", "circles around", "circle around"),
         ("moving in a circle", "moves in a circle", "move in a circle"),
         ("going round in circles", "goes round in circles", "go round in circles")),
        (("orbiting", "orbits", "orbit"), ("looping around", "loops around", "loop around")),
    ),
    "still": Words(
        (("sitting still", "sits still", "sit still"), ("staying still", "stays still", "stay still"),
         ("not moving", "does not move", "do not move")),
        (("resting motionless", "rests motionless", "rest motionless"),
         ("standing stationary", "stands stationary", "stand stationary")),
    ),
}
# {np}: noun phrase with article or number; {ing}: gerund motion; {fin}: finite motion agreeing
# with the number; {bg}: background, bare or with a noun; {bgn}: background with article and noun.
TEMPLATES = {
    "train": (
        "{np} {ing} on {bg}",
        "{np} {fin} on {bg}",
        "{np} {ing} against {bgn}",
        "on {bgn}, {np} {fin}",
        "{bgn} with {np} {ing}",
        "{np}, {ing}, over {bg}",
    ),
    "heldout": (
        "{ing} over {bgn}: {np}",
        "against {bgn}, {exist} {np} {ing}",
        "{np} in front of {bgn}, {ing}",
        "footage of {np} that {fin}, set on {bg}",
    ),
}
HELDOUT_NOUN_PHRASE_PROBABILITY = 0.5  # held-out captions sometimes say "a large ball in crimson"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise WorldError(f"unknown caption split {split!r}: use 'train' or 'heldout'")


def _with_article(article: str, rest: str) -> str:
    if article == "a" and rest[:1] in "aeiou":
        article = "an"
    return f"{article} {rest}"


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _motion_forms(motion: str, rng: np.random.Generator, split: str) -> tuple[str, str, str]:
    """(gerund, singular, plural) phrasings of `motion`."""
    if motion in _DIRECTED_VERBS and rng.random() < DIRECTED_VERB_PROBABILITY:
        return _DIRECTED_VERBS[motion].pick(rng, split)
    if motion in _DIRECTIONS:
        direction = _DIRECTIONS[motion].pick(rng, split)
        return tuple(f"{verb} {direction}" for verb in _MOVE_VERBS.pick(rng, split))  # type: ignore[return-value]
    return MOTION_WORDS[motion].pick(rng, split)


def caption(spec: SceneSpec, rng: np.random.Generator, split: str = "train") -> str:
    """A random phrasing of `spec`, e.g. "a large crimson circle bounces on a dark background".

    split="train" uses only training templates and synonyms; split="heldout" uses held-out
    templates and, wherever an attribute has them, held-out synonyms and word orders.
    """
    _check_split(split)
    plural = spec.count == 2
    shape = SHAPE_WORDS[spec.shape].pick(rng, split)[1 if plural else 0]
    colour = COLOUR_WORDS[spec.colour].pick(rng, split)
    size = SIZE_WORDS[spec.size].pick(rng, split)
    if split == "heldout" and rng.random() < HELDOUT_NOUN_PHRASE_PROBABILITY:
        body = _join(size, shape, f"in {colour}")
    else:
        body = _join(size, colour, shape)
    if plural:
        noun_phrase = _join(TWO_WORDS.pick(rng, split), body)
    else:
        noun_phrase = _with_article(ONE_WORDS.pick(rng, split), body)
    gerund, singular, plural_verb = _motion_forms(spec.motion, rng, split)
    background = BACKGROUND_WORDS[spec.background].pick(rng, split)
    noun = BACKGROUND_NOUNS.pick(rng, split)
    with_noun = _with_article("a", f"{background} {noun}")
    bare_ok = background not in NEEDS_NOUN and rng.random() < BARE_BACKGROUND_PROBABILITY
    template = TEMPLATES[split][rng.integers(len(TEMPLATES[split]))]
    return template.format(
        np=noun_phrase,
        ing=gerund,
        fin=plural_verb if plural else singular,
        bg=background if bare_ok else with_noun,
        bgn=with_noun,
        exist="there are" if plural else "there is",
    )


# --- parsing -------------------------------------------------------------------------------------

# Parser-only phrasings (never in captions), on top of every caption word.
_EXTRA_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "background": {"black": ("jet-black", "pitch-black", "ebony"), "gray": ("ash gray", "ash grey", "silver gray"),
                   "navy": ("deep blue", "navy-blue"), "dark green": ("bottle green", "dark-green")},
    "size": {"small": ("smaller", "mini"), "medium": ("medium", "medium sized", "mid sized", "average sized",
                                                      "normal sized"),
             "large": ("larger", "enormous")},
}
# (phrase, number): adjectives say nothing of the number of objects.
_EXTRA_SHAPES: dict[str, tuple[tuple[str, int | None], ...]] = {
    "circle": (("circular", None), ("round", None), ("sphere", 1), ("spheres", 2)),
    "square": (("cube", 1), ("cubes", 2), ("square shaped", None)),
    "triangle": (("triangular", None),),
}
_MOTION_PHRASES = {
    "left": ("left", "leftward", "leftwards", "right to left", "westward"),
    "right": ("right", "rightward", "rightwards", "left to right", "eastward"),
    "up": ("up", "upward", "upwards", "rising", "rises", "rise", "climbing", "climbs", "climb", "ascending",
           "ascends", "towards the top", "toward the top", "to the top", "bottom to top"),
    "down": ("down", "downward", "downwards", "falling", "falls", "fall", "sinking", "sinks", "sink",
             "descending", "descends", "dropping", "drops", "towards the bottom", "toward the bottom",
             "to the bottom", "top to bottom"),
    "bouncing": ("bouncing", "bounces", "bounce", "bounced", "bouncy", "ricocheting", "ricochets", "ricochet",
                 "rebounding", "rebounds", "rebound"),
    "circling": ("circling", "orbiting", "orbits", "orbit", "in a circle", "in circles", "round in circles",
                 "around in circles", "in a loop", "looping", "loops", "loop", "round and round", "revolving",
                 "revolves", "revolve"),
    "still": ("still", "motionless", "stationary", "static", "unmoving", "not moving", "not move", "at rest",
              "stays put", "staying put", "stay put"),
}
_COUNT_PHRASES = {2: ("two", "2", "pair", "couple", "twin", "twins", "both"), 1: ("one", "1", "single", "lone")}
# A word that can be the verb "to circle" as well as the shape.
_CIRCLE_NOUNS = {("circle",), ("circles",)}
_BACKGROUND_NOUN_TOKENS = {"background", "backdrop", "backdrops", "backgrounds", "canvas", "surface", "wall",
                           "field", "sky", "scene", "setting"}


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[a-z0-9]+", text.lower()))


def _build_phrases() -> dict[tuple[str, ...], tuple[str, object]]:
    """{tokens: (attribute, value)}; shapes map to (shape, number), number None for adjectives."""
    table: dict[tuple[str, ...], tuple[str, object]] = {}

    def add(phrase: str, attribute: str, value: object) -> None:
        if phrase:
            table[_tokens(phrase)] = (attribute, value)

    for name, words in COLOUR_WORDS.items():
        for phrase in words.train + words.heldout:
            add(phrase, "colour", name)
    for name, words in BACKGROUND_WORDS.items():
        for phrase in words.train + words.heldout + _EXTRA_PHRASES["background"].get(name, ()):
            add(phrase, "background", name)
    for name, words in SHAPE_WORDS.items():
        for singular, plural in words.train + words.heldout:
            add(singular, "shape", (name, 1))
            add(plural, "shape", (name, 2))
        for phrase, number in _EXTRA_SHAPES[name]:
            add(phrase, "shape", (name, number))
    for name, words in SIZE_WORDS.items():
        for phrase in words.train + words.heldout + _EXTRA_PHRASES["size"].get(name, ()):
            add(phrase, "size", name)
    for count, phrases in _COUNT_PHRASES.items():
        for phrase in phrases:
            add(phrase, "count", count)
    for motion, phrases in _MOTION_PHRASES.items():
        for phrase in phrases:
            add(phrase, "motion", motion)
    return table


_PHRASES = _build_phrases()
_LONGEST_PHRASE = max(len(k) for k in _PHRASES)


@dataclass(frozen=True)
class _Match:
    start: int
    end: int
    attribute: str
    value: object
    tokens: tuple[str, ...]


def _scan(tokens: tuple[str, ...]) -> list[_Match]:
    """Longest phrase first, left to right; unknown words skipped."""
    matches, i = [], 0
    while i < len(tokens):
        for length in range(min(_LONGEST_PHRASE, len(tokens) - i), 0, -1):
            key = tokens[i:i + length]
            if key in _PHRASES:
                attribute, value = _PHRASES[key]
                matches.append(_Match(i, i + length, attribute, value, key))
                i += length
                break
        else:
            i += 1
    return matches


def _resolve(matches: list[_Match], tokens: tuple[str, ...]) -> list[_Match]:
    """Context rules for the few words that belong to two attributes."""
    resolved: list[_Match] = []
    for n, m in enumerate(matches):
        after = matches[n + 1] if n + 1 < len(matches) else None
        adjacent = after is not None and after.start == m.end
        if m.attribute == "background" and adjacent and after.attribute == "colour":
            continue  # "dark red": a shade of the object colour, not a background
        if m.attribute == "background" and adjacent and after.attribute in ("shape", "size"):
            # "a dark green ball": the object's colour, when the phrase names one of ours.
            named = [c for c in COLOURS if _tokens(c)[0] in m.tokens]
            if named:
                resolved.append(replace(m, attribute="colour", value=named[0]))
            continue
        if m.attribute == "colour" and m.end < len(tokens) and tokens[m.end] in _BACKGROUND_NOUN_TOKENS:
            continue  # "on a white background": a background outside the vocabulary
        if m.attribute == "shape" and m.tokens in _CIRCLE_NOUNS and any(r.attribute == "shape" for r in resolved):
            resolved.append(replace(m, attribute="motion", value="circling"))  # "a ball circles"
            continue
        resolved.append(m)
    return resolved


def parse_prompt(text: str) -> Attributes:
    """The attributes a prompt names, for any phrasing within the vocabulary (every caption
    synonym, held-out ones included, in any word order). Unknown words are ignored; an attribute
    the prompt does not name is None. The first mention wins, except that a real motion beats
    "still" ("still bouncing")."""
    tokens = _tokens(text)
    found: dict[str, object] = {}
    number = None
    for m in _resolve(_scan(tokens), tokens):
        if m.attribute == "shape":
            shape, plural = m.value  # type: ignore[misc]
            found.setdefault("shape", shape)
            if number is None and plural is not None:
                number = plural
        elif m.attribute == "motion" and found.get("motion") == "still" and m.value != "still":
            found["motion"] = m.value
        else:
            found.setdefault(m.attribute, m.value)
    if "count" not in found and number is not None:
        found["count"] = number
    return Attributes(**found)  # type: ignore[arg-type]
