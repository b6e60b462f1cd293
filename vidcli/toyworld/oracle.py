"""The pixel oracle: what a toy-world video shows, read from its pixels by fixed rules.

No learned model is involved, so nothing a trainer does can move it: it is the gold
metric of the toy world. :func:`read_video` turns frames into a :class:`Reading`:

1. **Objects.** Pixels whose colour is saturated (max − min channel ≥ 70 grey levels)
   belong to objects; each is given the reference colour of nearest hue. Per frame and
   colour, connected regions of at least 6 pixels are candidate objects; a region's shape
   comes from the widths of its rows (:func:`region_shape`).
   Regions are linked over frames by colour and nearest centre; a track seen in at least
   half the frames is an object, with the majority colour and shape of its regions.
2. **Background.** The remaining grey pixels: dark or light by mean level; striped when
   the mean level of its columns varies (vertical stripes), plain otherwise.
3. **Camera.** Over a striped background, the shift of the column profile between
   consecutive frames (±3 px, best match) summed over the clip: content sliding left
   means the camera pans right. Static when the total stays under 4 px.
4. **Motion.** An object's displacement from the first to the last frame it is seen in,
   stretched to the whole clip, plus the camera's (a still object slides against a
   panning camera); still under 4 px, else the dominant axis.
5. **Layout.** Relations from the centres in the first frame.
6. **Visual quality.** :func:`texture`, the mean distance of each pixel from the median
   of its 3 × 3 neighbourhood: near 0 on the world's flat renders, high where fine grain
   covers the frames; above :data:`DEFECT_TEXTURE` the video has a visual defect
   (:func:`clean`), the world's answer to the VQ question.
7. **Physics.** The world's objects never appear, vanish, jump or change size: each is
   seen in every frame, moves along a straight line at a constant speed, and keeps its
   area. :func:`physics_errors` names the rules a reading breaks (an object missing from
   some frames or a candidate object that no track explains; a centre more than
   :data:`JUMP` px off its track's straight line; an area that changes by more than a
   factor :data:`GROWTH`); a video without any is :func:`plausible`, the world's answer
   to the Phy question.

:func:`check` tells whether a :class:`~vidcli.toyworld.language.Fact` holds of a
reading; :func:`caption_adherence` is the fraction of a caption's facts that hold (per
kind too), and :func:`edit_adherence` scores an edited video against the scene the
edit should have produced.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from vidcli.toyworld.language import KINDS, Fact, read_facts
from vidcli.toyworld.scene import COLOURS, HALF, SHAPES, Scene, coverage

SATURATED = 70.0  # max − min channel above which a pixel is coloured (an object's)
LUMA_STEP = 20.0  # luma difference from the background that marks an object's pixel
GREY = 40.0  # below which it is background
MIN_AREA = 6  # pixels of a region that can be an object (at 32×32)
STILL_UNDER = 4.0  # px of displacement over the clip below which an object is still
LINK_DISTANCE = 9.0  # px a region may move between frames and stay the same object
RELATION_MIN = 2.0  # px of separation a claimed relation needs along its axis


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue angle in degrees of (..., 3) colours."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b)) % 360.0


_REFERENCE_HUES = {name: float(_hue(np.asarray(value, dtype=float))) for name, value in COLOURS.items()}


def colour_name(rgb: np.ndarray) -> np.ndarray:
    """Index into COLOURS of the reference colour with the nearest hue, for each (..., 3) colour."""
    hues = _hue(rgb)[..., None]
    refs = np.asarray(list(_REFERENCE_HUES.values()))
    distance = np.abs((hues - refs + 180.0) % 360.0 - 180.0)
    return distance.argmin(axis=-1)


# Where each shape's centre of mass sits below the centre of its box, in units of HALF
# (a triangle with its apex up has two thirds of its height above its centroid).
_CENTROID_BELOW = {"ball": 0.0, "square": 0.0, "triangle": 1.0 / 3.0}
_FIT_OFFSETS = (-0.5, 0.0, 0.5)  # px around the centroid-based guess


def shape_fit(alpha: np.ndarray, half: float = HALF) -> dict[str, float]:
    """Mean squared difference between ``alpha`` (an (H, W) map of how much of each pixel an
    object covers, 0..1) and each shape drawn as the world draws it, at its best position
    near the map's centre of mass (±½ px)."""
    height, width = alpha.shape
    total = float(alpha.sum())
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    cx, cy = float((alpha * xs).sum() / total), float((alpha * ys).sum() / total)
    errors = {}
    for shape in SHAPES:
        guess_y = cy - _CENTROID_BELOW[shape] * half
        errors[shape] = min(float(np.mean((coverage(shape, cx + ox, guess_y + oy, height, width, half) - alpha) ** 2))
                            for ox in _FIT_OFFSETS for oy in _FIT_OFFSETS)
    return errors


def region_shape(alpha: np.ndarray, half: float = HALF) -> str:
    """ball, square or triangle: the shape whose drawing best matches a region's coverage
    map (see :func:`shape_fit`). Objects of the world all have the same size, so the fit
    compares outlines, not areas: a square fills its box's corners, a triangle's mass sits
    low, a ball is neither."""
    errors = shape_fit(alpha, half)
    return min(errors, key=errors.get)


@dataclass
class Region:
    frame: int
    colour: str
    shape: str
    area: int
    centre: tuple[float, float]  # (x, y) in pixels


@dataclass
class SeenObject:
    """One tracked object: majority colour and shape, motion, and its centre per frame seen."""

    colour: str
    shape: str
    motion: str
    centres: dict[int, tuple[float, float]]
    displacement: tuple[float, float]
    areas: dict[int, int] = field(default_factory=dict)  # pixels of its region per frame seen


@dataclass
class Reading:
    """What the oracle reads from one video."""

    objects: list[SeenObject]
    tone: str
    pattern: str
    camera: str
    frames: int
    camera_shift: float = 0.0
    stray: int = 0  # candidate objects (regions) that belong to no object's track

    def find(self, shape: str) -> SeenObject | None:
        """The object of this shape (the largest track when several have it)."""
        found = [o for o in self.objects if o.shape == shape]
        return max(found, key=lambda o: len(o.centres)) if found else None

    def facts(self) -> set[Fact]:
        """The facts this reading supports, in the form :func:`~vidcli.toyworld.language.scene_facts` gives."""
        facts = {Fact("background", None, self.tone), Fact("background", None, self.pattern),
                 Fact("camera", None, self.camera)}
        for obj in self.objects:
            facts |= {Fact("object", obj.shape, None), Fact("colour", obj.shape, obj.colour),
                      Fact("motion", obj.shape, obj.motion)}
        if len(self.objects) == 2:
            a, b = sorted(self.objects, key=lambda o: SHAPES.index(o.shape))  # as scene_facts says it
            first = min(set(a.centres) & set(b.centres), default=None)
            if first is not None:
                (ax, ay), (bx, by) = a.centres[first], b.centres[first]
                if abs(ax - bx) >= abs(ay - by):
                    rel = "left of" if ax < bx else "right of"
                else:
                    rel = "above" if ay < by else "below"
                facts.add(Fact("relation", a.shape, f"{rel} {b.shape}"))
        return facts


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _column_profiles(level: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """(T, W) median level of the grey pixels of each column; NaN where a column has none."""
    masked = np.where(grey, level, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        return np.nanmedian(masked, axis=1)


def _filled(profiles: np.ndarray) -> np.ndarray:
    """Column profiles with missing columns taken from the nearest column that has a value."""
    out = profiles.copy()
    for row in out:
        known = np.flatnonzero(np.isfinite(row))
        if len(known) == 0:
            row[:] = 0.0
        elif len(known) < len(row):
            nearest = known[np.abs(np.arange(len(row))[:, None] - known[None]).argmin(axis=1)]
            row[:] = row[nearest]
    return out


def _regions(frames: np.ndarray) -> list[Region]:
    """Candidate objects per frame, found in luma, which video coding keeps at full resolution
    (it halves the colour resolution, so colour edges bleed by a pixel or two).

    A region is a connected set of pixels whose luma differs from the background of their
    column by LUMA_STEP or more; its outline is where that difference reaches half of the
    region's own contrast (the pixels an antialiased edge covers at least half), and it
    counts as an object when at least a third of the outline is coloured. Its colour is
    the majority over those coloured pixels."""
    from scipy import ndimage

    rgb = frames.astype(float)
    saturation = rgb.max(axis=-1) - rgb.min(axis=-1)
    level = _luma(rgb)
    background = _filled(_column_profiles(level, saturation < GREY))[:, None, :]
    contrast = np.abs(level - background)
    names = list(COLOURS)
    colour_index = colour_name(rgb)
    scale = frames.shape[1] / 32.0
    regions = []
    for t in range(frames.shape[0]):
        labels, count = ndimage.label(contrast[t] >= LUMA_STEP, structure=np.ones((3, 3)))
        for k, box in enumerate(ndimage.find_objects(labels), start=1):
            found = labels == k
            core = float(np.percentile(contrast[t][found], 80))
            region = found & (contrast[t] >= core / 2)
            area = int(region.sum())
            coloured = region & (saturation[t] >= SATURATED)
            if area < MIN_AREA * scale * scale or coloured.sum() * 3 < area:
                continue
            colour = names[int(np.bincount(colour_index[t][coloured], minlength=len(names)).argmax())]
            ys, xs = np.nonzero(region)
            pad = int(np.ceil(2 * scale))
            rows = slice(max(0, box[0].start - pad), box[0].stop + pad)
            cols = slice(max(0, box[1].start - pad), box[1].stop + pad)
            near = ndimage.binary_dilation(found, iterations=pad)[rows, cols]
            alpha = np.clip(contrast[t][rows, cols] / core, 0.0, 1.0) * near
            regions.append(Region(t, colour, region_shape(alpha, HALF * scale), area,
                                  (float(xs.mean() + 0.5) / scale, float(ys.mean() + 0.5) / scale)))
    return regions


def _tracks(regions: list[Region], frames: int) -> list[list[Region]]:
    tracks: list[list[Region]] = []
    for t in range(frames):
        for region in sorted((r for r in regions if r.frame == t), key=lambda r: -r.area):
            best, best_distance = None, LINK_DISTANCE
            for track in tracks:
                last = track[-1]
                if last.frame >= t or last.colour != region.colour:
                    continue
                d = float(np.hypot(last.centre[0] - region.centre[0], last.centre[1] - region.centre[1]))
                if d < best_distance:
                    best, best_distance = track, d
            if best is None:
                tracks.append([region])
            else:
                best.append(region)
    return [track for track in tracks if len(track) * 2 >= frames]


def _background(frames: np.ndarray, objects: np.ndarray) -> tuple[str, str, np.ndarray]:
    """Tone, pattern and per-frame column profiles (NaN where a column has no background pixel)."""
    rgb = frames.astype(float)
    grey = (rgb.max(axis=-1) - rgb.min(axis=-1) < GREY) & ~objects
    level = rgb.mean(axis=-1)
    tone = "dark" if (level[grey].mean() if grey.any() else 0.0) < 128 else "light"
    counts = grey.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        profiles = np.where(counts > 0, (level * grey).sum(axis=1) / counts, np.nan)  # (T, W)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # frames without a background pixel: NaN, skipped
        spread = np.nanmean(np.nanstd(profiles, axis=1)) if np.isfinite(profiles).any() else 0.0
    return tone, "striped" if spread > 8.0 else "plain", profiles


def _camera_shift(profiles: np.ndarray, max_shift: int = 3) -> float:
    """Total leftward slide of the background over the clip, in pixels (a right pan slides it left)."""
    total = 0.0
    for a, b in zip(profiles[:-1], profiles[1:]):
        best, best_error = 0, np.inf
        for s in range(-max_shift, max_shift + 1):
            # b(x) = a(x + s): content moved left by s
            x = np.arange(max(0, -s), min(len(a), len(a) - s))
            diff = b[x] - a[x + s]
            diff = diff[np.isfinite(diff)]
            if len(diff) < len(a) // 2:
                continue
            error = float(np.abs(diff).mean())
            if error < best_error - 1e-9:
                best, best_error = s, error
        total += best
    return total


def read_video(frames: np.ndarray) -> Reading:
    """Read a video: (T, H, W, 3) uint8 RGB frames (any square size; the world's is 32×32)."""
    from scipy import ndimage

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    count = frames.shape[0]
    scale = frames.shape[1] / 32.0
    regions = _regions(frames)
    tracks = _tracks(regions, count)
    rgb = frames.astype(float)
    objects_mask = ndimage.binary_dilation(rgb.max(axis=-1) - rgb.min(axis=-1) >= GREY,
                                           structure=np.ones((1, 3, 3)), iterations=max(1, round(scale)))
    tone, pattern, profiles = _background(frames, objects_mask)
    shift = _camera_shift(profiles, max_shift=max(3, round(4 * scale))) / scale if pattern == "striped" else 0.0
    camera = "static" if abs(shift) < STILL_UNDER else ("right" if shift > 0 else "left")
    objects = []
    for track in tracks:
        centres = {r.frame: r.centre for r in track}
        first, last = min(centres), max(centres)
        span = max(1, last - first)
        dx = (centres[last][0] - centres[first][0]) * (count - 1) / span
        dy = (centres[last][1] - centres[first][1]) * (count - 1) / span
        dx += shift if camera != "static" else 0.0  # back to the scene's own frame
        if max(abs(dx), abs(dy)) < STILL_UNDER:
            motion = "still"
        elif abs(dx) >= abs(dy):
            motion = "right" if dx > 0 else "left"
        else:
            motion = "down" if dy > 0 else "up"
        colour = Counter(r.colour for r in track).most_common(1)[0][0]
        shape = Counter(r.shape for r in track).most_common(1)[0][0]
        objects.append(SeenObject(colour, shape, motion, centres, (dx, dy), {r.frame: r.area for r in track}))
    return Reading(objects, tone, pattern, camera, count, shift, stray=len(regions) - sum(map(len, tracks)))


# ----------------------------------------------------------------------------- adherence


def check(fact: Fact, reading: Reading) -> bool:
    """Whether the video read as ``reading`` shows ``fact``."""
    if fact.kind == "background":
        return fact.value in (reading.tone, reading.pattern)
    if fact.kind == "camera":
        return fact.value == reading.camera
    obj = reading.find(fact.subject)
    if obj is None:
        return False
    if fact.kind == "object":
        return True
    if fact.kind == "colour":
        return obj.colour == fact.value
    if fact.kind == "motion":
        return obj.motion == fact.value
    if fact.kind == "relation":
        rel, other_shape = fact.value.rsplit(" ", 1)
        other = reading.find(other_shape)
        if other is None:
            return False
        common = sorted(set(obj.centres) & set(other.centres))
        if not common:
            return False
        (ax, ay), (bx, by) = obj.centres[common[0]], other.centres[common[0]]
        return {"left of": bx - ax, "right of": ax - bx, "above": by - ay, "below": ay - by}[rel] >= RELATION_MIN
    raise ValueError(f"unknown fact kind {fact.kind!r}")


def fact_adherence(facts: list[Fact] | set[Fact], reading: Reading) -> dict:
    """``{"score": fraction of facts that hold, "by_kind": {kind: fraction}, "held": [...], "missed": [...]}``."""
    facts = sorted(set(facts))
    held = [f for f in facts if check(f, reading)]
    by_kind = {}
    for kind in KINDS:
        mine = [f for f in facts if f.kind == kind]
        if mine:
            by_kind[kind] = sum(f in held for f in mine) / len(mine)
    return {"score": len(held) / len(facts) if facts else None, "by_kind": by_kind,
            "held": [f.phrase() for f in held], "missed": [f.phrase() for f in facts if f not in held]}


# Grey levels. Fixed from the videos, before any DRF run was read with it: renders 0.3 (their mp4s
# 1.2), renders spoiled by noise, blocks or blur ~13 at the median, the build's generator 5.3 at the
# median (about half its videos below), generators tuned into a texture hack 7-10.
DEFECT_TEXTURE = 6.0


def texture(frames: np.ndarray) -> float:
    """Mean |pixel − median of its 3 × 3 neighbourhood| over frames, pixels and channels, in grey levels
    (edges repeated). Flat regions and clean edges give ~0; grain, speckle and fine patterns give more."""
    from scipy.ndimage import median_filter

    f = np.asarray(frames, dtype=np.float64)
    return float(np.abs(f - median_filter(f, size=(1, 3, 3, 1), mode="nearest")).mean())


def clean(frames: np.ndarray) -> bool:
    """No visual defect: :func:`texture` at most :data:`DEFECT_TEXTURE`."""
    return texture(frames) <= DEFECT_TEXTURE


# Fixed from videos of the 320 training captions and 200 training renders, before any held-out video
# was read with them. Renders (and their mp4s): no missing frame or stray region, at most 0.70 px off
# the line, areas within a factor 1.45 (antialiased edges). JUMP is a little more than one frame's
# travel (TRAVEL / 8 = 1.25 px).
JUMP = 1.5
GROWTH = 2.0


def physics_errors(reading: Reading) -> list[str]:
    """The world's physical rules that ``reading`` breaks, in the Phy question's aspects:
    ``"motion"`` when an object is missing from some frames, a region that could be an object
    belongs to no object (something appears or vanishes), or a centre lies more than :data:`JUMP`
    px off the least-squares straight line of its object's centres (a jump or a jitter);
    ``"deformation"`` when an object's largest area exceeds its smallest by more than a factor
    :data:`GROWTH`. A video without objects breaks nothing."""
    errors = set()
    if reading.stray:
        errors.add("motion")
    for obj in reading.objects:
        if len(obj.centres) < reading.frames:
            errors.add("motion")
        if len(obj.centres) >= 3:
            seen = sorted(obj.centres)
            t = np.array(seen, dtype=float)
            xy = np.array([obj.centres[frame] for frame in seen])
            design = np.stack([np.ones_like(t), t], axis=1)
            off = xy - design @ np.linalg.lstsq(design, xy, rcond=None)[0]
            if np.abs(off).max() > JUMP:
                errors.add("motion")
        if obj.areas and max(obj.areas.values()) > GROWTH * min(obj.areas.values()):
            errors.add("deformation")
    return sorted(errors)


def plausible(frames: np.ndarray) -> bool:
    """No physical error (:func:`physics_errors` of the video's reading is empty)."""
    return not physics_errors(read_video(frames))


def caption_adherence(frames: np.ndarray, caption: str) -> dict:
    """How much of ``caption`` the video shows (:func:`fact_adherence` of the facts the caption states)."""
    return fact_adherence(read_facts(caption), read_video(frames))


def request_adherence(frames: np.ndarray, asked: set[Fact], allowed: set[str]) -> dict:
    """A video against what a user asked for, clutter counted.

    ``recall``: fraction of the ``asked`` facts that hold. ``precision``: fraction of the
    objects seen that belong: per shape in ``allowed`` (the shapes the request asks for or
    implies) its largest track belongs; every other object is clutter (1.0 when nothing is
    seen). ``score``: their product, so a video cannot gain by drawing everything.
    """
    reading = read_video(frames)
    recall = fact_adherence(asked, reading)["score"]
    recall = 1.0 if recall is None else recall
    wanted = {id(reading.find(shape)) for shape in allowed} - {id(None)}
    precision = len(wanted) / len(reading.objects) if reading.objects else 1.0
    return {"recall": recall, "precision": precision, "score": recall * precision}


def edit_adherence(edited: np.ndarray, target: Scene, changed: list[Fact]) -> dict:
    """An edited video against the scene the edit should give.

    ``accuracy``: fraction of the ``changed`` facts (what the edit asked for; for a
    removal, the removed object's absence) that hold; ``preservation``: fraction of the
    target scene's other facts (layout excepted: an edit may move things relative to
    each other) that hold; ``score``: their product, so an edit must both do what was
    asked and keep the rest.
    """
    from vidcli.toyworld.language import scene_facts

    reading = read_video(edited)
    removed = [f for f in changed if f.kind == "object" and f.value == "absent"]
    asked = [f for f in changed if f not in removed]
    hits = [check(f, reading) for f in asked] + [reading.find(f.subject) is None for f in removed]
    kept = [f for f in scene_facts(target) if f not in changed and f.kind != "relation"]
    accuracy = sum(hits) / len(hits) if hits else 1.0
    preservation = sum(check(f, reading) for f in kept) / len(kept) if kept else 1.0
    return {"accuracy": accuracy, "preservation": preservation, "score": accuracy * preservation}
