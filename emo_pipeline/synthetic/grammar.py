"""The scene grammar of the synthetic world: what can be in a picture and what it makes people feel.

Everything the generator plants lives here, as plain data:

- `OBJECTS`: about forty object kinds with real Visual Genome names ("street light", "rain cloud"),
  their WordNet synsets, a 7-way emotion affinity over `EMOTIONS`, how strongly they sway a viewer
  (salience), where they usually sit in a picture and how big they are;
- `PALETTES`: background colour schemes, which carry emotion too (dark for fear, red for anger,
  grey-blue for sadness, bright warm for joy);
- `PREDICATES`: the relationship vocabulary, with the surface forms and synsets Visual Genome uses.

How objects look is `render.py`'s business; how scenes are sampled from this grammar is `scenes.py`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emo_pipeline.core.emotions import EMOTIONS

N_EMOTIONS = len(EMOTIONS)
NEUTRAL = EMOTIONS.index("neutral")

# Where an object usually sits in a picture.
SKY_BAND = "sky band"          # full-width band along the top
GROUND_BAND = "ground band"    # full-width band along the bottom
STANDING = "standing"          # its bottom edge rests on the ground line
AIRBORNE = "airborne"          # upper part of the picture
ANYWHERE = "anywhere"
PART = "part"                  # drawn inside a host object (a shirt on a man, a window on a building)


def _affinity(floor: float = 0.02, **weights: float) -> tuple[float, ...]:
    """A 7-way distribution: the named emotions get their weight, the others a small floor."""
    unknown = set(weights) - set(EMOTIONS)
    if unknown:
        raise ValueError(f"unknown emotions {sorted(unknown)}")
    raw = np.array([weights.get(e, floor) for e in EMOTIONS], dtype=np.float64)
    return tuple(float(v) for v in raw / raw.sum())


# Background objects are flat over the six emotions and lean neutral: a street scene with sky, road and
# buildings is what annotators call "neutral".
_FLAT = _affinity(floor=0.11, neutral=0.34)


@dataclass(frozen=True)
class ObjectKind:
    name: str                   # the Visual Genome object name (canonical alias)
    synsets: tuple[str, ...]    # as in objects.json; empty for names Visual Genome left unmapped
    affinity: tuple[float, ...]  # distribution over EMOTIONS
    salience: float             # how much the object sways the picture's emotion, per unit of sqrt(area)
    placement: str
    width: tuple[float, float]  # width range as a fraction of the picture's width
    aspect: float               # typical height / width
    plural: str | None          # alias sometimes used in objects.json, listed in object_alias.txt
    attributes: tuple[str, ...]  # attribute words for attributes.json
    indoor: bool = True         # may appear in indoor scenes
    outdoor: bool = True        # may appear in outdoor scenes

    @property
    def emotional(self) -> bool:
        return self.affinity != _FLAT


def _kind(name: str, synset: str | None, affinity: tuple[float, ...], salience: float, placement: str,
          width: tuple[float, float], aspect: float, plural: str | None, attributes: str,
          indoor: bool = True, outdoor: bool = True) -> ObjectKind:
    return ObjectKind(name, (synset,) if synset else (), affinity, salience, placement, width, aspect,
                      plural, tuple(attributes.split(",")) if attributes else (), indoor, outdoor)


OBJECTS: tuple[ObjectKind, ...] = (
    # background and everyday objects: flat affinity, low salience
    _kind("sky", "sky.n.01", _FLAT, 0.15, SKY_BAND, (1.0, 1.0), 0.4, "skies", "blue,clear,cloudy", indoor=False),
    _kind("grass", "grass.n.01", _FLAT, 0.15, GROUND_BAND, (1.0, 1.0), 0.3, "grasses", "green,short,tall",
          indoor=False),
    _kind("road", "road.n.01", _FLAT, 0.15, GROUND_BAND, (1.0, 1.0), 0.3, "roads", "paved,gray,empty",
          indoor=False),
    _kind("building", "building.n.01", _FLAT, 0.2, STANDING, (0.25, 0.45), 1.3, "buildings", "tall,brick,white",
          indoor=False),
    _kind("tree", "tree.n.01", _FLAT, 0.2, STANDING, (0.15, 0.3), 1.5, "trees", "green,tall,leafy", indoor=False),
    _kind("street light", None, _FLAT, 0.2, STANDING, (0.06, 0.1), 5.0, "street lights", "tall,metal,black",
          indoor=False),
    _kind("window", "window.n.01", _FLAT, 0.2, PART, (0.05, 0.1), 1.2, "windows", "glass,open,closed"),
    _kind("cloud", "cloud.n.01", _FLAT, 0.2, AIRBORNE, (0.15, 0.3), 0.5, "clouds", "white,fluffy", indoor=False),
    _kind("fence", "fence.n.01", _FLAT, 0.2, STANDING, (0.3, 0.6), 0.3, "fences", "wooden,white", indoor=False),
    _kind("bench", "bench.n.01", _FLAT, 0.2, STANDING, (0.15, 0.25), 0.5, "benches", "wooden,empty,brown"),
    _kind("man", "man.n.01", _FLAT, 0.3, STANDING, (0.08, 0.14), 2.6, "men", "standing,walking,young"),
    _kind("woman", "woman.n.01", _FLAT, 0.3, STANDING, (0.08, 0.14), 2.6, "women", "standing,smiling,young"),
    # Parts only: their boxes come from the person wearing them.
    _kind("shirt", "shirt.n.01", _FLAT, 0.2, PART, (0.0, 0.0), 0.0, "shirts", "red,white,short sleeved"),
    _kind("hat", "hat.n.01", _FLAT, 0.2, PART, (0.0, 0.0), 0.0, "hats", "black,dark"),
    # everyday objects with a mild lean
    _kind("car", "car.n.01", _affinity(anger=0.12, fear=0.08, neutral=0.3, joy=0.08), 0.5, STANDING,
          (0.2, 0.35), 0.55, "cars", "red,parked,shiny", indoor=False),
    _kind("umbrella", "umbrella.n.01", _affinity(sadness=0.4, neutral=0.3, joy=0.06), 0.6, AIRBORNE,
          (0.12, 0.22), 0.8, "umbrellas", "blue,open,wet"),
    _kind("sink", "sink.n.01", _affinity(disgust=0.4, neutral=0.3), 0.6, STANDING, (0.15, 0.25), 0.7, "sinks",
          "white,dirty,old", outdoor=False),
    # joy
    _kind("balloon", "balloon.n.01", _affinity(joy=0.55, surprise=0.3), 1.0, AIRBORNE, (0.07, 0.12), 1.5,
          "balloons", "red,floating,round"),
    _kind("cake", "cake.n.03", _affinity(joy=0.6, surprise=0.2), 1.0, STANDING, (0.15, 0.25), 0.8, "cakes",
          "pink,sweet,birthday", outdoor=False),
    _kind("flower", "flower.n.01", _affinity(joy=0.55, sadness=0.08, neutral=0.12), 1.0, STANDING, (0.06, 0.1),
          1.8, "flowers", "pink,blooming,pretty"),
    _kind("dog", "dog.n.01", _affinity(joy=0.55, surprise=0.1, neutral=0.1), 1.0, STANDING, (0.15, 0.25), 0.75,
          "dogs", "brown,happy,playing"),
    _kind("cat", "cat.n.01", _affinity(joy=0.45, surprise=0.12, neutral=0.15), 1.0, STANDING, (0.12, 0.2), 0.9,
          "cats", "gray,sleeping,fluffy"),
    _kind("sun", "sun.n.01", _affinity(joy=0.6, surprise=0.1, neutral=0.1), 0.9, AIRBORNE, (0.1, 0.16), 1.0, None,
          "bright,yellow,shining", indoor=False),
    # surprise
    _kind("gift", "gift.n.01", _affinity(surprise=0.55, joy=0.35), 1.0, STANDING, (0.12, 0.2), 0.9, "gifts",
          "wrapped,purple,big"),
    _kind("firework", "firework.n.01", _affinity(surprise=0.6, joy=0.3, fear=0.05), 1.0, AIRBORNE, (0.15, 0.25),
          1.0, "fireworks", "bright,colorful,exploding", indoor=False),
    # fear
    _kind("gun", "gun.n.01", _affinity(fear=0.5, anger=0.35), 1.0, ANYWHERE, (0.18, 0.3), 0.45, "guns",
          "black,metal,loaded"),
    _kind("knife", "knife.n.01", _affinity(fear=0.5, anger=0.25, disgust=0.05), 1.0, ANYWHERE, (0.18, 0.3), 0.35,
          "knives", "sharp,silver,long"),
    _kind("spider", "spider.n.01", _affinity(fear=0.55, disgust=0.3), 1.0, ANYWHERE, (0.1, 0.18), 0.8, "spiders",
          "black,hairy,big"),
    _kind("snake", "snake.n.01", _affinity(fear=0.6, disgust=0.2, surprise=0.05), 1.0, STANDING, (0.2, 0.35),
          0.35, "snakes", "green,long,coiled"),
    _kind("skull", "skull.n.01", _affinity(fear=0.5, sadness=0.2, disgust=0.1), 1.0, ANYWHERE, (0.1, 0.16), 1.0,
          "skulls", "white,old,human"),
    # anger (fire leans anger clearly: an object split evenly between two emotions is too rare in either's
    # scenes for the score baseline to rank it among that emotion's objects)
    _kind("fire", "fire.n.01", _affinity(anger=0.6, fear=0.2, surprise=0.05), 1.0, STANDING, (0.18, 0.3), 0.9,
          "fires", "burning,hot,orange"),
    _kind("fist", "fist.n.01", _affinity(anger=0.7, fear=0.1), 1.0, ANYWHERE, (0.1, 0.16), 1.0, "fists",
          "clenched,raised"),
    _kind("graffiti", "graffiti.n.01", _affinity(anger=0.5, disgust=0.25), 0.9, ANYWHERE, (0.2, 0.35), 0.5, None,
          "colorful,messy,painted"),
    _kind("barbed wire", "barbed_wire.n.01", _affinity(anger=0.45, fear=0.3, sadness=0.12), 0.9, STANDING,
          (0.3, 0.5), 0.2, None, "rusty,sharp,metal", indoor=False),
    # disgust
    _kind("toilet", "toilet.n.02", _affinity(disgust=0.6, neutral=0.1), 1.0, STANDING, (0.12, 0.2), 1.2,
          "toilets", "white,dirty,open", outdoor=False),
    _kind("trash", "rubbish.n.01", _affinity(disgust=0.65, sadness=0.1), 1.0, STANDING, (0.2, 0.35), 0.45, None,
          "dirty,scattered,smelly"),
    _kind("trash can", "ashcan.n.01", _affinity(disgust=0.45, neutral=0.2), 0.8, STANDING, (0.1, 0.15), 1.3,
          "trash cans", "metal,full,gray"),
    _kind("cockroach", "cockroach.n.01", _affinity(disgust=0.6, fear=0.2), 1.0, ANYWHERE, (0.08, 0.14), 0.7,
          "cockroaches", "brown,dead,crawling"),
    # sadness
    _kind("rain cloud", "rain_cloud.n.01", _affinity(sadness=0.6, fear=0.1), 1.0, AIRBORNE, (0.25, 0.4), 0.6,
          "rain clouds", "dark,gray,heavy", indoor=False),
    _kind("grave", "grave.n.02", _affinity(sadness=0.6, fear=0.2), 1.0, STANDING, (0.1, 0.16), 1.2, "graves",
          "old,stone,gray", indoor=False),
    _kind("wheelchair", "wheelchair.n.01", _affinity(sadness=0.55, fear=0.05, neutral=0.12), 1.0, STANDING,
          (0.14, 0.22), 1.0, "wheelchairs", "empty,metal,folded"),
)

KIND_INDEX: dict[str, int] = {k.name: i for i, k in enumerate(OBJECTS)}
N_KINDS = len(OBJECTS)

# Kinds that wear shirts and hats.
PEOPLE = ("man", "woman")


@dataclass(frozen=True)
class Palette:
    """A background colour scheme: sky and wall colours plus a colour cast laid over the whole picture."""

    name: str
    sky: tuple[int, int, int]
    wall: tuple[int, int, int]
    cast: tuple[int, int, int]
    cast_strength: float       # 0 = no cast, 1 = the picture is the cast colour
    affinity: tuple[float, ...]


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    hex_colour = hex_colour.lstrip("#")
    return int(hex_colour[0:2], 16), int(hex_colour[2:4], 16), int(hex_colour[4:6], 16)


# Joy, surprise and neutral each have a palette of their own (sunny, candy, daylight): palettes that lean
# two emotions alike leave the demo's small models unable to tell those emotions apart by colour.
PALETTES: tuple[Palette, ...] = (
    Palette("sunny", _rgb("87ceeb"), _rgb("fff3c4"), _rgb("ffd54f"), 0.25, _affinity(joy=0.6, surprise=0.1)),
    Palette("candy", _rgb("ffc1e3"), _rgb("ffe0b2"), _rgb("ff80ab"), 0.15, _affinity(joy=0.2, surprise=0.55)),
    Palette("daylight", _rgb("a7c7e7"), _rgb("e8e4dc"), _rgb("ffffff"), 0.0, _affinity(floor=0.1, neutral=0.4)),
    Palette("overcast", _rgb("b0b7bf"), _rgb("d5d5d0"), _rgb("9e9e9e"), 0.15, _affinity(sadness=0.3, neutral=0.35,
                                                                                         floor=0.07)),
    Palette("rainy", _rgb("6d7f91"), _rgb("8a9aa9"), _rgb("455a75"), 0.3, _affinity(sadness=0.6, fear=0.1)),
    Palette("night", _rgb("0d1b2a"), _rgb("1b263b"), _rgb("050a14"), 0.45, _affinity(fear=0.55, sadness=0.15,
                                                                                     anger=0.08)),
    Palette("blood", _rgb("5c0a0a"), _rgb("7f1d1d"), _rgb("b71c1c"), 0.35, _affinity(anger=0.55, fear=0.25)),
    Palette("sickly", _rgb("a3a86b"), _rgb("8d8a4a"), _rgb("9e9d24"), 0.3, _affinity(disgust=0.6, sadness=0.1)),
)
N_PALETTES = len(PALETTES)


@dataclass(frozen=True)
class Predicate:
    """A canonical relationship, and the surface forms (with weights and synsets) it is written as."""

    canonical: str
    forms: tuple[tuple[str, float, tuple[str, ...]], ...]


PREDICATES: tuple[Predicate, ...] = (
    # Visual Genome writes its most frequent predicates in capitals ("ON", "IN", "WEARING", "OF").
    Predicate("on", (("ON", 0.72, ("along.r.01",)), ("on", 0.1, ("along.r.01",)),
                     ("on top of", 0.12, ("along.r.01",)), ("are on", 0.06, ("be.v.01",)))),
    Predicate("in", (("IN", 0.85, ("in.r.01",)), ("in a", 0.1, ("in.r.01",)), ("inside of", 0.05, ("inside.r.01",)))),
    Predicate("has", (("has", 0.8, ("have.v.01",)), ("has a", 0.12, ("have.v.01",)), ("have", 0.08, ("have.v.01",)))),
    Predicate("of", (("OF", 1.0, ()),)),
    Predicate("wearing", (("WEARING", 0.7, ("wear.v.01",)), ("wears", 0.2, ("wear.v.01",)),
                          ("wearing", 0.1, ("wear.v.01",)))),
    Predicate("holding", (("holding", 0.7, ("have.v.01",)), ("carrying", 0.15, ("transport.v.02",)),
                          ("with", 0.15, ()))),
    Predicate("near", (("next to", 0.5, ("next.r.01",)), ("near", 0.25, ("about.r.07",)), ("beside", 0.15, ()),
                       ("by", 0.1, ("by.r.01",)))),
    Predicate("above", (("above", 0.85, ("above.r.01",)), ("over", 0.15, ()))),
    Predicate("under", (("under", 0.7, ("under.r.01",)), ("below", 0.3, ("below.r.01",)))),
    Predicate("in front of", (("in front of", 1.0, ("in.r.01",)),)),
    Predicate("behind", (("behind", 1.0, ("behind.r.01",)),)),
    Predicate("standing on", (("standing on", 1.0, ("stand.v.01",)),)),
    Predicate("parked on", (("parked on", 1.0, ("along.r.01",)),)),
    Predicate("sitting on", (("sitting on", 1.0, ("sit.v.01",)),)),
    Predicate("walking on", (("walking on", 1.0, ("walk.v.01",)),)),
)
PREDICATE_INDEX: dict[str, int] = {p.canonical: i for i, p in enumerate(PREDICATES)}

# relationship_alias.txt: one synonym group per line, canonical first. Like the real file, a canonical
# may head several lines ("near,next to" / "near,beside").
RELATIONSHIP_ALIAS_LINES: tuple[str, ...] = (
    "on,on top of,are on",
    "in,in a,inside of",
    "has,has a,have",
    "wearing,wears,is wearing",
    "holding,carrying,is holding",
    "near,next to",
    "near,beside",
    "near,by",
    "above,over",
    "under,below",
    "standing on,is standing on",
    "sitting on,is sitting on",
    "parked on,is parked on",
    "walking on,is walking on",
)


def object_alias_lines() -> list[str]:
    """object_alias.txt: canonical name first, then the aliases (plurals, "<name> is") seen in annotations."""
    lines = []
    for kind in OBJECTS:
        if kind.plural:
            lines.append(f"{kind.name},{kind.plural},{kind.name} is")
    return lines


# Valence and arousal (1-9) that each emotion pulls a picture towards.
VALENCE = np.array([2.9, 2.8, 3.2, 7.4, 2.7, 6.5, 5.2])
AROUSAL = np.array([6.4, 5.0, 6.2, 5.4, 3.9, 6.3, 3.6])


def affinity_matrix() -> np.ndarray:
    """(N_KINDS, 7) planted object affinities."""
    return np.array([k.affinity for k in OBJECTS], dtype=np.float64)


def palette_matrix() -> np.ndarray:
    """(N_PALETTES, 7) planted palette affinities."""
    return np.array([p.affinity for p in PALETTES], dtype=np.float64)


def emotional_strength() -> np.ndarray:
    """(N_KINDS,) how far each object's affinity stands out from a neutral one, scaled to [0, 1].

    This is what the emotion stimuli maps light up: the fist and the grave, not the sky.
    """
    aff = affinity_matrix()
    strength = np.clip(aff[:, :NEUTRAL].max(axis=1) - 1.0 / N_EMOTIONS, 0.0, None)
    return strength / strength.max()


def top_objects(emotion: str, count: int | None = None) -> list[str]:
    """Object names sorted by planted affinity to `emotion`, strongest first (ties by name)."""
    e = EMOTIONS.index(emotion)
    ranked = sorted(OBJECTS, key=lambda k: (-k.affinity[e], k.name))
    names = [k.name for k in ranked]
    return names if count is None else names[:count]
