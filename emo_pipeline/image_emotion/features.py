"""Hand-made per-image features: the SVM's GLCM texture and CIECAM02 colour histograms, and more.

`FeatureConfig.families` says which feature families a table holds: the paper's two, `glcm` and
`ciecam02` (below; the SVM and the feature ridge use only these), and the colour and texture families
of `emo_pipeline.image_emotion.colour_texture` (this project's addition, documented there). Every
family of one image is computed from one decode, in one worker of the pool.

Texture (grey-level co-occurrence matrix, scikit-image):

- the image is converted to grey (PIL's ITU-R 601-2 luma), resized so that its long side is
  `glcm_size` px (128 by default), and quantised to `glcm_levels` grey levels (32 by default:
  level = floor(grey * levels / 256));
- one symmetric, normalised co-occurrence matrix per distance (1, 2, 4 px) and angle (0, 45, 90,
  135 degrees); from each, contrast, dissimilarity, homogeneity, energy, correlation and ASM, named
  `glcm_<property>_d<distance>_a<degrees>` (e.g. `glcm_contrast_d1_a0`). Correlation of a constant
  image is 1 (scikit-image's convention), so no value is ever NaN.

Colour (CIECAM02, colour-science):

- the image is resized so its long side is `colour_size` px (96 by default: a histogram needs
  thousands of pixels, not hundreds of thousands);
- sRGB (IEC 61966-2-1 transfer function) -> XYZ (D65, Y of white = 100) -> CIECAM02 under the sRGB
  reference viewing conditions `SRGB_VIEWING` (the ones colorspacious uses for its sRGB CAM02 space):
  adapting white = the sRGB white, L_A = 64 lux / pi / 5 = 4.07 cd/m^2 (64 lux ambient, a grey
  world of 20 % reflectance), Y_b = 20, "Average" surround, illuminant not discounted;
- for each of lightness J, brightness Q, chroma C, colourfulness M, saturation s and hue angle h, a
  histogram of `colour_bins` equal bins (12 by default) over the fixed range `CIECAM02_RANGES`,
  normalised to sum to 1, named `ciecam_<attribute>_b<bin>` with a two-digit bin (`ciecam_J_b03`).
  The ranges cover every sRGB colour under these conditions (checked by a test); a value beyond the
  upper end would be counted in the last bin rather than dropped, so each histogram sums to 1.

`feature_table` computes the features of many images in a process pool; an image that cannot be read
is reported as a `Rejection` and the table goes on without it.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image
from skimage.feature import graycomatrix, graycoprops

from emo_pipeline.core.rejection import Rejection
from emo_pipeline.image_emotion.colour_texture import (
    COLOUR_TEXTURE_FAMILIES,
    colour_texture_features,
    family_columns,
)

GLCM_PROPERTIES: tuple[str, ...] = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
CIECAM02_ATTRIBUTES: tuple[str, ...] = ("J", "Q", "C", "M", "s", "h")
# The paper's feature families (what its SVM reads), then ours; tables hold them in this order.
PAPER_FAMILIES: tuple[str, ...] = ("glcm", "ciecam02")
FAMILIES: tuple[str, ...] = (*PAPER_FAMILIES, *COLOUR_TEXTURE_FAMILIES)
# Each family's columns start with one of these prefixes (and no other family's do).
FAMILY_PREFIXES: dict[str, tuple[str, ...]] = {
    "glcm": ("glcm_",), "ciecam02": ("ciecam_",), "hsv_joint": ("hsvjoint_",), "channel_histograms": ("chist_",),
    "colour_moments": ("moment_",), "hue_saturation": ("huesat_",), "percentiles": ("pct_",), "edges": ("edge_",),
    "lbp": ("lbp_",), "hog": ("hog_",)}

# Fixed histogram ranges per attribute. Under SRGB_VIEWING the sRGB cube reaches J 100, Q 123.7,
# C 111.3, M 80.5, s 107.3 and h [0, 360): each upper end is that maximum rounded up, so the bins mean
# the same thing for every image and every data set.
CIECAM02_RANGES: dict[str, tuple[float, float]] = {
    "J": (0.0, 100.0),
    "Q": (0.0, 125.0),
    "C": (0.0, 112.0),
    "M": (0.0, 81.0),
    "s": (0.0, 108.0),
    "h": (0.0, 360.0),
}


@dataclass(frozen=True)
class Viewing:
    """CIECAM02 viewing conditions: adapting white (Y = 100), L_A in cd/m^2, Y_b, surround name."""

    white_xyz: tuple[float, float, float]
    adapting_luminance: float
    background_luminance: float
    surround: str = "Average"


# sRGB white (D65) as colour-science computes it, so that an sRGB white pixel has J = 100 exactly.
SRGB_VIEWING = Viewing(white_xyz=(95.05, 100.0, 108.9),
                       adapting_luminance=64.0 / math.pi / 5.0, background_luminance=20.0, surround="Average")


@dataclass(frozen=True)
class FeatureConfig:
    """Families, sizes, levels and bins of the features; every field changes the columns or their values."""

    families: tuple[str, ...] = PAPER_FAMILIES  # of FAMILIES; the table holds them in FAMILIES order
    glcm_size: int = 128
    glcm_levels: int = 32
    glcm_distances: tuple[int, ...] = (1, 2, 4)
    glcm_angles: tuple[int, ...] = (0, 45, 90, 135)  # degrees
    colour_size: int = 96
    colour_bins: int = 12
    colour_texture_size: int = 128  # long side for the colour_texture families but `hog`
    hog_size: int = 64              # side of the square grey image of `hog`

    def __post_init__(self) -> None:
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families or len(set(self.families)) != len(self.families):
            raise ValueError(f"families must be distinct names of {', '.join(FAMILIES)}, got {self.families}")
        if self.colour_texture_size < 8 or self.hog_size < 8:
            raise ValueError("colour_texture_size and hog_size must be at least 8 px")
        if not 2 <= self.glcm_levels <= 256:
            raise ValueError(f"glcm_levels must be within 2..256, got {self.glcm_levels}")
        if min(self.glcm_distances, default=0) < 1:
            raise ValueError(f"glcm_distances must be positive integers, got {self.glcm_distances}")
        if self.glcm_size <= max(self.glcm_distances):
            raise ValueError(f"glcm_size {self.glcm_size} must exceed the largest distance")
        if self.colour_size < 1 or self.colour_bins < 1:
            raise ValueError("colour_size and colour_bins must be positive")

    def columns(self) -> list[str]:
        """The feature columns, in table order."""
        out: list[str] = []
        for family in FAMILIES:
            if family not in self.families:
                continue
            if family == "glcm":
                out += [f"glcm_{prop}_d{d}_a{a}" for prop in GLCM_PROPERTIES
                        for d in self.glcm_distances for a in self.glcm_angles]
            elif family == "ciecam02":
                out += [f"ciecam_{attr}_b{b:02d}" for attr in CIECAM02_ATTRIBUTES for b in range(self.colour_bins)]
            else:
                out += family_columns(family)
        return out

    @property
    def colour_texture_families(self) -> tuple[str, ...]:
        """The chosen families that `colour_texture` computes, in table order."""
        return tuple(f for f in COLOUR_TEXTURE_FAMILIES if f in self.families)

    def decode_size(self) -> int:
        """The long side an image is decoded at: the largest size a chosen family reads."""
        sizes = [self.glcm_size if "glcm" in self.families else 0,
                 self.colour_size if "ciecam02" in self.families else 0,
                 self.colour_texture_size if self.colour_texture_families else 0]
        return max(sizes)


def columns_of(columns: list[str], families: tuple[str, ...]) -> list[str]:
    """The columns among `columns` that belong to `families`, in their order (e.g. the paper's of a table)."""
    prefixes = tuple(p for family in families for p in FAMILY_PREFIXES[family])
    return [c for c in columns if c.startswith(prefixes)]


@dataclass
class FeatureTable:
    """One row per readable image (`image_key` then the feature columns) and the images rejected."""

    features: pd.DataFrame
    rejected: list[Rejection] = field(default_factory=list)


# -- images ------------------------------------------------------------------------------------------
def _resized(im: Image.Image, long_side: int) -> Image.Image:
    width, height = im.size
    scale = long_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def load_rgb(path: str | os.PathLike, long_side: int) -> Image.Image:
    """Decode an image as RGB with its long side at `long_side` px; raise on a damaged file."""
    with Image.open(path) as im:
        # JPEG only: decode at 1/2, 1/4 or 1/8 scale when the result stays at least `long_side`
        # (a 640 px Emotion6 image is decoded at 160 px): several times faster than a full decode.
        scale = long_side / max(im.size)
        im.draft("RGB", (math.ceil(im.size[0] * scale), math.ceil(im.size[1] * scale)))
        rgb = im.convert("RGB")
    return _resized(rgb, long_side)


# -- texture -----------------------------------------------------------------------------------------
def quantise(grey: np.ndarray, levels: int) -> np.ndarray:
    """Map 8-bit grey values to `levels` equal-width levels 0..levels-1."""
    return (grey.astype(np.uint16) * levels // 256).astype(np.uint8)


def glcm_features(grey: np.ndarray, config: FeatureConfig) -> dict[str, float]:
    """GLCM properties of an 8-bit grey image for every configured distance and angle."""
    if min(grey.shape) <= max(config.glcm_distances):
        raise ValueError(f"image of {grey.shape[1]}x{grey.shape[0]} px at the GLCM size is too small "
                         f"for distance {max(config.glcm_distances)}")
    levels = quantise(grey, config.glcm_levels)
    angles = [math.radians(a) for a in config.glcm_angles]
    matrix = graycomatrix(levels, distances=list(config.glcm_distances), angles=angles,
                          levels=config.glcm_levels, symmetric=True, normed=True)
    out: dict[str, float] = {}
    for prop in GLCM_PROPERTIES:
        values = graycoprops(matrix, prop)  # (distances, angles)
        for i, d in enumerate(config.glcm_distances):
            for j, a in enumerate(config.glcm_angles):
                out[f"glcm_{prop}_d{d}_a{a}"] = float(values[i, j])
    return out


# -- colour ------------------------------------------------------------------------------------------
def ciecam02(xyz: np.ndarray, viewing: Viewing = SRGB_VIEWING) -> dict[str, np.ndarray]:
    """CIECAM02 J, Q, C, M, s, h of XYZ values (Y of white = 100) under `viewing`."""
    import colour  # imported here: about 2 s, paid only by processes that compute colour features

    with warnings.catch_warnings():
        # Pure black gives 0/0 inside the model; colour-science returns finite values for it anyway.
        warnings.simplefilter("ignore", RuntimeWarning)
        spec = colour.XYZ_to_CIECAM02(
            np.asarray(xyz, dtype=float), np.asarray(viewing.white_xyz, dtype=float),
            viewing.adapting_luminance, viewing.background_luminance,
            colour.VIEWING_CONDITIONS_CIECAM02[viewing.surround], compute_H=False)
    return {attr: np.nan_to_num(np.asarray(getattr(spec, attr), dtype=float)) for attr in CIECAM02_ATTRIBUTES}


def srgb_to_xyz(rgb: np.ndarray) -> np.ndarray:
    """8-bit sRGB -> XYZ with Y of white = 100 (IEC 61966-2-1 decoding, D65)."""
    import colour

    return colour.sRGB_to_XYZ(np.asarray(rgb, dtype=float) / 255.0) * 100.0


def histogram(values: np.ndarray, bins: int, value_range: tuple[float, float]) -> np.ndarray:
    """Normalised histogram over a fixed range; values outside it land in the first or last bin."""
    low, high = value_range
    index = np.floor((np.asarray(values, dtype=float).ravel() - low) / (high - low) * bins).astype(np.int64)
    counts = np.bincount(np.clip(index, 0, bins - 1), minlength=bins).astype(float)
    return counts / counts.sum()


def ciecam02_features(rgb: np.ndarray, config: FeatureConfig, viewing: Viewing = SRGB_VIEWING) -> dict[str, float]:
    """Normalised CIECAM02 attribute histograms of an (H, W, 3) 8-bit sRGB image."""
    attributes = ciecam02(srgb_to_xyz(rgb.reshape(-1, 3)), viewing)
    out: dict[str, float] = {}
    for attr in CIECAM02_ATTRIBUTES:
        counts = histogram(attributes[attr], config.colour_bins, CIECAM02_RANGES[attr])
        out.update({f"ciecam_{attr}_b{b:02d}": float(v) for b, v in enumerate(counts)})
    return out


def image_features(path: str | os.PathLike, config: FeatureConfig = FeatureConfig()) -> dict[str, float]:
    """Every feature of one image, keyed by column name (`FeatureConfig.columns()` order)."""
    # One decode serves every size; the smaller ones are resized from the larger.
    big = load_rgb(path, config.decode_size())

    def at(size: int) -> Image.Image:
        return big if max(big.size) == size else _resized(big, size)

    features: dict[str, float] = {}
    if "glcm" in config.families:
        features.update(glcm_features(np.asarray(at(config.glcm_size).convert("L")), config))
    if "ciecam02" in config.families:
        features.update(ciecam02_features(np.asarray(at(config.colour_size)), config))
    if config.colour_texture_families:
        features.update(colour_texture_features(np.asarray(at(config.colour_texture_size)),
                                                config.colour_texture_families, config.hog_size))
    return features


# -- many images -------------------------------------------------------------------------------------
def default_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _features_or_error(item: tuple[str, str], config: FeatureConfig) -> tuple[str, dict[str, float] | None, str | None]:
    key, path = item
    try:
        return key, image_features(path, config), None
    except Exception as exc:  # noqa: BLE001 - any failure of one image is that image's rejection
        return key, None, f"{type(exc).__name__}: {exc}"


def _chunk(items: list[tuple[str, str]],
           config: FeatureConfig) -> list[tuple[str, dict[str, float] | None, str | None]]:
    return [_features_or_error(item, config) for item in items]


def feature_table(
    images: Mapping[str, str | os.PathLike] | Iterable[tuple[str, str | os.PathLike]],
    config: FeatureConfig = FeatureConfig(),
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> FeatureTable:
    """Features of every image (`image_key -> path`), one row per readable image, in input order.

    `workers` processes share the work (default: every core this process may use; 1 computes in
    this process). `progress(done, total)` is called as chunks finish.
    """
    items = [(str(k), str(p)) for k, p in (images.items() if isinstance(images, Mapping) else images)]
    keys = [k for k, _ in items]
    if len(set(keys)) != len(keys):
        raise ValueError("image keys must be unique")
    workers = default_workers() if workers is None else max(1, int(workers))
    workers = min(workers, max(1, len(items)))
    # About 4 chunks per worker: small enough to balance, large enough to amortise the transfers.
    size = max(1, math.ceil(len(items) / (workers * 4)))
    chunks = [items[i:i + size] for i in range(0, len(items), size)]

    results: dict[str, tuple[dict[str, float] | None, str | None]] = {}

    def collect(chunk_results) -> None:
        for key, features, error in chunk_results:
            results[key] = (features, error)
        if progress:
            progress(len(results), len(items))

    if workers == 1:
        for chunk in chunks:
            collect(_chunk(chunk, config))
    else:
        # loky (vendored by joblib) starts workers by fork + exec: safe under a threaded caller (a
        # Dagster step) and in a script without an `if __name__ == "__main__"` guard. A private
        # executor, shut down on leaving the block, so no idle worker outlives the table (a reused
        # one would keep a Dagster step process alive for its five-minute idle timeout).
        from joblib.externals.loky import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_chunk, chunk, config) for chunk in chunks]
            for future in concurrent.futures.as_completed(futures):
                collect(future.result())

    columns = config.columns()
    paths = dict(items)
    rows, kept, rejected = [], [], []
    for key in keys:
        features, error = results[key]
        if features is None:
            rejected.append(Rejection(paths[key], None, "image", error or "unknown error"))
            continue
        rows.append([features[c] for c in columns])
        kept.append(key)
    table = pd.DataFrame(np.asarray(rows, dtype=np.float64).reshape(len(rows), len(columns)), columns=columns)
    table.insert(0, "image_key", pd.array(kept, dtype="string"))
    return FeatureTable(features=table, rejected=rejected)


def histogram_columns(config: FeatureConfig, attribute: str) -> list[str]:
    """The columns of one CIECAM02 attribute's histogram."""
    return [f"ciecam_{attribute}_b{b:02d}" for b in range(config.colour_bins)]


def bin_edges(config: FeatureConfig, attribute: str) -> np.ndarray:
    """The `colour_bins + 1` edges of one attribute's histogram."""
    low, high = CIECAM02_RANGES[attribute]
    return np.linspace(low, high, config.colour_bins + 1)

