"""Sampling scenes from the grammar, many at once, as columns of numpy arrays.

A scene is a picture size, a mood (the emotion the scene was composed around: the search keyword of an
Emotion6 folder, the emotion of an EmotionROI folder, a random one for Visual Genome), a palette and a
list of placed objects with boxes. Scenes are generated in batches with vectorised numpy so that the
full-size Visual Genome world (108,077 pictures, 3.8 million objects) takes seconds, not hours; the
same code makes the 300-picture demo world.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emo_pipeline.core.emotions import KEYWORDS
from emo_pipeline.synthetic import grammar as g

# Share of scenes that are outdoors (sky and ground bands, trees, buildings) rather than indoors.
OUTDOOR_SHARE = 0.7
# Share of scenes whose palette is drawn to suit their mood (the rest take any palette).
PALETTE_MATCHES_MOOD = 0.6
# Per mood: share of foreground objects taken from the mood-biased emotional pool, the rest being
# everyday background objects. A neutral scene is mostly everyday objects.
EMOTIONAL_SHARE = np.array([0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.2])
# How sharply the emotional pool prefers objects with high affinity to the mood (affinity ** power).
MOOD_SHARPNESS = 3.0
# Chance that an annotated box runs a few pixels past the picture border, as some real ones do.
BORDER_OVERRUN_SHARE = 0.012

# Relative frequency of everyday objects in the background pool.
_BACKGROUND_FREQUENCY = {
    "building": 1.0, "tree": 1.5, "street light": 0.6, "cloud": 1.0, "fence": 0.6, "bench": 0.5,
    "man": 1.2, "woman": 1.2, "car": 0.8, "window": 0.6,
}
# Drawing layers: bands first, then free-standing objects (largest first), then parts on their hosts.
_LAYER_BAND, _LAYER_OBJECT, _LAYER_PART = 0, 1, 2


@dataclass(frozen=True)
class SceneStyle:
    """How busy the scenes are; the demo and full-size worlds differ only here."""

    foreground_mean: float       # Poisson mean of foreground objects beyond the first
    foreground_max: int
    windows_mean: float          # Poisson mean of windows beyond the first on a building
    object_scale: float = 1.0    # multiplies the catalogue's object widths (busy scenes: smaller objects)
    shirt_share: float = 0.6     # share of people wearing a (drawn, annotated) shirt
    hat_share: float = 0.35


@dataclass
class SceneBatch:
    """Scenes in columnar form. Objects of scene i are rows start[i]:start[i+1], in drawing order."""

    width: np.ndarray    # (n,) int
    height: np.ndarray   # (n,) int
    mood: np.ndarray     # (n,) index into EMOTIONS
    palette: np.ndarray  # (n,) index into PALETTES
    outdoor: np.ndarray  # (n,) bool
    start: np.ndarray    # (n + 1,) int
    kind: np.ndarray     # (m,) index into OBJECTS
    x: np.ndarray        # (m,) int, annotated box; may run past the right/bottom border
    y: np.ndarray
    w: np.ndarray
    h: np.ndarray
    host: np.ndarray     # (m,) row of the object a part sits on, -1 for free objects

    def __len__(self) -> int:
        return len(self.width)

    @property
    def n_objects(self) -> int:
        return len(self.kind)

    def image_of_object(self) -> np.ndarray:
        """(m,) the scene each object row belongs to."""
        return np.repeat(np.arange(len(self)), np.diff(self.start))

    def objects(self, i: int) -> slice:
        return slice(int(self.start[i]), int(self.start[i + 1]))

    def visible_area(self) -> np.ndarray:
        """(m,) box area clipped to the picture, in pixels."""
        img = self.image_of_object()
        x1 = np.minimum(self.x + self.w, self.width[img])
        y1 = np.minimum(self.y + self.h, self.height[img])
        return np.clip(x1 - self.x, 0, None) * np.clip(y1 - self.y, 0, None)


def picture_sizes(rng: np.random.Generator, n: int, long_sides: tuple[tuple[int, float], ...]) -> tuple[
        np.ndarray, np.ndarray]:
    """Sizes of n pictures: a long side drawn from `long_sides` ((pixels, weight), ...) and a photo aspect."""
    sides = np.array([s for s, _ in long_sides])
    weights = np.array([wt for _, wt in long_sides], dtype=np.float64)
    long = sides[rng.choice(len(sides), size=n, p=weights / weights.sum())]
    # short / long side of common photo formats; about a fifth are portrait.
    ratios = np.array([0.75, 0.75, 0.75, 0.667, 0.5625, 1.0])
    short = np.round(long * ratios[rng.integers(0, len(ratios), size=n)]).astype(np.int64)
    portrait = rng.random(n) < 0.2
    width = np.where(portrait, short, long)
    height = np.where(portrait, long, short)
    return width.astype(np.int64), height.astype(np.int64)


def _cdf_rows(weights: np.ndarray) -> np.ndarray:
    """Row-normalised cumulative sums, for vectorised categorical sampling."""
    cdf = np.cumsum(weights, axis=1)
    return cdf / cdf[:, -1:]


def _categorical(rng: np.random.Generator, cdf: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One draw per entry of `rows` from the distribution in cdf[row]."""
    u = 1.0 - rng.random(len(rows))  # in (0, 1], so a zero-weight first entry is never drawn
    picks = (cdf[rows] < u[:, None]).sum(axis=1)
    return np.minimum(picks, cdf.shape[1] - 1)


def _kind_table() -> np.ndarray:
    """CDF rows over object kinds, indexed by mood * 4 + outdoor * 2 + emotional_pool."""
    aff = g.affinity_matrix()
    placement = [k.placement for k in g.OBJECTS]
    rows = []
    for mood in range(g.N_EMOTIONS):
        for outdoor in (False, True):
            allowed = np.array([(k.outdoor if outdoor else k.indoor) for k in g.OBJECTS], dtype=bool)
            free = np.array([p not in (g.SKY_BAND, g.GROUND_BAND) for p in placement], dtype=bool)
            background = np.array([_BACKGROUND_FREQUENCY.get(k.name, 0.0) for k in g.OBJECTS])
            if not outdoor:
                background[g.KIND_INDEX["window"]] *= 2.0  # windows in the wall of a room
            rows.append(np.where(allowed & free, background, 0.0))
            emotional = np.array([k.emotional for k in g.OBJECTS], dtype=bool)
            rows.append(np.where(allowed & emotional, aff[:, mood] ** MOOD_SHARPNESS, 0.0))
    return _cdf_rows(np.array(rows))


_KIND_CDF = _kind_table()
_PALETTE_CDF = _cdf_rows(np.vstack([g.palette_matrix().T ** MOOD_SHARPNESS, np.ones((1, g.N_PALETTES))]))

_PLACEMENT_CODES = (g.SKY_BAND, g.GROUND_BAND, g.STANDING, g.AIRBORNE, g.ANYWHERE, g.PART)
_PLACEMENT = np.array([_PLACEMENT_CODES.index(k.placement) for k in g.OBJECTS])
_WMIN = np.array([k.width[0] for k in g.OBJECTS])
_WMAX = np.array([k.width[1] for k in g.OBJECTS])
_ASPECT = np.array([k.aspect for k in g.OBJECTS])
_P_SKY, _P_GROUND, _P_STANDING, _P_AIRBORNE, _P_ANYWHERE, _P_PART = range(len(_PLACEMENT_CODES))


def sample_scenes(rng: np.random.Generator, moods: np.ndarray, width: np.ndarray, height: np.ndarray,
                  style: SceneStyle) -> SceneBatch:
    """Compose one scene per mood, for pictures of the given sizes."""
    n = len(moods)
    moods = np.asarray(moods, dtype=np.int64)
    outdoor = rng.random(n) < OUTDOOR_SHARE
    palette_row = np.where(rng.random(n) < PALETTE_MATCHES_MOOD, moods, g.N_EMOTIONS)
    palette = _categorical(rng, _PALETTE_CDF, palette_row)
    W = width.astype(np.float64)
    H = height.astype(np.float64)

    # Bands: every outdoor scene has a sky and a ground (grass or road).
    out_idx = np.flatnonzero(outdoor)
    ground_kind = np.where(rng.random(len(out_idx)) < 0.6, g.KIND_INDEX["grass"], g.KIND_INDEX["road"])
    sky_h = H[out_idx] * rng.uniform(0.3, 0.45, len(out_idx))
    ground_h = H[out_idx] * rng.uniform(0.2, 0.32, len(out_idx))
    band_img = np.concatenate([out_idx, out_idx])
    band_kind = np.concatenate([np.full(len(out_idx), g.KIND_INDEX["sky"]), ground_kind])
    band_x = np.zeros(2 * len(out_idx))
    band_y = np.concatenate([np.zeros(len(out_idx)), H[out_idx] - ground_h])
    band_w = W[band_img]
    band_h = np.concatenate([sky_h, ground_h])

    # Where things stand: just inside the ground band outdoors, on the floor indoors.
    ground_line = H * rng.uniform(0.75, 0.95, n)
    ground_line[out_idx] = H[out_idx] - ground_h * rng.uniform(0.3, 0.8, len(out_idx))

    # Foreground objects.
    counts = np.minimum(1 + rng.poisson(style.foreground_mean, n), style.foreground_max)
    fg_img = np.repeat(np.arange(n), counts)
    emotional = rng.random(len(fg_img)) < EMOTIONAL_SHARE[moods[fg_img]]
    table_row = moods[fg_img] * 4 + outdoor[fg_img] * 2 + emotional
    fg_kind = _categorical(rng, _KIND_CDF, table_row)
    placement = _PLACEMENT[fg_kind]
    placement = np.where(placement == _P_PART, _P_AIRBORNE, placement)  # a window on its own: in a wall
    Wi, Hi = W[fg_img], H[fg_img]
    fw = Wi * np.minimum(rng.uniform(_WMIN[fg_kind], _WMAX[fg_kind]) * style.object_scale, 0.95)
    fh = np.minimum(fw * _ASPECT[fg_kind] * rng.uniform(0.85, 1.15, len(fg_img)), 0.9 * Hi)
    fx = rng.uniform(-0.04, 1.0, len(fg_img)) * (Wi - 0.96 * fw)
    standing_bottom = np.minimum(ground_line[fg_img] + Hi * rng.normal(0.0, 0.04, len(fg_img)), Hi)
    fh = np.where(placement == _P_STANDING, np.minimum(fh, 0.92 * standing_bottom), fh)
    fy = np.select(
        [placement == _P_STANDING, placement == _P_AIRBORNE],
        [standing_bottom - fh, rng.uniform(0.02, 1.0, len(fg_img)) * np.maximum(0.5 * Hi - 0.5 * fh, 0.0)],
        default=rng.random(len(fg_img)) * (Hi - fh),
    )

    # Parts: shirts and hats on people, windows on buildings.
    parts = [_wearables(rng, fg_kind, fx, fy, fw, fh, style),
             _windows(rng, fg_kind, fx, fy, fw, fh, style)]
    part_host = np.concatenate([p[0] for p in parts])
    part_kind = np.concatenate([p[1] for p in parts])
    part_box = [np.concatenate([p[2][j] for p in parts]) for j in range(4)]

    n_band, n_fg = len(band_img), len(fg_img)
    img = np.concatenate([band_img, fg_img, fg_img[part_host]])
    kind = np.concatenate([band_kind, fg_kind, part_kind])
    x = np.concatenate([band_x, fx, part_box[0]])
    y = np.concatenate([band_y, fy, part_box[1]])
    w = np.concatenate([band_w, fw, part_box[2]])
    h = np.concatenate([band_h, fh, part_box[3]])
    host = np.concatenate([np.full(n_band + n_fg, -1), n_band + part_host])
    layer = np.concatenate([np.full(n_band, _LAYER_BAND), np.full(n_fg, _LAYER_OBJECT),
                            np.full(len(part_kind), _LAYER_PART)])

    # Pixel boxes inside the picture, then a few that run past the right or bottom border.
    xi = np.clip(np.floor(x), 0, W[img] - 2).astype(np.int64)
    yi = np.clip(np.floor(y), 0, H[img] - 2).astype(np.int64)
    wi = np.clip(np.round(w), 2, W[img] - xi).astype(np.int64)
    hi = np.clip(np.round(h), 2, H[img] - yi).astype(np.int64)
    overrun = (rng.random(len(kind)) < BORDER_OVERRUN_SHARE) & (layer != _LAYER_BAND)
    extra = rng.integers(1, 13, len(kind))
    right = rng.random(len(kind)) < 0.5
    wi = np.where(overrun & right, W[img].astype(np.int64) - xi + extra, wi)
    hi = np.where(overrun & ~right, H[img].astype(np.int64) - yi + extra, hi)

    # Drawing order within a scene: layer, then larger boxes first so small ones stay visible.
    order = np.lexsort((-(wi * hi), layer, img))
    new_row = np.empty_like(order)
    new_row[order] = np.arange(len(order))
    host = host[order]
    host = np.where(host >= 0, new_row[np.maximum(host, 0)], -1)
    start = np.concatenate([[0], np.cumsum(np.bincount(img, minlength=n))])
    return SceneBatch(width=width.astype(np.int64), height=height.astype(np.int64), mood=moods,
                      palette=palette.astype(np.int64), outdoor=outdoor, start=start.astype(np.int64),
                      kind=kind[order].astype(np.int64), x=xi[order], y=yi[order], w=wi[order], h=hi[order],
                      host=host)


# Parts placed on hosts: (host row, part kind, (x, y, w, h)).
_Parts = tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def _wearables(rng: np.random.Generator, kind: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray,
               h: np.ndarray, style: SceneStyle) -> _Parts:
    """Shirts over the torso and hats on the head of people (boxes match the drawn figure)."""
    people = np.flatnonzero(np.isin(kind, [g.KIND_INDEX[p] for p in g.PEOPLE]))
    shirt = people[rng.random(len(people)) < style.shirt_share]
    hat = people[rng.random(len(people)) < style.hat_share]
    host = np.concatenate([shirt, hat])
    part_kind = np.concatenate([np.full(len(shirt), g.KIND_INDEX["shirt"]), np.full(len(hat), g.KIND_INDEX["hat"])])
    px = np.concatenate([x[shirt] + 0.15 * w[shirt], x[hat] + 0.22 * w[hat]])
    py = np.concatenate([y[shirt] + 0.21 * h[shirt], y[hat]])
    pw = np.concatenate([0.7 * w[shirt], 0.56 * w[hat]])
    ph = np.concatenate([0.36 * h[shirt], 0.09 * h[hat]])
    return host, part_kind, (px, py, pw, ph)


def _windows(rng: np.random.Generator, kind: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray,
             h: np.ndarray, style: SceneStyle) -> _Parts:
    """Windows on the facade of buildings."""
    buildings = np.flatnonzero(kind == g.KIND_INDEX["building"])
    counts = 1 + rng.poisson(style.windows_mean, len(buildings))
    host = np.repeat(buildings, counts)
    rel_w = rng.uniform(0.16, 0.26, len(host))
    px = x[host] + w[host] * rng.uniform(0.06, 1.0, len(host)) * (0.94 - rel_w)
    pw = rel_w * w[host]
    ph = np.minimum(pw * 1.3, 0.2 * h[host])
    py = y[host] + h[host] * rng.uniform(0.08, 0.7, len(host))
    return host, np.full(len(host), g.KIND_INDEX["window"]), (px, py, pw, ph)


def sample_keyword_folders(rng: np.random.Generator, per_folder: int, mood_share: float, long_side: int,
                           style: SceneStyle, neutral_share: float = 0.0) -> tuple[list[str], SceneBatch]:
    """Scenes for `<keyword>/<n>.jpg` folders (Emotion6, EmotionROI): keys in folder order, and the batch.

    A share `mood_share` of each folder's scenes is composed around the folder's emotion, the rest around
    a random one (which may be the folder's again); of the scenes whose emotion is not the folder's, a
    share `neutral_share` is turned to neutral.
    """
    n = len(KEYWORDS) * per_folder
    folder = np.repeat(np.arange(len(KEYWORDS)), per_folder)
    number = np.tile(np.arange(1, per_folder + 1), len(KEYWORDS))
    keys = [f"{KEYWORDS[k]}/{j}.jpg" for k, j in zip(folder, number)]
    moods = np.where(rng.random(n) < mood_share, folder, rng.integers(0, g.N_EMOTIONS, n))
    if neutral_share > 0:  # no draw otherwise: worlds that do not ask for it keep their random stream
        off_keyword = moods != folder
        moods = np.where(off_keyword & (rng.random(n) < neutral_share), g.NEUTRAL, moods)
    width, height = picture_sizes(rng, n, ((long_side, 1.0),))
    return keys, sample_scenes(rng, moods, width, height, style)

