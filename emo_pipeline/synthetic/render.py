"""Drawing scenes and their emotion stimuli maps with PIL.

Every object kind has a look: a few flat parts (rectangles, ellipses, polygons, lines) laid out in
coordinates relative to its box, each in a characteristic colour, so that a detector or a CNN can learn
to tell a dog from a toilet. The palette gives the sky and wall colours and a colour cast over the
whole picture (dark at night, red for "blood", grey-blue when rainy).

Drawing is deterministic: the only randomness is a small per-object brightness jitter taken from the
generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from emo_pipeline.synthetic import grammar as g
from emo_pipeline.synthetic.scenes import SceneBatch

JPEG_QUALITY = 90
# Fixed chroma subsampling (4:2:0) so that encoding does not depend on Pillow's defaults.
JPEG_SUBSAMPLING = 2

Colour = tuple[int, int, int] | str  # RGB, or "sky" / "wall" for the palette's colour


@dataclass(frozen=True)
class Part:
    """One flat shape of an object's look, in coordinates relative to the object's box (0-1)."""

    shape: str                                 # rect, ellipse, poly, line, ring, halfdisc
    points: tuple[float, ...]                  # rect/ellipse/ring/halfdisc: x0 y0 x1 y1; poly/line: x y x y ...
    colour: Colour
    width: float = 0.0                         # line / ring thickness, relative to the box's short side
    outline: tuple[int, int, int] | None = None


def _c(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def rect(x0: float, y0: float, x1: float, y1: float, colour: str, outline: str | None = None) -> Part:
    """A rectangle; `colour` is "#rrggbb" or "sky" / "wall" for the palette's colour."""
    return Part("rect", (x0, y0, x1, y1), _c(colour) if colour.startswith("#") else colour,
                outline=_c(outline) if outline else None)


def ellipse(x0: float, y0: float, x1: float, y1: float, colour: str, outline: str | None = None) -> Part:
    return Part("ellipse", (x0, y0, x1, y1), _c(colour), outline=_c(outline) if outline else None)


def poly(colour: str, *points: float) -> Part:
    return Part("poly", tuple(points), _c(colour))


def line(colour: str, width: float, *points: float) -> Part:
    return Part("line", tuple(points), _c(colour), width=width)


def ring(x0: float, y0: float, x1: float, y1: float, colour: str, width: float) -> Part:
    return Part("ring", (x0, y0, x1, y1), _c(colour), width=width)


def halfdisc(x0: float, y0: float, x1: float, y1: float, colour: str) -> Part:
    return Part("halfdisc", (x0, y0, x1, y1), _c(colour))


def _rays(colours: tuple[str, ...], count: int, width: float) -> tuple[Part, ...]:
    """Lines from the centre of the box outwards (fireworks, spider legs, sun rays)."""
    parts = []
    for i in range(count):
        angle = 2 * np.pi * i / count
        parts.append(line(colours[i % len(colours)], width, 0.5, 0.5,
                          round(0.5 + 0.5 * np.cos(angle), 3), round(0.5 + 0.5 * np.sin(angle), 3)))
    return tuple(parts)


LOOKS: dict[str, tuple[Part, ...]] = {
    "sky": (rect(0, 0, 1, 1, "sky"),),
    "grass": (rect(0, 0, 1, 1, "#4c9a2a"), rect(0, 0, 1, 0.08, "#3b7a20")),
    "road": (rect(0, 0, 1, 1, "#555555"), rect(0.05, 0.45, 0.25, 0.55, "#f5f5f5"),
             rect(0.4, 0.45, 0.6, 0.55, "#f5f5f5"), rect(0.75, 0.45, 0.95, 0.55, "#f5f5f5")),
    "building": (rect(0, 0.04, 1, 1, "#9c8b7a"), rect(0, 0, 1, 0.05, "#6d5f52"), rect(0.4, 0.8, 0.6, 1, "#4e342e")),
    "tree": (rect(0.42, 0.55, 0.58, 1, "#6b4226"), ellipse(0, 0, 1, 0.66, "#2e7d32")),
    "street light": (rect(0.44, 0.1, 0.56, 1, "#4a4a4a"), rect(0.15, 0.07, 0.56, 0.12, "#4a4a4a"),
                     ellipse(0.0, 0.08, 0.4, 0.2, "#ffe066")),
    "window": (rect(0, 0, 1, 1, "#bfe3f5", outline="#37474f"), rect(0.46, 0, 0.54, 1, "#37474f"),
               rect(0, 0.46, 1, 0.54, "#37474f")),
    "cloud": (ellipse(0, 0.35, 0.5, 1, "#f2f2f2"), ellipse(0.22, 0, 0.78, 0.85, "#f2f2f2"),
              ellipse(0.5, 0.3, 1, 1, "#f2f2f2")),
    "fence": (rect(0, 0.2, 1, 0.32, "#a1887f"), rect(0, 0.62, 1, 0.74, "#a1887f"))
    + tuple(rect(x, 0, x + 0.07, 1, "#8d6e63") for x in (0.02, 0.23, 0.45, 0.67, 0.9)),
    "bench": (rect(0, 0, 1, 0.18, "#795548"), rect(0, 0.38, 1, 0.52, "#795548"),
              rect(0.05, 0.52, 0.12, 1, "#3e2723"), rect(0.88, 0.52, 0.95, 1, "#3e2723")),
    "man": (ellipse(0.3, 0, 0.7, 0.2, "#e0b48a"), rect(0.15, 0.2, 0.85, 0.6, "#3f51b5"),
            rect(0.22, 0.6, 0.46, 1, "#263238"), rect(0.54, 0.6, 0.78, 1, "#263238")),
    "woman": (ellipse(0.3, 0, 0.7, 0.2, "#e0b48a"), poly("#ad1457", 0.3, 0.2, 0.7, 0.2, 0.92, 0.75, 0.08, 0.75),
              rect(0.3, 0.75, 0.42, 1, "#e0b48a"), rect(0.58, 0.75, 0.7, 1, "#e0b48a")),
    "shirt": (rect(0, 0, 1, 1, "#fbc02d"), poly("#f57f17", 0.35, 0, 0.65, 0, 0.5, 0.3)),
    "hat": (rect(0.15, 0, 0.85, 0.75, "#212121"), rect(0, 0.7, 1, 1, "#212121")),
    "car": (rect(0, 0.4, 1, 0.8, "#c62828"), poly("#c62828", 0.18, 0.42, 0.3, 0.08, 0.72, 0.08, 0.84, 0.42),
            rect(0.33, 0.14, 0.68, 0.38, "#b3e5fc"), ellipse(0.08, 0.62, 0.3, 1, "#111111"),
            ellipse(0.7, 0.62, 0.92, 1, "#111111")),
    "umbrella": (halfdisc(0, 0, 1, 0.9, "#283593"), line("#212121", 0.06, 0.5, 0.45, 0.5, 1),
                 line("#212121", 0.06, 0.5, 1, 0.6, 0.95)),
    "sink": (rect(0, 0.3, 1, 1, "#eceff1", outline="#607d8b"), ellipse(0.1, 0.4, 0.9, 0.85, "#90a4ae"),
             rect(0.45, 0, 0.55, 0.32, "#9e9e9e"), rect(0.3, 0, 0.55, 0.07, "#9e9e9e"),
             ellipse(0.3, 0.55, 0.55, 0.75, "#6d4c41")),
    "balloon": (ellipse(0, 0, 1, 0.72, "#e53935"), poly("#b71c1c", 0.42, 0.78, 0.5, 0.7, 0.58, 0.78),
                line("#424242", 0.05, 0.5, 0.78, 0.45, 0.9, 0.55, 1)),
    "cake": (rect(0, 0.45, 1, 1, "#f48fb1"), rect(0, 0.38, 1, 0.52, "#fafafa"),
             rect(0.2, 0.12, 0.27, 0.4, "#fff176"), rect(0.47, 0.12, 0.54, 0.4, "#fff176"),
             rect(0.73, 0.12, 0.8, 0.4, "#fff176"), ellipse(0.19, 0, 0.28, 0.12, "#ff6f00"),
             ellipse(0.46, 0, 0.55, 0.12, "#ff6f00"), ellipse(0.72, 0, 0.81, 0.12, "#ff6f00")),
    "flower": (rect(0.45, 0.45, 0.55, 1, "#388e3c"), poly("#43a047", 0.5, 0.75, 0.9, 0.55, 0.5, 0.85),
               ellipse(0, 0, 1, 0.55, "#ec407a"), ellipse(0.33, 0.13, 0.67, 0.42, "#ffeb3b")),
    "dog": (ellipse(0.05, 0.3, 0.8, 0.75, "#8d6e63"), ellipse(0.6, 0.05, 1, 0.5, "#8d6e63"),
            ellipse(0.6, 0.08, 0.72, 0.4, "#5d4037"), ellipse(0.86, 0.2, 0.92, 0.28, "#111111"),
            rect(0.15, 0.65, 0.25, 1, "#6d4c41"), rect(0.55, 0.65, 0.65, 1, "#6d4c41"),
            line("#6d4c41", 0.08, 0.08, 0.45, 0, 0.15)),
    "cat": (ellipse(0, 0.4, 0.75, 0.95, "#ff8f00"), ellipse(0.5, 0.15, 0.95, 0.6, "#ff8f00"),
            poly("#ff8f00", 0.52, 0.3, 0.58, 0, 0.68, 0.22), poly("#ff8f00", 0.78, 0.22, 0.88, 0, 0.94, 0.3),
            ellipse(0.6, 0.3, 0.67, 0.38, "#1b5e20"), ellipse(0.78, 0.3, 0.85, 0.38, "#1b5e20"),
            line("#e65100", 0.08, 0.05, 0.7, 0, 0.3)),
    "sun": _rays(("#ffb300",), 12, 0.05) + (ellipse(0.18, 0.18, 0.82, 0.82, "#ffd600"),),
    "gift": (rect(0, 0.25, 1, 1, "#8e24aa"), rect(0.44, 0.25, 0.56, 1, "#ffd600"), rect(0, 0.52, 1, 0.62, "#ffd600"),
             ellipse(0.2, 0, 0.5, 0.27, "#ffd600"), ellipse(0.5, 0, 0.8, 0.27, "#ffd600")),
    "firework": _rays(("#ffeb3b", "#e040fb", "#18ffff", "#ff5252"), 16, 0.04)
    + (ellipse(0.42, 0.42, 0.58, 0.58, "#ffffff"),),
    "gun": (rect(0, 0.08, 1, 0.36, "#37474f"), poly("#263238", 0.58, 0.36, 0.84, 0.36, 0.97, 1, 0.7, 1),
            ring(0.42, 0.3, 0.62, 0.7, "#263238", 0.12), rect(0.93, 0, 0.98, 0.1, "#263238")),
    "knife": (poly("#cfd8dc", 0, 0.5, 0.6, 0.15, 0.6, 0.65), rect(0.6, 0.2, 1, 0.7, "#5d4037"),
              rect(0.58, 0.05, 0.64, 0.8, "#616161")),
    "spider": _rays(("#111111",), 8, 0.06) + (ellipse(0.3, 0.3, 0.7, 0.72, "#1b1b1b"),
                                              ellipse(0.4, 0.15, 0.6, 0.35, "#1b1b1b"),
                                              ellipse(0.44, 0.2, 0.48, 0.25, "#d50000"),
                                              ellipse(0.52, 0.2, 0.56, 0.25, "#d50000")),
    "snake": (line("#558b2f", 0.22, 0, 0.75, 0.15, 0.45, 0.3, 0.75, 0.45, 0.45, 0.6, 0.75, 0.75, 0.45, 0.88, 0.5),
              ellipse(0.8, 0.25, 1, 0.7, "#33691e"), ellipse(0.9, 0.35, 0.95, 0.45, "#ffeb3b"),
              line("#d50000", 0.04, 1, 0.5, 1, 0.6)),
    "skull": (ellipse(0.1, 0, 0.9, 0.72, "#f5f5dc"), rect(0.28, 0.55, 0.72, 0.95, "#f5f5dc"),
              ellipse(0.22, 0.28, 0.45, 0.5, "#111111"), ellipse(0.55, 0.28, 0.78, 0.5, "#111111"),
              poly("#111111", 0.5, 0.5, 0.44, 0.64, 0.56, 0.64),
              line("#111111", 0.03, 0.38, 0.8, 0.38, 0.95), line("#111111", 0.03, 0.62, 0.8, 0.62, 0.95)),
    "fire": (poly("#e65100", 0, 1, 0.12, 0.45, 0.28, 0.7, 0.4, 0.05, 0.55, 0.55, 0.7, 0.15, 0.85, 0.6, 1, 0.35, 1, 1),
             poly("#ff9800", 0.15, 1, 0.25, 0.65, 0.38, 0.8, 0.48, 0.35, 0.6, 0.75, 0.75, 0.5, 0.85, 1),
             poly("#ffeb3b", 0.32, 1, 0.42, 0.75, 0.52, 0.6, 0.62, 0.85, 0.7, 1)),
    "fist": (rect(0.05, 0.3, 0.95, 1, "#d7a17c", outline="#8d5524"), ellipse(0.05, 0.1, 0.3, 0.45, "#c68e67"),
             ellipse(0.27, 0.05, 0.52, 0.42, "#c68e67"), ellipse(0.49, 0.05, 0.74, 0.42, "#c68e67"),
             ellipse(0.71, 0.1, 0.96, 0.45, "#c68e67"), poly("#b07850", 0.05, 0.55, 0.5, 0.5, 0.5, 0.65)),
    "graffiti": (rect(0, 0, 1, 1, "#bdbdbd"),
                 line("#e91e63", 0.12, 0.05, 0.8, 0.2, 0.2, 0.35, 0.8, 0.5, 0.2, 0.65, 0.8),
                 line("#00c853", 0.1, 0.55, 0.85, 0.7, 0.15, 0.85, 0.85, 0.98, 0.3),
                 line("#212121", 0.06, 0.02, 0.5, 0.98, 0.45)),
    "barbed wire": (line("#757575", 0.08, 0, 0.35, 1, 0.35), line("#757575", 0.08, 0, 0.7, 1, 0.7))
    + tuple(line("#424242", 0.06, x, 0.15, x + 0.08, 0.55) for x in (0.08, 0.3, 0.52, 0.74))
    + tuple(line("#424242", 0.06, x + 0.08, 0.15, x, 0.55) for x in (0.08, 0.3, 0.52, 0.74))
    + tuple(line("#424242", 0.06, x, 0.5, x + 0.08, 0.9) for x in (0.19, 0.41, 0.63, 0.85)),
    "toilet": (rect(0.1, 0, 0.9, 0.38, "#fafafa", outline="#78909c"), ellipse(0, 0.3, 1, 0.75, "#fafafa", "#78909c"),
               ellipse(0.15, 0.36, 0.85, 0.62, "#a1887f"), rect(0.3, 0.7, 0.7, 1, "#fafafa", outline="#78909c")),
    "trash": (poly("#6d4c41", 0, 1, 0.1, 0.55, 0.3, 0.4, 0.45, 1),
              poly("#7cb342", 0.3, 1, 0.45, 0.3, 0.65, 0.45, 0.7, 1),
              poly("#9e9e9e", 0.55, 1, 0.7, 0.5, 0.9, 0.35, 1, 1), ellipse(0.15, 0.05, 0.35, 0.3, "#f9a825"),
              rect(0.6, 0.1, 0.75, 0.3, "#5d4037")),
    "trash can": (rect(0.1, 0.14, 0.9, 1, "#616161"), rect(0, 0.02, 1, 0.15, "#424242"),
                  rect(0.42, 0, 0.58, 0.05, "#424242"),
                  rect(0.3, 0.25, 0.35, 0.92, "#424242"), rect(0.65, 0.25, 0.7, 0.92, "#424242")),
    "cockroach": (line("#3e2723", 0.05, 0.3, 0.3, 0.1, 0), line("#3e2723", 0.05, 0.3, 0.7, 0.1, 1),
                  line("#3e2723", 0.05, 0.5, 0.3, 0.5, 0), line("#3e2723", 0.05, 0.5, 0.7, 0.5, 1),
                  line("#3e2723", 0.05, 0.7, 0.3, 0.9, 0), line("#3e2723", 0.05, 0.7, 0.7, 0.9, 1),
                  ellipse(0.15, 0.25, 0.9, 0.75, "#4e342e"), ellipse(0.82, 0.35, 1, 0.65, "#3e2723"),
                  line("#3e2723", 0.03, 0.95, 0.4, 1, 0.05)),
    "rain cloud": (ellipse(0, 0.15, 0.5, 0.6, "#546e7a"), ellipse(0.22, 0, 0.8, 0.55, "#546e7a"),
                   ellipse(0.5, 0.12, 1, 0.6, "#546e7a"))
    + tuple(line("#4fc3f7", 0.04, x, 0.62, x - 0.06, 0.98) for x in (0.15, 0.32, 0.49, 0.66, 0.83)),
    "grave": (ellipse(0, 0, 1, 0.55, "#78909c"), rect(0, 0.27, 1, 1, "#78909c"),
              rect(0.45, 0.15, 0.55, 0.65, "#37474f"),
              rect(0.3, 0.28, 0.7, 0.36, "#37474f")),
    "wheelchair": (ring(0, 0.35, 0.65, 1, "#455a64", 0.08), rect(0.2, 0.45, 0.9, 0.55, "#1565c0"),
                   rect(0.8, 0, 0.9, 0.55, "#1565c0"), rect(0.7, 0, 0.95, 0.06, "#455a64"),
                   ellipse(0.82, 0.85, 0.98, 1, "#212121")),
}


def _jitter(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in colour)  # type: ignore[return-value]


def _draw_object(draw: ImageDraw.ImageDraw, look: tuple[Part, ...], box: tuple[int, int, int, int],
                 palette: g.Palette, factor: float) -> None:
    x, y, w, h = box
    short = min(w, h)

    def px(i: float, j: float) -> tuple[float, float]:
        return x + i * (w - 1), y + j * (h - 1)

    for part in look:
        colour = part.colour
        if isinstance(colour, str):
            colour = palette.sky if colour == "sky" else palette.wall
        fill = _jitter(colour, factor)
        p = part.points
        if part.shape in ("rect", "ellipse", "ring", "halfdisc"):
            bbox = [px(p[0], p[1]), px(p[2], p[3])]
            if part.shape == "rect":
                draw.rectangle(bbox, fill=fill, outline=part.outline)
            elif part.shape == "ellipse":
                draw.ellipse(bbox, fill=fill, outline=part.outline)
            elif part.shape == "ring":
                draw.ellipse(bbox, outline=fill, width=max(1, round(part.width * short)))
            else:
                draw.pieslice(bbox, 180, 360, fill=fill)
        elif part.shape == "poly":
            draw.polygon([px(p[k], p[k + 1]) for k in range(0, len(p), 2)], fill=fill)
        elif part.shape == "line":
            draw.line([px(p[k], p[k + 1]) for k in range(0, len(p), 2)], fill=fill,
                      width=max(1, round(part.width * short)))
        else:
            raise ValueError(f"unknown shape {part.shape!r}")


def render_scene(batch: SceneBatch, i: int, rng: np.random.Generator) -> Image.Image:
    """Draw scene i of the batch as an RGB picture of its annotated size."""
    width, height = int(batch.width[i]), int(batch.height[i])
    palette = g.PALETTES[int(batch.palette[i])]
    if batch.outdoor[i]:
        # The horizon between sky and ground: a haze between the sky and the wall colour.
        background = tuple((a + b) // 2 for a, b in zip(palette.sky, palette.wall))
    else:
        background = palette.wall
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    if not batch.outdoor[i]:
        floor = tuple(int(c * 0.7) for c in palette.wall)
        draw.rectangle([0, int(height * 0.8), width, height], fill=floor)
    rows = batch.objects(i)
    factors = rng.uniform(0.85, 1.12, rows.stop - rows.start)
    for factor, row in zip(factors, range(rows.start, rows.stop)):
        look = LOOKS[g.OBJECTS[int(batch.kind[row])].name]
        box = (int(batch.x[row]), int(batch.y[row]), int(batch.w[row]), int(batch.h[row]))
        _draw_object(draw, look, box, palette, float(factor))
    if palette.cast_strength > 0:
        image = Image.blend(image, Image.new("RGB", image.size, palette.cast), palette.cast_strength)
    return image


_STRENGTH = g.emotional_strength()


def render_esm(batch: SceneBatch, i: int) -> Image.Image:
    """The emotion stimuli map of scene i: a grayscale picture, bright over its most emotional objects.

    Objects whose emotional strength is at least half the strongest one's are filled in proportion
    to their strength, then blurred (a viewer's attention has no hard edges) and stretched to 0-255.
    A scene with nothing emotional in it gets a faint blob in the middle, where people look first.
    """
    width, height = int(batch.width[i]), int(batch.height[i])
    rows = np.arange(batch.objects(i).start, batch.objects(i).stop)
    strength = _STRENGTH[batch.kind[rows]]
    esm = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(esm)
    top = strength.max() if len(rows) else 0.0
    if top >= 0.2:
        chosen = rows[strength >= 0.5 * top]
        for row in chosen[np.argsort(_STRENGTH[batch.kind[chosen]], kind="stable")]:
            level = int(round(255 * _STRENGTH[batch.kind[row]] / top))
            x, y, w, h = (int(v) for v in (batch.x[row], batch.y[row], batch.w[row], batch.h[row]))
            draw.rectangle([x, y, x + w - 1, y + h - 1], fill=level)
    else:
        draw.ellipse([width * 0.3, height * 0.3, width * 0.7, height * 0.7], fill=90)
    esm = esm.filter(ImageFilter.GaussianBlur(radius=0.05 * max(width, height)))
    values = np.asarray(esm, dtype=np.float64)
    peak = values.max()
    if peak > 0:
        target = 255.0 if top >= 0.2 else 90.0
        values = np.round(values * (target / peak))
    return Image.fromarray(values.astype(np.uint8))  # 2-D uint8: mode L


def save_jpeg(image: Image.Image, path: Path) -> None:
    """Write a JPEG with fixed encoder settings, so the same picture gives the same bytes.

    Pictures are written straight to their name: the writers work inside write_world's staging
    folder, which is moved into place only once complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.mode == "L":
        image.save(path, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING)
