"""The colour and texture feature families against independent computations: HSV by the standard
library's colorsys, CIELAB by colour-science, percentiles, moments and histograms by hand, LBP and HOG
re-implemented in numpy from their definitions, the Sobel magnitude by a hand convolution, the Canny
density on a picture whose edge is known; and the paper's features unchanged beside them."""

import colorsys
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emo_pipeline.image_emotion.colour_texture import (
    CHANNEL_RANGES,
    COLOUR_TEXTURE_FAMILIES,
    colour_texture_features,
    family_columns,
    histogram_blocks,
)
from emo_pipeline.image_emotion.features import (
    FAMILIES,
    PAPER_FAMILIES,
    FeatureConfig,
    columns_of,
    feature_table,
    image_features,
)


def _photo_like(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus noise and a grey patch: every channel spread, some pixels unsaturated."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols]
    rgb = np.stack([255 * r / rows, 255 * c / cols, 128 + 100 * np.sin(r / 5.0 + c / 7.0)], axis=2)
    rgb = np.clip(rgb + rng.normal(0, 25, rgb.shape), 0, 255).astype(np.uint8)
    rgb[: rows // 4, : cols // 4] = rgb[: rows // 4, : cols // 4, :1]  # grey: S = 0 there
    return rgb


def _grey_rgb(grey: np.ndarray) -> np.ndarray:
    # PIL's luma of (g, g, g) is g, so the families' grey image is exactly `grey`.
    return np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8)


def _bin(value: float, bins: int, low: float, high: float) -> int:
    return min(max(math.floor((value - low) / (high - low) * bins), 0), bins - 1)


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (the 'linear' definition, by hand)."""
    ordered = sorted(values)
    position = q / 100 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def _cuts(n: int, parts: int = 3) -> list[range]:
    """Rows (or columns) of each grid cell: the first n % parts cells one longer."""
    sizes = [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
    starts = np.cumsum([0, *sizes])
    return [range(starts[i], starts[i + 1]) for i in range(parts)]


def test_colour_families_match_colorsys_colour_science_and_hand_statistics():
    import colour

    rgb = _photo_like(30, 40)
    features = colour_texture_features(rgb, ("hsv_joint", "channel_histograms", "colour_moments",
                                             "hue_saturation", "percentiles"))
    n = 30 * 40
    pixels = rgb.reshape(-1, 3) / 255.0
    hsv = np.array([colorsys.rgb_to_hsv(*p) for p in pixels]).reshape(30, 40, 3)
    white = colour.xy_to_XYZ(colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D65"])
    lab = colour.XYZ_to_Lab(colour.sRGB_to_XYZ(rgb / 255.0), colour.XYZ_to_xy(white)).reshape(30, 40, 3)
    planes = {**{c: hsv[..., i] for i, c in enumerate("HSV")}, **{c: lab[..., i] for i, c in enumerate("Lab")}}
    # A value within rounding of a bin edge may land in the neighbouring bin in one of two conversions.
    slack = 2 / n

    joint = np.zeros((8, 3, 3))
    for h, s, v in hsv.reshape(-1, 3):
        joint[_bin(h, 8, 0, 1), _bin(s, 3, 0, 1), _bin(v, 3, 0, 1)] += 1 / n
    got = np.array([features[f"hsvjoint_h{i}_s{j}_v{k}"] for i in range(8) for j in range(3) for k in range(3)])
    np.testing.assert_allclose(got, joint.ravel(), atol=slack)

    for channel, (low, high) in CHANNEL_RANGES.items():
        bins = 9 if channel in "ab" else 8
        counts = np.zeros(bins)
        for value in planes[channel].ravel():
            counts[_bin(value, bins, low, high)] += 1 / n
        got = np.array([features[f"chist_{channel}_b{b:02d}"] for b in range(bins)])
        np.testing.assert_allclose(got, counts, atol=slack, err_msg=channel)

    for channel, plane in planes.items():
        tolerance = 1e-9 if channel in "HSV" else 0.05  # two CIELAB implementations agree to a few 1e-3
        values = plane.ravel().tolist()
        mean = sum(values) / len(values)
        assert features[f"moment_{channel}_mean"] == pytest.approx(mean, abs=tolerance)
        assert features[f"moment_{channel}_std"] == pytest.approx(
            math.sqrt(sum((x - mean) ** 2 for x in values) / len(values)), abs=tolerance)
        for i, rows in enumerate(_cuts(30)):
            for j, cols in enumerate(_cuts(40)):
                cell = [plane[r, c] for r in rows for c in cols]
                cell_mean = sum(cell) / len(cell)
                assert features[f"moment_{channel}_mean_g{i}{j}"] == pytest.approx(cell_mean, abs=tolerance)
                assert features[f"moment_{channel}_std_g{i}{j}"] == pytest.approx(
                    math.sqrt(sum((x - cell_mean) ** 2 for x in cell) / len(cell)), abs=tolerance)

    weighted = np.zeros(12)
    for h, s, _ in hsv.reshape(-1, 3):
        weighted[_bin(h, 12, 0, 1)] += s
    np.testing.assert_allclose([features[f"huesat_b{b:02d}"] for b in range(12)], weighted / weighted.sum(),
                               atol=1e-9)

    for channel in ("S", "V"):
        for q in (10, 25, 50, 75, 90):
            assert features[f"pct_{channel}_p{q:02d}"] == pytest.approx(
                _percentile(planes[channel].ravel().tolist(), q), abs=1e-9), (channel, q)


def test_a_grey_image_has_no_hue_and_all_of_its_mass_at_zero_saturation():
    grey = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1))
    features = colour_texture_features(_grey_rgb(grey), ("hsv_joint", "hue_saturation", "percentiles"))
    assert all(features[c] == 0 for c in family_columns("hue_saturation"))
    assert sum(features[f"hsvjoint_h0_s0_v{v}"] for v in range(3)) == pytest.approx(1.0)
    assert features["pct_S_p90"] == 0
    assert features["pct_V_p50"] == pytest.approx(_percentile((grey / 255.0).ravel().tolist(), 50))


def _hand_lbp_histogram(grey: np.ndarray, points: int, radius: int) -> np.ndarray:
    """Rotation-invariant uniform LBP from its definition: P samples on a circle of radius R (bilinear
    between the four nearest pixels; the sample positions rounded to 5 decimals), 1 where a sample is
    >= the centre; a pattern with at most 2 changes along the circle has code = its number of ones,
    others P + 1. Histogram over the pixels at least R from the border."""
    image = grey.astype(np.float64)
    rows, cols = image.shape
    angles = 2 * np.pi * np.arange(points) / points
    offsets = list(zip(np.round(-radius * np.sin(angles), 5), np.round(radius * np.cos(angles), 5)))
    counts = np.zeros(points + 2)
    for r in range(radius, rows - radius):
        for c in range(radius, cols - radius):
            bits = []
            for dr, dc in offsets:
                y, x = r + dr, c + dc
                y0, x0, y1, x1 = math.floor(y), math.floor(x), math.ceil(y), math.ceil(x)
                fy, fx = y - y0, x - x0
                top = (1 - fx) * image[y0, x0] + fx * image[y0, x1]
                bottom = (1 - fx) * image[y1, x0] + fx * image[y1, x1]
                bits.append(1 if (1 - fy) * top + fy * bottom - image[r, c] >= 0 else 0)
            changes = sum(abs(bits[i] - bits[(i + 1) % points]) for i in range(points))
            counts[sum(bits) if changes <= 2 else points + 1] += 1
    return counts / counts.sum()


def test_lbp_matches_its_definition_computed_by_hand():
    rng = np.random.default_rng(1)
    # Smooth structure with noise: uniform and non-uniform patterns both occur.
    r, c = np.mgrid[0:28, 0:36]
    grey = np.clip(120 + 60 * np.sin(r / 3.0) * np.cos(c / 4.0) + rng.normal(0, 12, r.shape), 0, 255).astype(np.uint8)
    features = colour_texture_features(_grey_rgb(grey), ("lbp",))
    for points, radius in ((8, 1), (16, 2)):
        got = np.array([features[f"lbp_p{points}r{radius}_b{b:02d}"] for b in range(points + 2)])
        expected = _hand_lbp_histogram(grey, points, radius)
        assert 0.05 < expected[points + 1] < 0.95  # both kinds of pattern present
        np.testing.assert_allclose(got, expected, atol=1e-12, err_msg=f"P={points} R={radius}")


def test_hog_matches_its_definition_computed_by_hand():
    rng = np.random.default_rng(2)
    r, c = np.mgrid[0:64, 0:64]
    grey = np.clip(128 + 80 * np.sin(r / 6.0 + c / 11.0) + 40 * (c > 40) + rng.normal(0, 10, r.shape),
                   0, 255).astype(np.uint8)
    # A 64 px square at hog_size 64: the HOG reads these very pixels.
    features = colour_texture_features(_grey_rgb(grey), ("hog",), hog_size=64)
    image = grey / 255.0
    g_row, g_col = np.zeros_like(image), np.zeros_like(image)
    g_row[1:-1, :] = image[2:, :] - image[:-2, :]   # central differences, 0 on the border
    g_col[:, 1:-1] = image[:, 2:] - image[:, :-2]
    magnitude = np.hypot(g_row, g_col)
    orientation = np.degrees(np.arctan2(g_row, g_col)) % 180  # unsigned
    cells = np.zeros((2, 2, 9))
    for i in range(2):
        for j in range(2):
            window = (slice(32 * i, 32 * i + 32), slice(32 * j, 32 * j + 32))
            for o in range(9):
                inside = (orientation[window] >= 20 * o) & (orientation[window] < 20 * (o + 1))
                cells[i, j, o] = magnitude[window][inside].sum()
    block = cells / np.sqrt((cells ** 2).sum() + 1e-10)  # L2-Hys: normalise, clip at 0.2, normalise again
    block = np.minimum(block, 0.2)
    block = block / np.sqrt((block ** 2).sum() + 1e-10)
    got = np.array([features[f"hog_r{i}c{j}_o{o}"] for i in range(2) for j in range(2) for o in range(9)])
    np.testing.assert_allclose(got, block.ravel(), rtol=1e-5, atol=1e-7)


def test_sobel_statistics_match_a_hand_convolution():
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (20, 26)).astype(np.uint8)
    features = colour_texture_features(_grey_rgb(grey), ("edges",))
    image = np.pad(grey / 255.0, 1, mode="symmetric")  # the border mirrored: d c b a | a b c d
    rows, cols = grey.shape
    smooth, slope = np.array([1, 2, 1]), np.array([1, 0, -1])
    h = np.zeros((rows, cols))
    v = np.zeros((rows, cols))
    for r in range(rows):
        for c in range(cols):
            window = image[r:r + 3, c:c + 3]
            h[r, c] = (np.outer(slope, smooth) * window).sum() / 4
            v[r, c] = (np.outer(smooth, slope) * window).sum() / 4
    magnitude = np.hypot(h, v).ravel().tolist()
    mean = sum(magnitude) / len(magnitude)
    assert features["edge_grad_mean"] == pytest.approx(mean, rel=1e-9)
    assert features["edge_grad_std"] == pytest.approx(
        math.sqrt(sum((m - mean) ** 2 for m in magnitude) / len(magnitude)), rel=1e-9)
    assert features["edge_grad_p50"] == pytest.approx(_percentile(magnitude, 50), rel=1e-9)
    assert features["edge_grad_p90"] == pytest.approx(_percentile(magnitude, 90), rel=1e-9)


def test_canny_density_is_one_line_for_one_step_edge_and_zero_without_edges():
    rows, cols = 24, 32
    step = np.zeros((rows, cols), dtype=np.uint8)
    step[:, cols // 2] = 128  # the edge's centre on a pixel (a step between two pixels gives a tie of two)
    step[:, cols // 2 + 1:] = 255
    density = colour_texture_features(_grey_rgb(step), ("edges",))["edge_canny_density"]
    # One vertical edge line, one pixel wide; Canny leaves out the outermost rows.
    assert (rows - 2) / (rows * cols) <= density <= rows / (rows * cols)
    flat = colour_texture_features(_grey_rgb(np.full((rows, cols), 90, np.uint8)), ("edges",))
    assert flat["edge_canny_density"] == 0 and flat["edge_grad_p90"] == pytest.approx(0, abs=1e-12)


def test_columns_histograms_and_a_too_small_image():
    full = FeatureConfig(families=FAMILIES)
    columns = full.columns()
    assert len(columns) == len(set(columns)) == 144 + 333
    assert FeatureConfig().columns() == columns_of(columns, PAPER_FAMILIES) == columns[:144]
    assert columns[144:] == [c for f in COLOUR_TEXTURE_FAMILIES for c in family_columns(f)]
    features = colour_texture_features(_photo_like(24, 32), COLOUR_TEXTURE_FAMILIES)
    assert list(features) == columns[144:] and all(np.isfinite(v) for v in features.values())
    for name, block in histogram_blocks(COLOUR_TEXTURE_FAMILIES).items():
        assert sum(features[c] for c in block) == pytest.approx(1.0, abs=1e-12), name
    with pytest.raises(ValueError, match="families"):
        FeatureConfig(families=("glcm", "sift"))
    with pytest.raises(ValueError, match="too small"):
        colour_texture_features(_photo_like(5, 40), ("lbp",))


def test_new_families_leave_the_papers_features_unchanged(tmp_path: Path):
    path = tmp_path / "photo.png"
    Image.fromarray(_photo_like(90, 120)).save(path)
    small = {"glcm_size": 64, "glcm_levels": 16, "glcm_distances": (1, 2), "colour_size": 48,
             "colour_texture_size": 64}
    paper = image_features(path, FeatureConfig(**small))
    everything = image_features(path, FeatureConfig(families=FAMILIES, **small))
    assert {k: everything[k] for k in paper} == paper
    # The table of a worker process holds every column in order, the same values as in this process.
    table = feature_table({"photo": path}, FeatureConfig(families=FAMILIES, **small), workers=1).features
    assert list(table.columns[1:]) == FeatureConfig(families=FAMILIES, **small).columns()
    np.testing.assert_array_equal(table.iloc[0, 1:].to_numpy(dtype=float),
                                  [everything[c] for c in table.columns[1:]])
