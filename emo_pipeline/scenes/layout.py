"""Placing a composed scene's objects on a canvas, and rendering it as a label map.

A scene is k object names (Visual Genome style: "sky", "man", "street light") and relations among them,
(subject index, predicate, object index). Each object gets a box drawn from that object's observed boxes
in dataset B (normalised x, y, w, h: top-left corner, width, height, all in [0, 1]); of `tries` joint
draws the one that best agrees with the relations is kept, then a cheap repair pass re-draws the
objects still involved in a problem.

Geometry of the predicates (y grows downwards, so a smaller centre y is higher in the image):

- above, over, on top of: the subject's centre is higher than the object's.
- under, below, beneath, underneath: the subject's centre is lower.
- on, sitting on, standing on, lying on, parked on, riding, walking on: the subject rests on the
  object: its bottom lies within the object's vertical extent (give or take `ON_TOLERANCE`), the two
  overlap horizontally, and the subject's centre is not below the object's.
- in, inside, of: the subject's centre lies inside the object's box ("of" joins a part to its whole:
  the wheel of a car, the window of a building); in front of, behind: they overlap horizontally.
- near, next to, beside, by: the gap between the boxes is at most `NEAR_GAP`.
- has, wearing, wears, holding, with, carrying: the object's centre lies inside the subject's box
  (the man has a hat: the hat is on the man).

Other predicates have no geometric reading and are ignored. Two boxes overlap impossibly when their
intersection covers more than `OVERLAP_SHARE` of the smaller one, neither is a background region (area
at least `BACKGROUND_AREA` of the canvas: sky, grass, road, wall) and no relation between them allows
overlap (the on, in and has groups, plus behind and on top of, which describe occlusion or support).

The label map is what semantic image synthesizers (GauGAN/SPADE style) read: one class id per pixel,
0 for background.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

Box = tuple[float, float, float, float]  # normalised (x, y, w, h): top-left corner, width, height

ON_TOLERANCE = 0.05  # annotated boxes are loose: a cup's bottom may poke just past the table's top edge
NEAR_GAP = 0.15
BACKGROUND_AREA = 0.25
OVERLAP_SHARE = 0.5

ABOVE = frozenset({"above", "over", "on top of"})
BELOW = frozenset({"under", "below", "beneath", "underneath"})
ON = frozenset({"on", "sitting on", "standing on", "lying on", "parked on", "riding", "walking on"})
IN = frozenset({"in", "inside", "of"})
IN_FRONT = frozenset({"in front of"})
BEHIND = frozenset({"behind"})
NEAR = frozenset({"near", "next to", "beside", "by"})
HAS = frozenset({"has", "wearing", "wears", "holding", "with", "carrying"})
# Relations under which two boxes may legitimately cover each other.
OVERLAP_ALLOWED = ON | IN | IN_FRONT | HAS | BEHIND | frozenset({"on top of"})


def _normalise(predicate: str) -> str:
    return " ".join(predicate.lower().split())


def _centre(box: Box) -> tuple[float, float]:
    x, y, w, h = box
    return x + w / 2, y + h / 2


def _inside(point: tuple[float, float], box: Box) -> bool:
    x, y, w, h = box
    return x <= point[0] <= x + w and y <= point[1] <= y + h


def _horizontal_overlap(a: Box, b: Box) -> float:
    return min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])


def _vertical_overlap(a: Box, b: Box) -> float:
    return min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])


def _gap(a: Box, b: Box) -> float:
    """Euclidean distance between the nearest edges of two boxes; 0 when they touch or overlap."""
    dx = max(0.0, -_horizontal_overlap(a, b))
    dy = max(0.0, -_vertical_overlap(a, b))
    return float(np.hypot(dx, dy))


def _area(box: Box) -> float:
    return box[2] * box[3]


def relation_holds(predicate: str, subject: Box, obj: Box) -> bool | None:
    """Whether the geometry of subject/object agrees with the predicate; None for a predicate without a
    geometric reading (see the module docstring for each predicate's reading)."""
    p = _normalise(predicate)
    (_, cy_s), (_, cy_o) = _centre(subject), _centre(obj)
    if p in ABOVE:
        return cy_s < cy_o
    if p in BELOW:
        return cy_s > cy_o
    if p in ON:
        bottom = subject[1] + subject[3]
        rests = obj[1] - ON_TOLERANCE <= bottom <= obj[1] + obj[3] + ON_TOLERANCE
        return rests and _horizontal_overlap(subject, obj) > 0 and cy_s <= cy_o
    if p in IN:
        return _inside(_centre(subject), obj)
    if p in IN_FRONT or p in BEHIND:
        return _horizontal_overlap(subject, obj) > 0
    if p in NEAR:
        return _gap(subject, obj) <= NEAR_GAP
    if p in HAS:
        return _inside(_centre(obj), subject)
    return None


def _check_relations(count: int, relations: Sequence[tuple[int, str, int]]) -> None:
    for s, _, o in relations:
        if not (0 <= s < count and 0 <= o < count):
            raise ValueError(f"relation ({s}, _, {o}) refers past the {count} objects")


def _check(names: Sequence[str], relations: Sequence[tuple[int, str, int]], placed: Sequence[Box]) -> None:
    if len(placed) != len(names):
        raise ValueError(f"{len(placed)} boxes for {len(names)} objects")
    _check_relations(len(names), relations)


def overlap_violations(names: Sequence[str], relations: Sequence[tuple[int, str, int]],
                       placed: Sequence[Box]) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, whose boxes overlap impossibly: the intersection covers more than half the
    smaller box, neither is a background region, and no relation between them allows overlap."""
    _check(names, relations, placed)
    allowed = {frozenset((s, o)) for s, p, o in relations if _normalise(p) in OVERLAP_ALLOWED}
    violations = []
    for i in range(len(placed)):
        for j in range(i + 1, len(placed)):
            a, b = placed[i], placed[j]
            if max(_area(a), _area(b)) >= BACKGROUND_AREA or frozenset((i, j)) in allowed:
                continue  # background regions may lie under anything
            shared = max(0.0, _horizontal_overlap(a, b)) * max(0.0, _vertical_overlap(a, b))
            if shared > OVERLAP_SHARE * min(_area(a), _area(b)):
                violations.append((i, j))
    return violations


def layout_score(names: Sequence[str], relations: Sequence[tuple[int, str, int]], placed: Sequence[Box]) -> float:
    """Relations that hold minus relations that fail, minus 2 per impossible overlap; higher is better.
    Relations without a geometric reading count for nothing."""
    _check(names, relations, placed)
    score = 0.0
    for s, p, o in relations:
        holds = relation_holds(p, placed[s], placed[o])
        if holds is not None:
            score += 1.0 if holds else -1.0
    return score - 2.0 * len(overlap_violations(names, relations, placed))


def _clip(x: float, y: float, w: float, h: float) -> Box:
    """Shift a box inside the unit canvas (shrinking only what is larger than the canvas)."""
    w, h = min(max(w, 0.0), 1.0), min(max(h, 0.0), 1.0)
    return (min(max(x, 0.0), 1.0 - w), min(max(y, 0.0), 1.0 - h), w, h)


def _sample_box(samples: np.ndarray | None, rng: np.random.Generator) -> Box:
    if samples is None:
        # An object never seen in dataset B: a mid-sized box anywhere.
        w, h = rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.3)
        return _clip(rng.uniform(0.0, 1.0 - w), rng.uniform(0.0, 1.0 - h), w, h)
    x, y, w, h = samples[rng.integers(len(samples))]
    return _clip(float(x), float(y), float(w), float(h))


def _box_samples(names: Sequence[str], boxes: Mapping[str, np.ndarray]) -> list[np.ndarray | None]:
    table = []
    for name in names:
        if name not in boxes:
            table.append(None)
            continue
        samples = np.asarray(boxes[name], dtype=float)
        if samples.size == 0:
            table.append(None)
            continue
        if samples.ndim != 2 or samples.shape[1] != 4:
            raise ValueError(f"boxes[{name!r}] has shape {samples.shape}, expected (n, 4)")
        table.append(samples)
    return table


def _troubled(names: Sequence[str], relations: Sequence[tuple[int, str, int]], placed: Sequence[Box]) -> set[int]:
    """Objects in a failing relation or an impossible overlap."""
    involved = {i for pair in overlap_violations(names, relations, placed) for i in pair}
    for s, p, o in relations:
        if relation_holds(p, placed[s], placed[o]) is False:
            involved.update((s, o))
    return involved


def place_objects(names: Sequence[str], relations: Sequence[tuple[int, str, int]],
                  boxes: Mapping[str, np.ndarray], rng: np.random.Generator, tries: int = 64,
                  *, repairs: int = 16) -> list[Box]:
    """A box for each name: sampled from the name's observed boxes (`boxes[name]`, shape (n, 4),
    normalised x, y, w, h), keeping the best of `tries` joint samples by `layout_score` (the first on
    ties). A name missing from `boxes` (or with no rows) gets a box 0.1-0.3 wide and high, anywhere.

    Then each object still in a failing relation or impossible overlap, smallest first (large
    background regions anchor the scene), is re-drawn up to `repairs` times, keeping the first draw
    that raises the score; `repairs=0` keeps the plain best of the tries. Deterministic for a given
    `rng` state.
    """
    if tries < 1:
        raise ValueError("tries must be at least 1")
    samples = _box_samples(names, boxes)
    _check_relations(len(names), relations)

    best: list[Box] = []
    best_score = -np.inf
    for _ in range(tries):
        placed = [_sample_box(s, rng) for s in samples]
        score = layout_score(names, relations, placed)
        if score > best_score:
            best, best_score = placed, score

    for i in sorted(_troubled(names, relations, best), key=lambda i: (_area(best[i]), i)):
        if i not in _troubled(names, relations, best):
            continue  # an earlier re-draw already fixed it
        for _ in range(repairs):
            trial = list(best)
            trial[i] = _sample_box(samples[i], rng)
            score = layout_score(names, relations, trial)
            if score > best_score:
                best, best_score = trial, score
                break
    return best


def _pixel_span(start: float, length: float, pixels: int) -> tuple[int, int]:
    # Half-up rounding (not Python's half-to-even), so a span's ends are easy to work out by hand.
    lo = int(np.floor(start * pixels + 0.5))
    hi = int(np.floor((start + length) * pixels + 0.5))
    lo = min(max(lo, 0), pixels - 1)
    return lo, min(max(hi, lo + 1), pixels)  # every object keeps at least one pixel


def label_map(placed: Sequence[Box], class_ids: Sequence[int], size: tuple[int, int] = (256, 256)) -> np.ndarray:
    """(H, W) uint16 label map: 0 is background; each object painted as its box filled with its class id,
    larger boxes first so smaller objects stay visible on top (equal areas: lower index first). `size`
    is (width, height)."""
    if len(placed) != len(class_ids):
        raise ValueError(f"{len(placed)} boxes for {len(class_ids)} class ids")
    for c in class_ids:
        if not 0 < int(c) <= np.iinfo(np.uint16).max:
            raise ValueError(f"class id {c} outside 1..65535 (0 is background)")
    width, height = size
    labels = np.zeros((height, width), dtype=np.uint16)
    for i in sorted(range(len(placed)), key=lambda i: (-_area(placed[i]), i)):
        x, y, w, h = placed[i]
        x0, x1 = _pixel_span(x, w, width)
        y0, y1 = _pixel_span(y, h, height)
        labels[y0:y1, x0:x1] = int(class_ids[i])
    return labels


def label_map_png(labels: np.ndarray) -> bytes:
    """The label map as a single-channel PNG whose pixel values are the class ids exactly (8-bit when all
    ids < 256, else 16-bit), as semantic image synthesizers read them."""
    from PIL import Image

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a label map is 2-D, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
        raise ValueError("class ids must lie in 0..65535")
    # Pillow picks the mode from the dtype: uint8 -> "L" (8-bit), uint16 -> "I;16" (16-bit grey).
    dtype = np.uint8 if not labels.size or labels.max() < 256 else np.uint16
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(labels.astype(dtype))).save(buffer, format="PNG")
    return buffer.getvalue()


def _palette(count: int) -> list[tuple[float, float, float]]:
    import matplotlib

    if count <= 10:
        colours = matplotlib.colormaps["tab10"].colors[:count]
    elif count <= 20:
        colours = matplotlib.colormaps["tab20"].colors[:count]
    else:
        hsv = matplotlib.colormaps["hsv"]
        colours = [hsv(k / count) for k in range(count)]
    return [tuple(float(v) for v in c[:3]) for c in colours]


def colour_legend_png(labels: np.ndarray, names_by_id: Mapping[int, str], title: str = "") -> bytes:
    """A human-readable rendering: each class id in a distinct colour (background white), with a legend
    listing id, colour and name (ids without a name are shown as '?')."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from emo_pipeline.core.plots import figure_png

    labels = np.asarray(labels)
    ids = [int(i) for i in np.unique(labels) if i != 0]
    image = np.ones((*labels.shape, 3))
    handles = []
    for class_id, colour in zip(ids, _palette(len(ids))):
        image[labels == class_id] = colour
        handles.append(Patch(facecolor=colour, edgecolor="black", linewidth=0.5,
                             label=f"{class_id}: {names_by_id.get(class_id, '?')}"))
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title)
    return figure_png(fig)
