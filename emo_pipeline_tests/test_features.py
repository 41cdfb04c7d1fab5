"""Hand-made features: GLCM values against the co-occurrence definition computed by hand, CIECAM02
against colour-science's documented example and a direct call, histograms, bad images."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emo_pipeline.image_emotion.features import (
    CIECAM02_ATTRIBUTES,
    CIECAM02_RANGES,
    FeatureConfig,
    Viewing,
    ciecam02,
    feature_table,
    image_features,
    srgb_to_xyz,
)

# Small sizes keep the tests fast; the definitions do not depend on size.
SMALL = FeatureConfig(glcm_size=48, glcm_levels=16, glcm_distances=(1, 2), glcm_angles=(0, 45, 90, 135),
                      colour_size=32, colour_bins=10)


def _grey_png(path: Path, grey: np.ndarray) -> Path:
    Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8), "RGB").save(path)
    return path


def _hand_glcm(levels: np.ndarray, n_levels: int, d_row: int, d_col: int) -> np.ndarray:
    """Symmetric, normalised co-occurrence matrix of the pixel pairs (r, c) and (r + d_row, c + d_col)."""
    counts = np.zeros((n_levels, n_levels))
    rows, cols = levels.shape
    for r in range(rows):
        for c in range(cols):
            r2, c2 = r + d_row, c + d_col
            if 0 <= r2 < rows and 0 <= c2 < cols:
                counts[levels[r, c], levels[r2, c2]] += 1
                counts[levels[r2, c2], levels[r, c]] += 1
    return counts / counts.sum()


def _hand_properties(p: np.ndarray) -> dict[str, float]:
    i, j = np.indices(p.shape)
    mu_i, mu_j = (i * p).sum(), (j * p).sum()
    sd_i, sd_j = np.sqrt((p * (i - mu_i) ** 2).sum()), np.sqrt((p * (j - mu_j) ** 2).sum())
    asm = (p ** 2).sum()
    return {
        "contrast": (p * (i - j) ** 2).sum(),
        "dissimilarity": (p * np.abs(i - j)).sum(),
        "homogeneity": (p / (1 + (i - j) ** 2)).sum(),
        "ASM": asm,
        "energy": np.sqrt(asm),
        "correlation": (p * (i - mu_i) * (j - mu_j)).sum() / (sd_i * sd_j),
    }


def test_glcm_matches_the_cooccurrence_definition(tmp_path: Path):
    rng = np.random.default_rng(4)
    # A smooth gradient plus noise: neighbouring pixels are correlated, as in a photograph.
    grey = np.clip(np.add.outer(np.arange(32) * 4, np.arange(48) * 3) + rng.normal(0, 20, (32, 48)), 0, 255)
    grey = grey.astype(np.uint8)
    # 48 px wide = glcm_size: the image is used as it is, so the hand computation sees the same pixels.
    features = image_features(_grey_png(tmp_path / "g.png", grey), SMALL)
    levels = grey.astype(int) * SMALL.glcm_levels // 256
    # Horizontal neighbours for 0 degrees, vertical ones for 90 (symmetric: the direction's sign is moot).
    for distance, angle, offset in ((1, 0, (0, 1)), (2, 0, (0, 2)), (1, 90, (1, 0)), (2, 90, (2, 0))):
        expected = _hand_properties(_hand_glcm(levels, SMALL.glcm_levels, *offset))
        for prop, value in expected.items():
            column = f"glcm_{prop}_d{distance}_a{angle}"
            assert features[column] == pytest.approx(value, rel=1e-9), (prop, distance, angle)
    # The two diagonals differ on this image; 45 and 135 degrees are one each (either assignment).
    diagonals = {round(_hand_properties(_hand_glcm(levels, SMALL.glcm_levels, 1, dc))["contrast"], 9) for dc in (1, -1)}
    assert {round(features["glcm_contrast_d1_a45"], 9), round(features["glcm_contrast_d1_a135"], 9)} == diagonals


def test_ciecam02_reproduces_colour_sciences_documented_example():
    # colour-science's XYZ_to_CIECAM02 docstring: these conditions give J 41.7310911, C 0.1047077, ...
    viewing = Viewing(white_xyz=(95.05, 100.00, 108.88), adapting_luminance=318.31, background_luminance=20.0,
                      surround="Average")
    result = ciecam02(np.array([[19.01, 20.00, 21.78]]), viewing)
    documented = {"J": 41.7310911, "C": 0.1047077, "h": 219.0484326, "s": 2.3603053, "Q": 195.3713259, "M": 0.1088421}
    for attr, value in documented.items():
        assert result[attr][0] == pytest.approx(value, abs=1e-6), attr


def test_a_uniform_colour_image_puts_all_mass_in_the_bin_of_its_colour(tmp_path: Path):
    import colour

    rgb = (60, 140, 200)
    path = tmp_path / "blue.png"
    Image.new("RGB", (40, 30), rgb).save(path)
    features = image_features(path, SMALL)
    # colour-science called directly, with the documented sRGB viewing conditions written out here.
    xyz = colour.sRGB_to_XYZ(np.array(rgb) / 255.0) * 100.0
    spec = colour.XYZ_to_CIECAM02(xyz, colour.sRGB_to_XYZ(np.ones(3)) * 100.0, 64.0 / np.pi / 5.0, 20.0,
                                  colour.VIEWING_CONDITIONS_CIECAM02["Average"])
    assert 40 < spec.J < 50 and 228 < spec.h < 252  # a blue of middle lightness, each value mid-bin
    for attr in CIECAM02_ATTRIBUTES:
        low, high = CIECAM02_RANGES[attr]
        expected_bin = int((float(getattr(spec, attr)) - low) / (high - low) * SMALL.colour_bins)
        histogram = [features[f"ciecam_{attr}_b{b:02d}"] for b in range(SMALL.colour_bins)]
        assert histogram[expected_bin] == 1.0, (attr, float(getattr(spec, attr)), histogram)
        assert sum(histogram) == 1.0
    assert features["ciecam_J_b04"] == features["ciecam_h_b06"] == 1.0


def test_the_ranges_cover_every_srgb_colour():
    grid = np.linspace(0, 255, 18)
    rgb = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    attributes = ciecam02(srgb_to_xyz(rgb))
    for attr in CIECAM02_ATTRIBUTES:
        low, high = CIECAM02_RANGES[attr]
        assert low <= attributes[attr].min() and attributes[attr].max() <= high, attr
    white = ciecam02(srgb_to_xyz(np.array([[255, 255, 255]])))
    assert white["J"][0] == pytest.approx(100.0, abs=1e-6)


def _photo(path: Path, seed: int, size=(70, 50)) -> Path:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    image = np.clip(base + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(image, "RGB").save(path, quality=90)
    return path


def test_a_bad_image_is_reported_and_the_table_goes_on(tmp_path: Path):
    images = {f"ok/{i}.jpg": _photo(tmp_path / f"ok{i}.jpg", i) for i in range(5)}
    (tmp_path / "garbage.jpg").write_bytes(b"this is not a JPEG")
    whole = (tmp_path / "ok0.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (60, 1), (10, 20, 30)).save(tiny)  # 1 px high: no pixel pair at distance 2
    keyed = {"bad/garbage.jpg": tmp_path / "garbage.jpg", **images, "bad/truncated.jpg": tmp_path / "truncated.jpg",
             "bad/tiny.png": tiny, "bad/missing.jpg": tmp_path / "missing.jpg"}
    seen = []
    result = feature_table(keyed, SMALL, progress=lambda done, total: seen.append((done, total)), workers=1)
    table = result.features
    assert list(table["image_key"]) == list(images)  # input order, bad images left out
    assert list(table.columns) == ["image_key", *SMALL.columns()]
    rejected = sorted(Path(r.file).name for r in result.rejected)
    assert rejected == ["garbage.jpg", "missing.jpg", "tiny.png", "truncated.jpg"]
    assert all(r.field == "image" and r.reason for r in result.rejected)
    assert seen[-1] == (len(keyed), len(keyed))
    values = table.drop(columns="image_key").to_numpy()
    assert np.isfinite(values).all()
    for attr in CIECAM02_ATTRIBUTES:
        block = table[[f"ciecam_{attr}_b{b:02d}" for b in range(SMALL.colour_bins)]].to_numpy()
        np.testing.assert_allclose(block.sum(axis=1), 1.0, atol=1e-12)


def test_worker_processes_give_the_same_table(tmp_path: Path):
    images = [(f"k/{i}.jpg", _photo(tmp_path / f"{i}.jpg", 10 + i)) for i in range(12)]
    images.insert(5, ("k/bad.jpg", tmp_path / "nowhere.jpg"))
    alone = feature_table(images, SMALL, workers=1)
    pooled = feature_table(images, SMALL, workers=2)
    assert alone.features.equals(pooled.features)
    assert [r.file for r in pooled.rejected] == [str(tmp_path / "nowhere.jpg")]
    with pytest.raises(ValueError, match="unique"):
        feature_table(images + images[:1], SMALL, workers=1)
