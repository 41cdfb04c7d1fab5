"""Colour and texture feature families beside the paper's GLCM + CIECAM02 features.

These families are this project's addition, not the paper's: the paper's SVM uses texture and colour
features of its own, which `features.py` computes unchanged. The families here give a feature model
more to split on (`feature_gbm`); `FeatureConfig.families` picks which of them a table holds.

Every family but `hog` reads the image resized so its long side is `colour_texture_size` px (128 by
default) as 8-bit sRGB. Colour conversions are scikit-image's: `rgb2hsv` (H, S, V in [0, 1], H = 0 for
a grey pixel) and `rgb2lab` (CIELAB under D65, 2 degree observer: L in [0, 100]). The grey image is
PIL's ITU-R 601-2 luma, as for the GLCM. A histogram bin b of n over [low, high) holds the values with
floor((value - low) / (high - low) * n) = b; a value beyond either end counts in the end bin, so each
histogram sums to 1. Families and their columns:

- `hsv_joint`: joint histogram of H (8 bins), S (3) and V (3) over [0, 1], normalised:
  `hsvjoint_h<h>_s<s>_v<v>` (72 columns).
- `channel_histograms`: one normalised histogram per channel: 8 bins for H, S, V over [0, 1] and for L
  over [0, 100]; 9 bins of 16 for a and b over [-72, 72], so that the neutral colours (a, b = 0, where
  rounding puts a grey pixel on either side of zero) sit inside the middle bin rather than on an edge
  (about 98 % of Emotion6's pixels lie inside the range; the rest fall in the end bins):
  `chist_<channel>_b<bin>` with a two-digit bin (`chist_a_b04`; 50 columns).
- `colour_moments`: mean and standard deviation (population) of H, S, V, L, a, b over the whole image,
  `moment_<channel>_<mean|std>`, and over each cell of a 3 x 3 grid (rows and columns cut as evenly as
  `numpy.array_split` cuts them), `moment_<channel>_<mean|std>_g<row><col>` (120 columns). H is taken
  as a plain number in [0, 1), not as an angle.
- `hue_saturation`: 12-bin histogram of H over [0, 1) in which each pixel counts with its saturation,
  divided by the total saturation: the hues that are actually seen. All zeros for an image without
  any saturation (pure greys): `huesat_b<bin>` (12 columns).
- `percentiles`: the 10th, 25th, 50th, 75th and 90th percentiles of S and V (linear interpolation
  between order statistics, numpy's default): `pct_<S|V>_p<q>` (10 columns).
- `edges`: on the grey image scaled to [0, 1]: the share of pixels that are Canny edges (scikit-image
  `canny`, sigma 1, hysteresis thresholds 0.1 and 0.2, the border continued by its nearest pixel so
  that the frame is no edge), `edge_canny_density`; and the mean, standard deviation, median and 90th
  percentile of the Sobel gradient magnitude hypot(sobel_h, sobel_v) (scikit-image's 3 x 3 Sobel
  kernels divided by 4, reflected border): `edge_grad_<mean|std|p50|p90>` (5 columns).
- `lbp`: rotation-invariant uniform local binary patterns (scikit-image `local_binary_pattern`,
  method "uniform") of the 8-bit grey image with 8 neighbours at radius 1 and 16 at radius 2; the
  normalised histogram of the codes 0..P+1 over the pixels at least ceil(R) px from the border (a
  neighbour outside the image would read as black): `lbp_p8r1_b<code>` (10) and `lbp_p16r2_b<code>`
  (18 columns).
- `hog`: a coarse histogram of oriented gradients: the grey image resized to `hog_size` x `hog_size`
  px (64 by default; the aspect ratio is not kept, so each cell is a fixed quarter of the picture),
  2 x 2 cells of `hog_size // 2` px, 9 unsigned orientation bins of 20 degrees, one block of the 4
  cells normalised with L2-Hys (scikit-image `hog`): `hog_r<row>c<col>_o<bin>` (36 columns).

With every family, 333 columns (477 with the paper's 144).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

COLOUR_TEXTURE_FAMILIES: tuple[str, ...] = (
    "hsv_joint", "channel_histograms", "colour_moments", "hue_saturation", "percentiles", "edges", "lbp", "hog")

HSV_JOINT_BINS = (8, 3, 3)
# Fixed ranges, so a bin means the same for every image. skimage's rgb2lab gives a in [-86, 98] and b
# in [-108, 95] for sRGB, but photographs rarely leave [-72, 72]: narrower bins where the pixels are.
CHANNEL_RANGES: dict[str, tuple[float, float]] = {
    "H": (0.0, 1.0), "S": (0.0, 1.0), "V": (0.0, 1.0), "L": (0.0, 100.0), "a": (-72.0, 72.0), "b": (-72.0, 72.0)}
CHANNEL_BINS: dict[str, int] = {"H": 8, "S": 8, "V": 8, "L": 8, "a": 9, "b": 9}
CHANNELS: tuple[str, ...] = tuple(CHANNEL_RANGES)
GRID = 3
HUE_BINS = 12
PERCENTILES: tuple[int, ...] = (10, 25, 50, 75, 90)
CANNY_SIGMA = 1.0
CANNY_THRESHOLDS = (0.1, 0.2)
LBP_SETTINGS: tuple[tuple[int, int], ...] = ((8, 1), (16, 2))  # (neighbours P, radius R)
HOG_CELLS = 2
HOG_ORIENTATIONS = 9
# The smallest short side (at colour_texture_size) these families accept: the LBP leaves out a 2 px
# border and the grid needs pixels in each of its rows.
MIN_SIDE = 8


def family_columns(family: str) -> list[str]:
    """The columns of one family, in table order."""
    if family == "hsv_joint":
        h, s, v = HSV_JOINT_BINS
        return [f"hsvjoint_h{i}_s{j}_v{k}" for i in range(h) for j in range(s) for k in range(v)]
    if family == "channel_histograms":
        return [f"chist_{c}_b{b:02d}" for c in CHANNELS for b in range(CHANNEL_BINS[c])]
    if family == "colour_moments":
        whole = [f"moment_{c}_{stat}" for c in CHANNELS for stat in ("mean", "std")]
        grid = [f"moment_{c}_{stat}_g{r}{q}" for r in range(GRID) for q in range(GRID)
                for c in CHANNELS for stat in ("mean", "std")]
        return whole + grid
    if family == "hue_saturation":
        return [f"huesat_b{b:02d}" for b in range(HUE_BINS)]
    if family == "percentiles":
        return [f"pct_{c}_p{q:02d}" for c in ("S", "V") for q in PERCENTILES]
    if family == "edges":
        return ["edge_canny_density", "edge_grad_mean", "edge_grad_std", "edge_grad_p50", "edge_grad_p90"]
    if family == "lbp":
        return [f"lbp_p{p}r{r}_b{b:02d}" for p, r in LBP_SETTINGS for b in range(p + 2)]
    if family == "hog":
        return [f"hog_r{r}c{c}_o{o}" for r in range(HOG_CELLS) for c in range(HOG_CELLS)
                for o in range(HOG_ORIENTATIONS)]
    raise ValueError(f"unknown feature family {family!r}: choose from {', '.join(COLOUR_TEXTURE_FAMILIES)}")


def histogram_blocks(families: tuple[str, ...]) -> dict[str, list[str]]:
    """Each normalised histogram of `families` (its columns sum to 1 for every image), by name."""
    blocks: dict[str, list[str]] = {}
    if "hsv_joint" in families:
        blocks["hsvjoint"] = family_columns("hsv_joint")
    if "channel_histograms" in families:
        blocks.update({f"chist_{c}": [f"chist_{c}_b{b:02d}" for b in range(CHANNEL_BINS[c])] for c in CHANNELS})
    if "lbp" in families:
        blocks.update({f"lbp_p{p}r{r}": [f"lbp_p{p}r{r}_b{b:02d}" for b in range(p + 2)] for p, r in LBP_SETTINGS})
    return blocks


def binned(values: np.ndarray, bins: int, value_range: tuple[float, float]) -> np.ndarray:
    """Bin index of each value: equal bins over a fixed range, values outside it in the end bins."""
    low, high = value_range
    index = np.floor((np.asarray(values, dtype=np.float64) - low) / (high - low) * bins).astype(np.int64)
    return np.clip(index, 0, bins - 1)


def _normalised_counts(index: np.ndarray, bins: int, weights: np.ndarray | None = None) -> np.ndarray:
    counts = np.bincount(index.ravel(), weights=None if weights is None else weights.ravel(),
                         minlength=bins).astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def _named(prefix_columns: list[str], values) -> dict[str, float]:
    return {name: float(v) for name, v in zip(prefix_columns, values, strict=True)}


def colour_planes(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """H, S, V (scikit-image `rgb2hsv`) and L, a, b (`rgb2lab`, D65) of an (H, W, 3) 8-bit sRGB image."""
    from skimage.color import rgb2hsv, rgb2lab

    hsv = rgb2hsv(rgb)
    lab = rgb2lab(rgb)
    return {"H": hsv[..., 0], "S": hsv[..., 1], "V": hsv[..., 2], "L": lab[..., 0], "a": lab[..., 1], "b": lab[..., 2]}


def _hsv_joint(planes: dict[str, np.ndarray]) -> dict[str, float]:
    h, s, v = HSV_JOINT_BINS
    index = (binned(planes["H"], h, (0, 1)) * s + binned(planes["S"], s, (0, 1))) * v + binned(planes["V"], v, (0, 1))
    return _named(family_columns("hsv_joint"), _normalised_counts(index, h * s * v))


def _channel_histograms(planes: dict[str, np.ndarray]) -> dict[str, float]:
    values = np.concatenate([_normalised_counts(binned(planes[c], CHANNEL_BINS[c], CHANNEL_RANGES[c]), CHANNEL_BINS[c])
                             for c in CHANNELS])
    return _named(family_columns("channel_histograms"), values)


def _colour_moments(planes: dict[str, np.ndarray]) -> dict[str, float]:
    values = [stat for c in CHANNELS for stat in (planes[c].mean(), planes[c].std())]
    rows, cols = planes["H"].shape
    row_cuts = np.array_split(np.arange(rows), GRID)
    col_cuts = np.array_split(np.arange(cols), GRID)
    for r in range(GRID):
        for q in range(GRID):
            window = (slice(row_cuts[r][0], row_cuts[r][-1] + 1), slice(col_cuts[q][0], col_cuts[q][-1] + 1))
            values += [stat for c in CHANNELS for stat in (planes[c][window].mean(), planes[c][window].std())]
    return _named(family_columns("colour_moments"), values)


def _hue_saturation(planes: dict[str, np.ndarray]) -> dict[str, float]:
    counts = _normalised_counts(binned(planes["H"], HUE_BINS, (0, 1)), HUE_BINS, weights=planes["S"])
    return _named(family_columns("hue_saturation"), counts)


def _percentiles(planes: dict[str, np.ndarray]) -> dict[str, float]:
    values = np.concatenate([np.percentile(planes[c], PERCENTILES) for c in ("S", "V")])
    return _named(family_columns("percentiles"), values)


def _edges(grey: np.ndarray) -> dict[str, float]:
    from skimage.feature import canny
    from skimage.filters import sobel_h, sobel_v

    image = grey.astype(np.float64) / 255.0
    low, high = CANNY_THRESHOLDS
    edges = canny(image, sigma=CANNY_SIGMA, low_threshold=low, high_threshold=high, mode="nearest")
    magnitude = np.hypot(sobel_h(image), sobel_v(image))
    p50, p90 = np.percentile(magnitude, (50, 90))
    return _named(family_columns("edges"), [edges.mean(), magnitude.mean(), magnitude.std(), p50, p90])


def _lbp(grey: np.ndarray) -> dict[str, float]:
    from skimage.feature import local_binary_pattern

    values = []
    for p, r in LBP_SETTINGS:
        codes = local_binary_pattern(grey, p, r, method="uniform").astype(np.int64)
        margin = math.ceil(r)
        values.append(_normalised_counts(codes[margin:-margin, margin:-margin], p + 2))
    return _named(family_columns("lbp"), np.concatenate(values))


def _hog(grey: np.ndarray, hog_size: int) -> dict[str, float]:
    from skimage.feature import hog

    small = Image.fromarray(grey).resize((hog_size, hog_size), Image.Resampling.LANCZOS)
    cell = hog_size // HOG_CELLS
    values = hog(np.asarray(small, dtype=np.float64) / 255.0, orientations=HOG_ORIENTATIONS,
                 pixels_per_cell=(cell, cell), cells_per_block=(HOG_CELLS, HOG_CELLS), block_norm="L2-Hys",
                 feature_vector=True)
    return _named(family_columns("hog"), values)


def colour_texture_features(rgb: np.ndarray, families: tuple[str, ...], hog_size: int = 64) -> dict[str, float]:
    """The features of `families` for an (H, W, 3) 8-bit sRGB image already at the colour-texture size."""
    unknown = [f for f in families if f not in COLOUR_TEXTURE_FAMILIES]
    if unknown:
        raise ValueError(f"unknown feature families {unknown}: choose from {', '.join(COLOUR_TEXTURE_FAMILIES)}")
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image of {rgb.shape[1]}x{rgb.shape[0]} px at the colour-texture size is too small: "
                         f"its short side must be at least {MIN_SIDE} px")
    out: dict[str, float] = {}
    if any(f in families for f in ("hsv_joint", "channel_histograms", "colour_moments", "hue_saturation",
                                   "percentiles")):
        planes = colour_planes(rgb)
        for family, compute in (("hsv_joint", _hsv_joint), ("channel_histograms", _channel_histograms),
                                ("colour_moments", _colour_moments), ("hue_saturation", _hue_saturation),
                                ("percentiles", _percentiles)):
            if family in families:
                out.update(compute(planes))
    if any(f in families for f in ("edges", "lbp", "hog")):
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        if "edges" in families:
            out.update(_edges(grey))
        if "lbp" in families:
            out.update(_lbp(grey))
        if "hog" in families:
            out.update(_hog(grey, hog_size))
    return out
