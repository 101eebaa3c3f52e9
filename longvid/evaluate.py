"""`longvid eval`: how well a video follows its prompt timeline, measured from pixels only.

Each frame is analysed on its own (`detect_frame`): background colour from the border, object
mask by colour distance to it, object colour, shape from the mask's geometry, size, count and
centroids. Centroids are linked into tracks whose short trailing windows are judged for motion
(from the first full window on; an orbit drawn as a polygon, one side per latent frame, counts
as circling, see `classify_motion`). A video file is read in one pass that keeps no frames.
Everything is compared with the prompt active at each frame, read with the world's vocabulary
(`parse_prompt`); an attribute a prompt does not name is not judged. No learned model and no
ground truth: the same code scores the world's own clips (near perfect, see tests) and a model's.

Report (a JSON-ready dict, see `evaluate`):
- adherence: share of judged frames whose detection matches the prompt, per attribute, outside a
  grace period of GRACE_SECONDS after each switch (grace frames are reported apart);
- switches: latency (frames until the changed attributes hold for LATENCY_HOLD_SECONDS) and
  continuity (the object's jump across the switch over its ordinary step; a teleport is large).
  Motion latency includes the motion detector's own lag, about half of MOTION_WINDOW_SECONDS.
  A switch never read is "missed", unless it could not have been ("unmeasured": its prompt names
  nothing the detector reads, or its segment is shorter than GRACE_SECONDS plus the hold);
  a prompt whose first frame lies past the video's last is listed as not judged;
- freeze: runs of (almost) identical frames while the prompt asks for motion;
- drift: ten equal chunks, LV-Bench's VDE = sum_{i>=2} (N - i + 1) |m_i - m_1| / m_1 of the
  adherence, Laplacian-variance sharpness, edge sharpness and saturation; first vs last 10 s;
- flicker: mean absolute frame difference across block boundaries over that within blocks.

Thresholds are in frame sizes (min(H, W)) and seconds, so they hold at any resolution and fps.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from longvid.errors import LongvidError
from longvid.timeline import load_timeline, seconds_to_pixel_frame
from longvid.world import (
    ATTRIBUTES, AXIS_MOTIONS, BACKGROUNDS, COLOURS, SHAPE_AREA, SIZE_RADIUS, SIZES, Attributes, parse_prompt,
)

CORE_ATTRIBUTES = ("colour", "shape", "background", "motion")

# --- per-frame detection -------------------------------------------------------------------------

BORDER_PX = 2  # width of the border ring read for the background: survives a one-pixel seam
# RGB distances. World backgrounds are >= 85 apart and objects >= 130 from every background;
# codec noise is ~10, so these leave room for a model's imperfect colours.
BACKGROUND_MATCH_DIST = 60.0  # farther from every palette background: background unknown
COLOUR_MATCH_DIST = 70.0  # farther from every palette colour: colour unknown
FOREGROUND_DIST = 40.0  # a pixel this far from the background is object
CORE_SHARE = 0.75  # of the farthest pixel's distance: the object's core, not its blended rim
NOISE_DIST = 12.0  # soft coverage below this distance is noise, not anti-aliasing
MIN_OBJECT_AREA = 0.0015  # of H * W (25 px at 128): a small world triangle covers ~200 px
MIN_COMPONENT_SHARE = 0.15  # of the largest blob: smaller blobs are fragments, not a second object
MAX_TRACKED = 2  # the world shows one or two objects
TWO_TRACK_SHARE = 0.2  # two tracks when two blobs show in this share of frames (overlaps merge them)
CORNER_FRACTION = 0.15  # corner patches of the bounding box, as a share of its side
# (bounding-box fill, corner coverage) of the world's shapes: a circle fills pi/4 of its box and
# leaves the corners empty; a square fills all; an upward triangle fills half, its two base
# corners ~70% covered and its top corners empty.
SHAPE_PROTOTYPES = {"circle": (math.pi / 4, 0.05), "square": (1.0, 1.0), "triangle": (0.5, 0.35)}
# Size class boundaries: geometric means of neighbouring world radii (frame-size units).
_RADII = [SIZE_RADIUS[s] for s in SIZES]
SIZE_BOUNDARIES = [math.sqrt(a * b) for a, b in zip(_RADII, _RADII[1:])]
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma

# --- motion --------------------------------------------------------------------------------------

MOTION_WINDOW_SECONDS = 0.5  # trailing window judged per frame: 8 steps at 16 fps
STILL_MAX_SPEED = 0.04  # frame sizes per second; the slowest world motion is ~0.17, jitter ~0
# A step longer than this (frame sizes) that is not a wrap is a jump: left out of motion.
JUMP_FRACTION = 0.1
# A wrap leaves within this (frame sizes) of one edge and lands within it of the other; the world's
# widest gap is a large triangle re-entering against a circle-sized wall, ~0.065.
WRAP_EDGE_FRACTION = 0.1
MIN_VALID_STEPS = 0.5  # share of a window's steps that must be usable to judge it
CIRCLE_MIN_TURN_RATE = math.radians(40.0)  # per second; the world circles at 120, straight paths 0
CIRCLE_MIN_CONSISTENCY = 0.75  # share of turns that must be steady (see `classify_motion`)
# Faster than a turn per second is jitter at video frame rates (22 degrees per step at 16 fps).
CIRCLE_MAX_TURN_RATE = math.radians(360.0)
CIRCLE_MAX_SPREAD = 0.5  # median |turn - median turn| over |median turn|: world orbits turn evenly
# A turn below this rate (per second; 10 degrees per step at 16 fps) keeps the path straight. A
# straight path has at least MIN_STRAIGHT_SHARE of its turns so: a window with two reflections
# (a corner) still has half, random jitter ~15%.
STRAIGHT_TURN_RATE = math.radians(160.0)
MIN_STRAIGHT_SHARE = 0.4
AXIS_MAX_MINOR_RATIO = 0.25  # tan(14 deg); world bounces keep the minor component >= tan(25 deg)
AXIS_MIN_CONSISTENCY = 0.5  # |median| / median |.| of the major component: one direction, not both
CHORD_STEPS = 2  # headings are read over two steps (see `classify_motion`)
# A video codec that packs four frames into one latent frame (Wan's VAE and the built-in one) draws
# an orbit as a polygon with one side per latent frame: no turn inside a side, a latent frame's
# whole turn at its corner. Chords of ORBIT_CHORD_STEPS steps cross exactly one corner from every
# start, so they turn steadily along such a polygon, where two-step chords see turns of 0 and 15
# degrees in turn (read as bouncing before this second reading).
ORBIT_CHORD_STEPS = 4
ORBIT_MIN_REACH = 0.8  # least chord length over ORBIT_CHORD_STEPS typical steps (see classify_motion)
# Four-step chords also bend steadily through a reflection, so they count only away from the walls:
# a world object reflects with its box at most ~0.065 frame sizes from the frame's edge.
REFLECTION_EDGE_FRACTION = 0.07
HEADING_MIN_STEP = 0.25  # of the median step: shorter steps have no reliable heading

# --- switches, freeze, drift, flicker ------------------------------------------------------------

GRACE_SECONDS = 0.5  # after a switch, left out of adherence: the motion window must refill
LATENCY_HOLD_SECONDS = 0.25  # an attribute has switched once it holds this long
CONTINUITY_SEARCH_STEPS = 2  # the jump may land on the switch frame or the next one
MIN_ORDINARY_STEP = 0.005  # frame sizes: floor of the ordinary step, for still objects
TELEPORT_RATIO = 4.0  # jump over ordinary step above which a switch teleported the object...
TELEPORT_MIN_JUMP = 0.08  # ...if the jump is also this long (frame sizes; ~10 px at 128)
FREEZE_MAX_DIFF = 0.25  # mean |frame difference| (levels) below which two frames are identical
FREEZE_MIN_SECONDS = 0.5  # a frozen run this long while the prompt asks for motion is a freeze
DRIFT_CHUNKS = 10  # LV-Bench splits a video in ten equal chunks
FIRST_LAST_SECONDS = 10.0  # first-vs-last comparison window (halved on videos under 20 s)


# --- frames and videos ---------------------------------------------------------------------------


def read_video(path: str | Path) -> Iterator[np.ndarray]:
    """Decode a video file with PyAV: an iterator of (H, W, 3) uint8 RGB frames, up to the first
    damaged packet."""
    import av

    path = Path(path)
    if not path.is_file():
        raise LongvidError(f"video not found: {path}: pass the path of an existing video file")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise LongvidError(f"cannot read video {path} ({exc}): check that it is a complete video file") from exc
    if not container.streams.video:
        container.close()
        raise LongvidError(f"{path} has no video stream: pass a video file, not audio or an image")

    def frames() -> Iterator[np.ndarray]:
        # A video cut off mid-write (a killed run) ends in a damaged packet: stop there, as a
        # player does; the frames before it are the video.
        with container:
            try:
                for frame in container.decode(video=0):
                    yield frame.to_ndarray(format="rgb24")
            except av.error.FFmpegError:
                return

    return frames()


def video_fps(path: str | Path) -> float:
    """Frame rate of a video file's first video stream."""
    import av

    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else 0.0


def timeline_prompts(timeline) -> list[tuple[int, str]]:
    """A `Timeline`'s prompts as [(first pixel frame, text)]: the frame the user asked the switch
    for (the first frame shown at or after its time), not the block boundary where the engine
    applies it, so switch latency counts the engine's block rounding too."""
    return [(seconds_to_pixel_frame(p.start_seconds, timeline.fps), p.text) for p in timeline.prompts]


def evaluate_video(path: str | Path, timeline_file: str | Path, block_frames: int | None = None,
                   temporal_factor: int = 4, **timeline_options) -> dict:
    """`evaluate` a video file against a YAML / JSONL timeline file (`longvid eval`)."""
    frames = read_video(path)
    first = next(frames, None)  # checks the file first
    fps = video_fps(path)
    if first is None:
        raise LongvidError(f"{path} has no frames: check that generation or decoding produced some")
    if fps <= 0 or abs(fps - round(fps)) > 1e-3:
        raise LongvidError(f"{path} has frame rate {fps:g}: longvid eval needs a whole number of frames per second")
    # The stream's first block decodes to temporal_factor - 1 frames fewer (its first latent frame
    # is one pixel frame), so every later block boundary sits that much earlier.
    first_block = None
    if block_frames is not None and block_frames >= temporal_factor:
        first_block = block_frames - (temporal_factor - 1)
    _check_options(round(fps), block_frames, first_block)
    # One pass that keeps what each frame reads as, not the frames: a long 832x480 video would
    # not fit in memory. The timeline is checked against the length found.
    readings = _read(itertools.chain([first], frames))
    timeline = load_timeline(Path(timeline_file), fps=round(fps), temporal_factor=temporal_factor,
                             seconds=len(readings.detections) / round(fps), **timeline_options)
    report = _score(readings, timeline_prompts(timeline), round(fps), block_frames, first_block)
    report["video"], report["timeline"] = str(path), str(timeline_file)
    return report


def _as_image(frame: object, index: int) -> np.ndarray:
    image = getattr(frame, "image", frame)  # a longvid.frames.Frame or a bare array
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise LongvidError(
            f"frame {index} is {image.dtype} {image.shape}, expected uint8 RGB (H, W, 3): "
            "convert with (x * 255).round().astype(np.uint8) and drop any alpha channel"
        )
    return image


# --- per-frame detection -------------------------------------------------------------------------


@dataclass
class ObjectDetection:
    """One object blob. centroid (x, y) px (coverage-weighted, sub-pixel); area: covered pixels;
    box: (x0, y0, x1, y1) integer bounds, exclusive; width/height: sub-pixel extent;
    fill, corners: shape features; shape: nearest prototype."""

    centroid: np.ndarray
    area: float
    box: tuple[int, int, int, int]
    width: float
    height: float
    fill: float
    corners: float
    shape: str


@dataclass
class FrameDetection:
    """What one frame shows. Names are None when nothing in the palette is close enough."""

    background_rgb: np.ndarray
    background: str | None
    colour_rgb: np.ndarray | None = None
    colour: str | None = None
    objects: list[ObjectDetection] = field(default_factory=list)  # largest first
    size: str | None = None
    sharpness: float = 0.0
    edge_sharpness: float = float("nan")
    saturation: float = 0.0

    @property
    def shape(self) -> str | None:
        return self.objects[0].shape if self.objects else None

    @property
    def count(self) -> int:
        return len(self.objects)


def _nearest(palette: dict[str, tuple[int, int, int]], rgb: np.ndarray, limit: float) -> str | None:
    names = list(palette)
    dists = np.linalg.norm(np.array([palette[n] for n in names], np.float32) - rgb, axis=1)
    best = int(np.argmin(dists))
    return names[best] if dists[best] <= limit else None


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected labels of a boolean (H, W) mask: (labels (H, W) int32, 0 = none, count)."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # same row-major order as the starts
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Runs of consecutive rows overlap -> same component. Two pointers over row-sorted runs.
    row_first = np.searchsorted(rows, np.arange(height + 1))
    for r in range(1, height):
        a, a_end = row_first[r - 1], row_first[r]
        b, b_end = row_first[r], row_first[r + 1]
        while a < a_end and b < b_end:
            if starts[a] < ends[b] and starts[b] < ends[a]:
                ra, rb = root(a), root(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            if ends[a] < ends[b]:
                a += 1
            else:
                b += 1
    labels = np.zeros((height, width), np.int32)
    ids: dict[int, int] = {}
    for i in range(len(rows)):
        labels[rows[i], starts[i]:ends[i]] = ids.setdefault(root(i), len(ids) + 1)
    return labels, len(ids)


def _object_features(coverage: np.ndarray, labels: np.ndarray, label: int) -> ObjectDetection:
    """Geometry of blob `label` from the soft coverage (H, W) around it."""
    height, width = coverage.shape
    ys, xs = np.nonzero(labels == label)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    # One pixel of margin keeps the anti-aliased rim; other blobs' pixels are left out.
    mx0, mx1, my0, my1 = max(0, x0 - 1), min(width, x1 + 1), max(0, y0 - 1), min(height, y1 + 1)
    window = labels[my0:my1, mx0:mx1]
    alpha = np.where((window == label) | (window == 0), coverage[my0:my1, mx0:mx1], 0.0)  # (h, w)
    area = float(alpha.sum())
    gy, gx = np.mgrid[my0:my1, mx0:mx1]
    centroid = np.array([(alpha * (gx + 0.5)).sum(), (alpha * (gy + 0.5)).sum()]) / max(area, 1e-6)
    # Sub-pixel extent: a column (row) counts by its best coverage.
    obj_width = float(alpha.max(axis=0).sum())
    obj_height = float(alpha.max(axis=1).sum())
    fill = area / max(obj_width * obj_height, 1e-6)
    box = alpha[y0 - my0:y1 - my0, x0 - mx0:x1 - mx0]
    k = max(1, int(CORNER_FRACTION * min(box.shape)))
    corners = float(np.mean([box[:k, :k].mean(), box[:k, -k:].mean(), box[-k:, :k].mean(), box[-k:, -k:].mean()]))
    shape = min(SHAPE_PROTOTYPES, key=lambda s: math.dist((fill, corners), SHAPE_PROTOTYPES[s]))
    return ObjectDetection(centroid, area, (x0, y0, x1, y1), obj_width, obj_height, fill, corners, shape)


def _image_statistics(image: np.ndarray) -> tuple[float, float, float]:
    """(Laplacian variance, edge sharpness, mean HSV saturation) of (H, W, 3) float32 RGB.

    Edge sharpness sqrt(mean lap^2 / mean |grad|^2) ~ 1 / blur width whatever the contrast and the
    amount of edge in view, so it drifts with blur alone; NaN on a flat frame."""
    gray = image @ GRAY_WEIGHTS
    centre = gray[1:-1, 1:-1]
    lap = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4.0 * centre
    grad2 = ((gray[1:-1, 2:] - gray[1:-1, :-2]) ** 2 + (gray[2:, 1:-1] - gray[:-2, 1:-1]) ** 2) / 4.0
    mean_grad2 = float(grad2.mean())
    edge = math.sqrt(float((lap * lap).mean()) / mean_grad2) if mean_grad2 > 1e-6 else float("nan")
    top, bottom = image.max(axis=2), image.min(axis=2)
    saturation = np.where(top > 0, (top - bottom) / np.maximum(top, 1e-6), 0.0)
    return float(lap.var()), edge, float(saturation.mean())


def detect_frame(frame: np.ndarray) -> FrameDetection:
    """Background, object colour, blobs (shape, size, centroid) and image statistics of one
    (H, W, 3) uint8 RGB frame."""
    image = frame.astype(np.float32)
    height, width = image.shape[:2]
    sharpness, edge, saturation = _image_statistics(image)
    ring = np.concatenate([image[:BORDER_PX].reshape(-1, 3), image[-BORDER_PX:].reshape(-1, 3),
                           image[:, :BORDER_PX].reshape(-1, 3), image[:, -BORDER_PX:].reshape(-1, 3)])
    background = np.median(ring, axis=0)
    found = FrameDetection(background, _nearest(BACKGROUNDS, background, BACKGROUND_MATCH_DIST),
                           sharpness=sharpness, edge_sharpness=edge, saturation=saturation)
    offset = image - background  # (H, W, 3)
    distance = np.sqrt((offset * offset).sum(axis=2))
    foreground = distance > FOREGROUND_DIST
    min_area = MIN_OBJECT_AREA * height * width
    if foreground.sum() < min_area:
        return found
    # The colour from the core of the blobs: on small objects most pixels are anti-aliased rim.
    core = distance >= CORE_SHARE * float(distance[foreground].max())
    colour = np.median(image[core], axis=0)
    axis = colour - background
    if float(axis @ axis) < FOREGROUND_DIST**2:
        return found
    found.colour_rgb, found.colour = colour, _nearest(COLOURS, colour, COLOUR_MATCH_DIST)
    # Soft coverage: the pixel's place on the background -> object colour line.
    coverage = np.clip((offset @ axis) / float(axis @ axis), 0.0, 1.0)
    coverage[distance < NOISE_DIST] = 0.0
    labels, n = _components(coverage >= 0.5)  # pixels at least half covered
    if n == 0:
        return found
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes)
    keep = [int(i) + 1 for i in order[:MAX_TRACKED]
            if sizes[i] >= min_area and sizes[i] >= MIN_COMPONENT_SHARE * sizes[order[0]]]
    found.objects = [_object_features(coverage, labels, label) for label in keep]
    if found.objects:
        main = found.objects[0]
        radius = math.sqrt(main.area / SHAPE_AREA[main.shape]) / min(height, width)
        found.size = SIZES[int(np.searchsorted(SIZE_BOUNDARIES, radius))]
    return found


# --- tracks and motion ---------------------------------------------------------------------------


@dataclass
class Tracks:
    """Object tracks. positions (F, T, 2) (x, y) px, NaN where unseen; extents (F, T, 2) sub-pixel
    width and height; boxes (F, T, 4) x0, y0, x1, y1."""

    positions: np.ndarray
    extents: np.ndarray
    boxes: np.ndarray


def _link_tracks(detections: Sequence[FrameDetection]) -> Tracks:
    """Centroids linked frame to frame; two tracks when two objects show in many frames."""
    two = sum(d.count >= 2 for d in detections) >= TWO_TRACK_SHARE * len(detections)
    n_tracks = 2 if two else 1
    frames = len(detections)
    positions = np.full((frames, n_tracks, 2), np.nan)
    extents = np.full((frames, n_tracks, 2), np.nan)
    boxes = np.full((frames, n_tracks, 4), np.nan)
    last = np.full((n_tracks, 2), np.nan)
    for f, det in enumerate(detections):
        objects = det.objects[:n_tracks]
        if not objects:
            continue
        points = np.array([o.centroid for o in objects])  # (n, 2)
        known = ~np.isnan(last[:, 0])  # (T,)
        distance = np.where(known[:, None], np.linalg.norm(last[:, None] - points[None], axis=2), np.inf)  # (T, n)
        if n_tracks == 1:
            assignment = {0: objects[0]}
        elif len(objects) == 1:
            assignment = {int(np.argmin(distance[:, 0])) if known.any() else 0: objects[0]}
        elif known.all():
            straight = distance[0, 0] + distance[1, 1]
            crossed = distance[0, 1] + distance[1, 0]
            assignment = {0: objects[0], 1: objects[1]} if straight <= crossed else {0: objects[1], 1: objects[0]}
        elif known.any():
            t = int(np.flatnonzero(known)[0])
            mine = int(np.argmin(distance[t]))
            assignment = {t: objects[mine], 1 - t: objects[1 - mine]}
        else:  # no history: left to right
            order = np.argsort(points[:, 0])
            assignment = {t: objects[int(i)] for t, i in enumerate(order)}
        for t, obj in assignment.items():
            positions[f, t] = obj.centroid
            extents[f, t] = (obj.width, obj.height)
            boxes[f, t] = obj.box
            last[t] = obj.centroid
    return Tracks(positions, extents, boxes)


def _steps(tracks: Tracks, height: int, width: int) -> np.ndarray:
    """Frame-to-frame displacement (F, T, 2), step f = position f - position f-1 (step 0 NaN).

    A re-entry wrap (leaving near one edge, arriving near the opposite one, a frame's length
    minus the object's away) is NaN: an unmeasured step, neither motion nor a jump."""
    pos, boxes, ext = tracks.positions, tracks.boxes, tracks.extents
    steps = np.full_like(pos, np.nan)
    steps[1:] = pos[1:] - pos[:-1]
    frame = np.array([width, height], np.float64)
    edge = WRAP_EDGE_FRACTION * min(height, width)
    wrapped = np.zeros(steps.shape[:2], bool)  # (F, T)
    with np.errstate(invalid="ignore"):
        for axis in (0, 1):
            lo_prev, hi_prev = boxes[:-1, :, axis], boxes[:-1, :, axis + 2]
            lo_next, hi_next = boxes[1:, :, axis], boxes[1:, :, axis + 2]
            step = steps[1:, :, axis]
            span = frame[axis] - (ext[:-1, :, axis] + ext[1:, :, axis]) / 2.0
            forward = (hi_prev >= frame[axis] - edge) & (lo_next <= edge) & (np.abs(step + span) <= edge)
            backward = (lo_prev <= edge) & (hi_next >= frame[axis] - edge) & (np.abs(step - span) <= edge)
            wrapped[1:] |= forward | backward
    steps[wrapped] = np.nan
    return steps


def _wrap_angle(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2.0 * np.pi) - np.pi


def _chords(steps: np.ndarray, chord_steps: int, typical: float) -> np.ndarray:
    """Chords (m, 2) spanning `chord_steps` steps; those with a NaN step, or too short for a
    reliable heading, are left out."""
    chords = sum(steps[i:len(steps) - chord_steps + 1 + i] for i in range(chord_steps))
    chords = chords[~np.isnan(chords).any(axis=1)]
    return chords[np.linalg.norm(chords, axis=1) >= HEADING_MIN_STEP * chord_steps * typical]


def _turns(chords: np.ndarray) -> np.ndarray:
    """Turns (radians) between the headings of successive chords."""
    return _wrap_angle(np.diff(np.arctan2(chords[:, 1], chords[:, 0])))


def _turns_steadily(turns: np.ndarray, fps: float, max_spread: float | None) -> bool:
    """Whether `turns` turn at an orbit's rate: most share the sense and reach half the minimum
    rate (a reflection bends only the few chords around it), and, if `max_spread` is given, they
    agree in size."""
    if len(turns) < 2:
        return False
    turn = float(np.median(turns))
    steady = (np.sign(turns) == np.sign(turn)) & (np.abs(turns) * fps >= CIRCLE_MIN_TURN_RATE / 2)
    spread = float(np.median(np.abs(turns - turn)))
    return (CIRCLE_MIN_TURN_RATE <= abs(turn) * fps <= CIRCLE_MAX_TURN_RATE
            and np.mean(steady) >= CIRCLE_MIN_CONSISTENCY
            and (max_spread is None or spread <= max_spread * abs(turn)))


def classify_motion(steps: np.ndarray, fps: float, frame_size: float, at_wall: bool = False) -> str | None:
    """Motion of one track over a window of steps (n, 2) px/frame (NaN = unusable): one of the
    world's motions, or None when it fits none (or too few steps are usable). `at_wall`: the
    object came near the frame's edge in the window, where a path can reflect."""
    usable = steps[~np.isnan(steps).any(axis=1)]
    usable = usable[np.linalg.norm(usable, axis=1) <= JUMP_FRACTION * frame_size]
    if len(usable) < max(2, MIN_VALID_STEPS * len(steps)):
        return None
    lengths = np.linalg.norm(usable, axis=1)
    typical = float(np.median(lengths))
    if typical * fps / frame_size < STILL_MAX_SPEED:
        return "still"
    # Headings of chords spanning CHORD_STEPS steps: pixel-grid jitter of the centroid, which
    # alternates step to step, cancels; a reflection spreads over CHORD_STEPS turns only.
    # Circling turns steadily, and its turns agree in size.
    turns = _turns(_chords(steps, CHORD_STEPS, typical))
    if _turns_steadily(turns, fps, CIRCLE_MAX_SPREAD):
        return "circling"
    label = _straight_motion(usable, turns, fps)
    # An orbit drawn as a polygon (see ORBIT_CHORD_STEPS) is never an axis motion (its heading
    # sweeps 60 degrees in a 0.5 s window), so it replaces only the readings "bouncing" and None.
    if label in ("bouncing", None) and not at_wall and _polygon_orbit(steps, typical, fps):
        return "circling"
    return label


def _straight_motion(usable: np.ndarray, turns: np.ndarray, fps: float) -> str | None:
    """The motion of a path that is not an orbit: "bouncing", an axis motion, or None."""
    # Straight paths (between reflections) keep their heading; jitter turns all the time.
    if len(turns) >= 2 and np.mean(np.abs(turns) * fps <= STRAIGHT_TURN_RATE) < MIN_STRAIGHT_SHARE:
        return None
    magnitude = np.median(np.abs(usable), axis=0)  # (2,)
    major = int(np.argmax(magnitude))
    if magnitude[1 - major] > AXIS_MAX_MINOR_RATIO * magnitude[major]:
        return "bouncing"
    direction = float(np.median(usable[:, major]))
    if abs(direction) < AXIS_MIN_CONSISTENCY * magnitude[major]:
        return None
    sign = 1.0 if direction > 0 else -1.0
    return next(name for name, v in AXIS_MOTIONS.items() if v[major] == sign)


def _polygon_orbit(steps: np.ndarray, typical: float, fps: float) -> bool:
    """An orbit drawn as a polygon, one side per latent frame: chords of ORBIT_CHORD_STEPS steps
    turn steadily, and every one runs nearly as far as the steps it spans (an orbit's four steps
    turn 30 degrees: 0.97 of them; a random walk's do not)."""
    chords = _chords(steps, ORBIT_CHORD_STEPS, typical)
    reach = np.linalg.norm(chords, axis=1) / (ORBIT_CHORD_STEPS * typical)
    return len(chords) >= 2 and reach.min() >= ORBIT_MIN_REACH and _turns_steadily(_turns(chords), fps, None)


def _near_walls(tracks: Tracks, height: int, width: int) -> np.ndarray:
    """(F, T) bool: the object's box is within REFLECTION_EDGE_FRACTION of the frame's edge."""
    edge = REFLECTION_EDGE_FRACTION * min(height, width)
    x0, y0, x1, y1 = np.moveaxis(tracks.boxes, -1, 0)
    with np.errstate(invalid="ignore"):
        return (x0 <= edge) | (y0 <= edge) | (x1 >= width - edge) | (y1 >= height - edge)


def _track_motion(detections: Sequence[FrameDetection], height: int, width: int, window: int,
                  fps: float) -> tuple[Tracks, np.ndarray, list[tuple[str | None, ...]]]:
    """Tracks of the detections, their steps (see `_steps`) and the motion labels per frame."""
    tracks = _link_tracks(detections)
    steps = _steps(tracks, height, width)
    labels = _motion_labels(steps, _near_walls(tracks, height, width), window, fps, float(min(height, width)))
    return tracks, steps, labels


def _motion_labels(steps: np.ndarray, near_walls: np.ndarray, window: int, fps: float,
                   frame_size: float) -> list[tuple[str | None, ...]]:
    """Per frame, the motion label of each track over the trailing `window` steps ending there
    (fewer in the first frames; nothing after the frame is looked at). `near_walls` (F, T): where
    the track's object is near the frame's edge."""
    frames, n_tracks = steps.shape[:2]
    labels = []
    for f in range(frames):
        start = max(1, f - window + 1)
        at_wall = near_walls[start - 1:f + 1].any(axis=0)  # the positions the steps join
        labels.append(tuple(classify_motion(steps[start:f + 1, t], fps, frame_size, bool(at_wall[t]))
                            for t in range(n_tracks)))
    return labels


# --- prompts -------------------------------------------------------------------------------------


def _check_prompts(prompts: Sequence[tuple[int, str]],
                   frames: int) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The prompts to judge, and those whose first frame lies past the video's last (a switch
    asked for in its final fraction of a frame, which the engine shows from the block before:
    nothing of the video is the frame asked for, so nothing is judged against it)."""
    checked = [(int(f), str(t)) for f, t in prompts]
    if not checked:
        raise LongvidError("no prompts given: pass at least one (first frame, prompt text) pair")
    for i, (f, _) in enumerate(checked):
        if f < 0:
            raise LongvidError(f"prompt {i} starts at frame {f}: frames count from 0")
        if i and f <= checked[i - 1][0]:
            raise LongvidError(f"prompt {i} starts at frame {f}, not after prompt {i - 1}: sort the prompts by frame")
    if checked[0][0] >= frames:
        raise LongvidError(
            f"the first prompt starts at frame {checked[0][0]} but the video has {frames} frames: "
            "pass the whole video, or a timeline whose first prompt starts within it"
        )
    return [p for p in checked if p[0] < frames], [p for p in checked if p[0] >= frames]


def _detected_value(attribute: str, det: FrameDetection) -> object:
    return det.count if attribute == "count" else getattr(det, attribute)


# --- the report ----------------------------------------------------------------------------------


def _share(matches: np.ndarray, judged: np.ndarray) -> float | None:
    n = int(judged.sum())
    return float(matches[judged].sum() / n) if n else None


def video_drift_error(values: Sequence[float]) -> float | None:
    """LV-Bench's VDE of per-chunk scores m_1..m_N: sum_{i>=2} (N - i + 1) |m_i - m_1| / m_1.
    NaN chunks add nothing; None when m_1 is missing or zero."""
    m = np.asarray(values, np.float64)
    if len(m) < 2 or not np.isfinite(m[0]) or m[0] == 0:
        return None
    n = len(m)
    weights = n - np.arange(2, n + 1) + 1  # (N - i + 1) for i = 2..N
    terms = weights * np.abs(m[1:] - m[0]) / abs(m[0])
    return float(np.nansum(terms))


def _mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def _first_run_holding(match: np.ndarray, hold: int) -> int | None:
    """First index from which `match` (n,) holds for `hold` frames (or to its end)."""
    n = len(match)
    for i in range(n):
        if match[i:min(n, i + hold)].all():
            return i
    return None


def evaluate(
    frames: Iterable[np.ndarray] | np.ndarray,
    prompts: Sequence[tuple[int, str]],
    fps: int = 16,
    block_frames: int | None = None,
    first_block_frames: int | None = None,
) -> dict:
    """Score a video against its prompts [(first pixel frame, text), ...].

    frames: (F, H, W, 3) uint8 or an iterable of (H, W, 3) uint8 frames (or `Frame`s), read once.
    block_frames: pixel frames per generated block, for the flicker measure; first_block_frames:
    the first block's, when it differs (a causal video decoder's first block is shorter).
    Returns a JSON-ready dict (see the module docstring; `format_report` prints it).
    """
    _check_options(fps, block_frames, first_block_frames)
    return _score(_read(frames), prompts, fps, block_frames, first_block_frames)


def _check_options(fps: int, block_frames: int | None, first_block_frames: int | None) -> None:
    if fps <= 0:
        raise LongvidError(f"fps must be positive, got {fps}")
    for name, value in (("block_frames", block_frames), ("first_block_frames", first_block_frames)):
        if value is not None and value < 1:
            raise LongvidError(f"{name} must be at least 1, got {value}")


@dataclass
class _Readings:
    """What one pass over a video keeps (the frames themselves are not kept): per-frame
    detections, the mean absolute difference from each frame to the next, the frame shape."""

    detections: list[FrameDetection]
    diffs: list[float]
    shape: tuple[int, ...]


def _read(frames: Iterable[np.ndarray] | np.ndarray) -> _Readings:
    detections: list[FrameDetection] = []
    diffs: list[float] = []
    previous = None
    shape = None
    for i, frame in enumerate(frames):
        image = _as_image(frame, i)
        if shape is None:
            shape = image.shape
        elif image.shape != shape:
            raise LongvidError(f"frame {i} is {image.shape[:2]}, earlier frames {shape[:2]}: one size per video")
        detections.append(detect_frame(image))
        if previous is not None:
            diffs.append(float(np.abs(image.astype(np.int16) - previous).mean()))
        previous = image.astype(np.int16)
    if not detections:
        raise LongvidError("the video has no frames: check that generation or decoding produced some")
    return _Readings(detections, diffs, shape)


def _score(readings: _Readings, prompts: Sequence[tuple[int, str]], fps: int, block_frames: int | None,
           first_block_frames: int | None) -> dict:
    """`evaluate`'s report from one pass's readings."""
    # 1. (done by `_read`: one pass over the stream, per-frame detections and frame differences)
    detections, diffs, shape = readings.detections, readings.diffs, readings.shape
    num_frames = len(detections)
    height, width = shape[:2]
    frame_size = float(min(height, width))
    prompts, past_end = _check_prompts(prompts, num_frames)
    attributes = [parse_prompt(text) for _, text in prompts]

    # 2. which prompt is active at each frame; grace frames after each switch.
    starts = np.array([f for f, _ in prompts])
    active = np.searchsorted(starts, np.arange(num_frames), side="right") - 1  # (F,), -1 before any
    window = max(2, round(MOTION_WINDOW_SECONDS * fps))
    grace_frames = round(GRACE_SECONDS * fps)
    grace = np.zeros(num_frames, bool)
    for s in starts[1:]:
        grace[s:s + grace_frames] = True

    # 3. tracks and motion labels.
    tracks, steps, motion = _track_motion(detections, height, width, window, fps)

    # 4. per-frame matches: match[a], judged[a] (F,) bool.
    match = {a: np.zeros(num_frames, bool) for a in ATTRIBUTES}
    judged = {a: np.zeros(num_frames, bool) for a in ATTRIBUTES}
    for f in range(num_frames):
        if active[f] < 0:
            continue
        for attribute, want in attributes[active[f]].named().items():
            if attribute == "motion" and f < window:
                continue  # no full trailing window yet (no look-ahead): not judged
            judged[attribute][f] = True
            if attribute == "motion":
                labels = [label for label in motion[f] if label is not None]
                match[attribute][f] = bool(labels) and all(label == want for label in labels)
            else:
                match[attribute][f] = _detected_value(attribute, detections[f]) == want
    steady = ~grace
    adherence = {a: _share(match[a], judged[a] & steady) for a in ATTRIBUTES}
    adherence_grace = {a: _share(match[a], judged[a] & grace) for a in ATTRIBUTES}
    adherence_grace["overall"] = _pooled(match, judged, grace)
    hits = sum(match[a] & judged[a] for a in ATTRIBUTES).astype(np.float64)  # (F,)
    counts = sum(judged[a].astype(np.float64) for a in ATTRIBUTES)
    frame_score = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)  # (F,)
    frame_score_steady = np.where(steady, frame_score, np.nan)
    overall = _pooled(match, judged, steady)

    # 5. segments and switches.
    bounds = list(starts) + [num_frames]
    segments = []
    for i, (start, text) in enumerate(prompts):
        span = np.zeros(num_frames, bool)
        span[start:bounds[i + 1]] = True
        segments.append({
            "start": int(start), "end": int(bounds[i + 1]), "prompt": text,
            "attributes": attributes[i].named(),
            "adherence": {a: _share(match[a], judged[a] & span & steady) for a in attributes[i].named()},
            "speed": _segment_speed(steps, span, fps, frame_size),
        })
    hold = max(1, round(LATENCY_HOLD_SECONDS * fps))
    switches = [
        _switch_report(i, prompts, attributes, bounds, match, steps, hold, grace_frames + hold, window, fps,
                       frame_size)
        for i in range(1, len(prompts))
    ]

    # 6. freeze, drift, flicker.
    diffs_arr = np.array(diffs, np.float64)  # (F - 1,): frame f+1 vs f
    moving_prompt = np.array([a >= 0 and attributes[a].motion not in (None, "still") for a in active])
    freeze = _freeze_report(diffs_arr, moving_prompt, fps)
    drift = _drift_report(detections, frame_score_steady, match, judged, steady, fps)
    flicker = _flicker_report(diffs_arr, block_frames, first_block_frames)

    latencies = [s["latency_frames"] for s in switches if s["latency_frames"] is not None]
    ratios = [s["continuity_ratio"] for s in switches if s["continuity_ratio"] is not None]
    return {
        "frames": num_frames, "fps": fps, "seconds": num_frames / fps, "height": height, "width": width,
        "adherence": {**adherence, "overall": overall},
        "adherence_grace": adherence_grace,
        "judged_frames": {a: int((judged[a] & steady).sum()) for a in ATTRIBUTES},
        "segments": segments,
        "switches": switches,
        "prompts_past_end": [{"frame": f, "prompt": text} for f, text in past_end],
        "latency": {
            "mean_frames": float(np.mean(latencies)) if latencies else None,
            "mean_seconds": float(np.mean(latencies)) / fps if latencies else None,
            "missed": sum(s["latency_frames"] is None and not s["unmeasured"] for s in switches),
            "unmeasured": sum(s["unmeasured"] for s in switches),
        },
        "continuity": {
            "max_ratio": max(ratios) if ratios else None,
            "mean_ratio": float(np.mean(ratios)) if ratios else None,
            "teleports": sum(bool(s["teleport"]) for s in switches),
        },
        "motion": {"adherence": adherence["motion"], "freeze": freeze},
        "drift": drift,
        "flicker": flicker,
    }


def _pooled(match: dict, judged: dict, where: np.ndarray) -> float | None:
    hits = sum(int((match[a] & judged[a] & where).sum()) for a in ATTRIBUTES)
    total = sum(int((judged[a] & where).sum()) for a in ATTRIBUTES)
    return hits / total if total else None


def _segment_speed(steps: np.ndarray, span: np.ndarray, fps: float, frame_size: float) -> float | None:
    """Median speed of the first track over a segment, frame sizes per second."""
    lengths = np.linalg.norm(steps[span, 0], axis=1)
    lengths = lengths[np.isfinite(lengths) & (lengths <= JUMP_FRACTION * frame_size)]
    return float(np.median(lengths)) * fps / frame_size if len(lengths) else None


def _switch_report(i, prompts, attributes, bounds, match, steps, hold, measurable, window, fps,
                   frame_size) -> dict:
    """Latency and continuity of switch i (prompt i - 1 -> prompt i). A segment shorter than
    `measurable` frames may end before its change can be read."""
    start, end = int(bounds[i]), int(bounds[i + 1])
    old, new = attributes[i - 1].named(), attributes[i].named()
    changed = [a for a in new if old.get(a) != new[a]] or list(new)
    latency: int | None = None
    per_attribute = {}
    for a in changed:
        first = _first_run_holding(match[a][start:end], hold)
        per_attribute[a] = first
    if changed and all(v is not None for v in per_attribute.values()):
        latency = max(per_attribute.values())  # type: ignore[type-var]
    # Not read, and could not have been: the new prompt names nothing the detector reads, or its
    # segment ends before a motion window refills and the change holds. Not a missed switch.
    unmeasured = latency is None and (not changed or end - start < measurable)
    # Continuity: the largest step at the switch against the ordinary step on either side.
    lengths = np.linalg.norm(steps, axis=2)  # (F, T)
    around = lengths[start:min(end, start + CONTINUITY_SEARCH_STEPS)]
    jump = float(np.nanmax(around)) if np.isfinite(around).any() else None
    before = lengths[max(1, start - window):start]
    after = lengths[start + CONTINUITY_SEARCH_STEPS:min(end, start + CONTINUITY_SEARCH_STEPS + window)]
    ordinary = [float(np.nanmedian(x)) for x in (before, after) if np.isfinite(x).any()]
    floor = MIN_ORDINARY_STEP * frame_size
    ordinary_step = max(ordinary + [0.0])
    ratio = jump / max(ordinary_step, floor) if jump is not None and ordinary else None
    teleport = ratio is not None and ratio > TELEPORT_RATIO and jump > TELEPORT_MIN_JUMP * frame_size
    return {
        "frame": start, "prompt": prompts[i][1], "changed": changed,
        "latency_frames": latency, "latency_seconds": latency / fps if latency is not None else None,
        "latency_per_attribute": per_attribute, "unmeasured": unmeasured,
        "jump_px": jump, "ordinary_step_px": ordinary_step if ordinary else None,
        "continuity_ratio": ratio, "teleport": teleport,
    }


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[(start, length)] of the True runs of a boolean array."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.diff(padded)
    return [(int(s), int(e - s)) for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]


def _freeze_report(diffs: np.ndarray, moving_prompt: np.ndarray, fps: float) -> dict:
    """Frames identical to the one before while the prompt asks for motion."""
    frozen = np.zeros(len(moving_prompt), bool)
    frozen[1:] = diffs < FREEZE_MAX_DIFF
    frozen &= moving_prompt
    runs = _runs(frozen)
    longest = max((n for _, n in runs), default=0)
    asked = int(moving_prompt.sum())
    return {
        "frozen_frames": int(frozen.sum()),
        "frozen_share": float(frozen.sum() / asked) if asked else None,
        "longest_run_frames": longest,
        "longest_run_seconds": longest / fps,
        "frozen": longest >= FREEZE_MIN_SECONDS * fps,
    }


def _drift_report(detections, frame_score, match, judged, steady, fps) -> dict:
    frames = len(detections)
    chunks = np.array_split(np.arange(frames), min(DRIFT_CHUNKS, frames))
    stats = {
        "sharpness": np.array([d.sharpness for d in detections]),
        "edge_sharpness": np.array([d.edge_sharpness for d in detections]),
        "saturation": np.array([d.saturation for d in detections]),
    }
    series = {"adherence": [_mean(frame_score[c]) for c in chunks]}
    series |= {name: [_mean(values[c]) for c in chunks] for name, values in stats.items()}
    report: dict = {"chunks": len(chunks)}
    for name, values in series.items():
        as_float = [np.nan if v is None else v for v in values]
        report[name] = values
        report[f"{name}_vde"] = video_drift_error(as_float)
    span = min(round(FIRST_LAST_SECONDS * fps), frames // 2)
    first, last = np.zeros(frames, bool), np.zeros(frames, bool)
    first[:span], last[frames - span:] = True, True
    report["first_last"] = {
        "seconds": span / fps,
        "adherence_first": _pooled(match, judged, steady & first),
        "adherence_last": _pooled(match, judged, steady & last),
        "sharpness_first": _mean(stats["sharpness"][first]),
        "sharpness_last": _mean(stats["sharpness"][last]),
        "edge_sharpness_first": _mean(stats["edge_sharpness"][first]),
        "edge_sharpness_last": _mean(stats["edge_sharpness"][last]),
    }
    return report


def _flicker_report(diffs: np.ndarray, block_frames: int | None, first_block_frames: int | None) -> dict | None:
    """Mean |frame difference| entering a new block against that within blocks. Blocks start at
    frames first, first + block_frames, ... (first = first_block_frames, default block_frames)."""
    if block_frames is None or len(diffs) == 0:
        return None
    first = block_frames if first_block_frames is None else first_block_frames
    index = np.arange(1, len(diffs) + 1)  # diffs[j] is frame j+1 against frame j
    boundary = (index >= first) & ((index - first) % block_frames == 0)
    across = float(diffs[boundary].mean()) if boundary.any() else None
    within = float(diffs[~boundary].mean()) if (~boundary).any() else None
    ratio = across / within if across is not None and within else None
    return {"block_frames": block_frames, "first_block_frames": first, "boundary_diff": across,
            "within_diff": within, "ratio": ratio}


# --- printing ------------------------------------------------------------------------------------


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_report(report: dict) -> str:
    """A readable plain-text table of an `evaluate` report."""
    lines = [f"video: {report['frames']} frames, {report['seconds']:.1f} s at {report['fps']} fps, "
             f"{report['width']}x{report['height']}", "", "adherence        steady   grace   judged"]
    for a in (*ATTRIBUTES, "overall"):
        steady = report["adherence"].get(a)
        if steady is None and a != "overall":
            continue
        lines.append(f"  {a:<14} {_fmt(steady):>6}  {_fmt(report['adherence_grace'].get(a)):>6}  "
                     f"{_fmt(report['judged_frames'].get(a, '')):>7}")
    if report["switches"]:
        lines += ["", "switch  frame  latency(f)  latency(s)  jump(px)  ratio  teleport  changed"]
        for n, s in enumerate(report["switches"], 1):
            lines.append(f"  {n:<5} {s['frame']:>5}  {_fmt(s['latency_frames']):>10}  "
                         f"{_fmt(s['latency_seconds'], 2):>10}  {_fmt(s['jump_px'], 1):>8}  "
                         f"{_fmt(s['continuity_ratio'], 1):>5}  {_fmt(s['teleport']):>8}  {','.join(s['changed'])}")
        lat, cont = report["latency"], report["continuity"]
        lines.append(f"  mean latency {_fmt(lat['mean_frames'], 1)} frames ({_fmt(lat['mean_seconds'], 2)} s), "
                     f"missed {lat['missed']}"
                     + (f" (+{lat['unmeasured']} too short or unreadable to measure)" if lat["unmeasured"] else "")
                     + f"; continuity max ratio {_fmt(cont['max_ratio'], 1)}, "
                     f"teleports {cont['teleports']}")
    for p in report.get("prompts_past_end", []):
        lines.append(f"  not judged: \"{p['prompt']}\" starts at frame {p['frame']}, after the video's last")
    freeze = report["motion"]["freeze"]
    lines += ["", f"freeze: {_fmt(freeze['frozen'])} (frozen share {_fmt(freeze['frozen_share'])}, "
                  f"longest run {freeze['longest_run_seconds']:.2f} s)"]
    drift = report["drift"]
    lines += ["", f"drift over {drift['chunks']} chunks       VDE    per chunk"]
    for name in ("adherence", "sharpness", "edge_sharpness", "saturation"):
        chunks = " ".join(_fmt(v, 2) for v in drift[name])
        lines.append(f"  {name:<22} {_fmt(drift[name + '_vde'], 2):>6}  {chunks}")
    fl = drift["first_last"]
    lines.append(f"  first vs last {fl['seconds']:.1f} s: adherence {_fmt(fl['adherence_first'])} -> "
                 f"{_fmt(fl['adherence_last'])}, sharpness {_fmt(fl['sharpness_first'], 1)} -> "
                 f"{_fmt(fl['sharpness_last'], 1)}")
    if report["flicker"]:
        f = report["flicker"]
        lines += ["", f"flicker (blocks of {f['block_frames']}): boundary {_fmt(f['boundary_diff'], 2)}, "
                      f"within {_fmt(f['within_diff'], 2)}, ratio {_fmt(f['ratio'], 2)}"]
    return "\n".join(lines)
