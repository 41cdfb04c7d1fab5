"""Writing a Visual-Genome-shaped folder (v1.4 layout) from the scene grammar.

Files, with the real files' key sets and key order and the same compact JSON style (", " and ": "
separators, one line, no trailing newline):

- `image_data.json`: [{"width", "url", "height", "image_id", "coco_id", "flickr_id"}]; the url names
  the image folder, VG_100K or VG_100K_2;
- `objects.json`: [{"image_id", "objects": [{"synsets", "h", "object_id", "merged_object_ids",
  "names", "w", "y", "x"}], "image_url"}];
- `relationships.json`: [{"relationships": [{"predicate", "object", "relationship_id", "synsets",
  "subject"}], "image_id"}], where a subject or object is written either with "name" (a string, a box
  that may differ by a few pixels from objects.json, and for about a fifth an object id that
  objects.json does not have) or with "names" (a list, the objects.json box and id, and
  "merged_object_ids"), mixed in one file as in the real one;
- `attributes.json`: [{"image_id", "attributes": [{"synsets", "h", "object_id", "names", "w",
  "attributes"?, "y", "x"}]}], "attributes" present only for objects that have some;
- `object_alias.txt`, `relationship_alias.txt`: one synonym group per line, canonical name first;
- `VG_100K/<id>.jpg`, `VG_100K_2/<id>.jpg`: the pictures, when asked for.

The world is generated in chunks of scenes with vectorised numpy and each JSON file is streamed chunk
by chunk, so the full-size world (108,077 images, about 3.8 million objects) never sits in memory.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from emo_pipeline.core.atomic import atomic_output, write_text_atomic
from emo_pipeline.synthetic import grammar as g
from emo_pipeline.synthetic.annotation import latent_distribution
from emo_pipeline.synthetic.relations import FORMS, sample_relations
from emo_pipeline.synthetic.render import render_scene, save_jpeg
from emo_pipeline.synthetic.scenes import SceneStyle, picture_sizes, sample_scenes

URL_PREFIX = "https://cs.stanford.edu/people/rak248/"
FOLDERS = ("VG_100K", "VG_100K_2")
SECOND_FOLDER_SHARE = 0.406   # 43,903 of the 108,077 real images live in VG_100K_2
COCO_SHARE = 0.47             # images that also belong to MS-COCO
FLICKR_SHARE = 0.6
# Moods of Visual Genome scenes: everyday scenes are mostly neutral, the rest any emotion.
MOOD_WEIGHTS = np.array([0.1, 0.1, 0.12, 0.14, 0.12, 0.12, 0.3])

# Annotation quirks of the real files, reproduced at about their real rates.
PLURAL_SHARE = 0.15           # "trees" for a tree; object_alias.txt maps it back
MERGED_SHARE = 0.11           # objects with non-empty merged_object_ids
ATTRIBUTE_SHARE = 0.52        # objects listed in attributes.json with an "attributes" list
NAMES_FORM_SHARE = 0.08       # relationship ends written with "names" (list) rather than "name"
MISSING_ID_SHARE = 0.22       # "name" ends whose object id objects.json lacks (about a fifth of all ends)
JITTER_SHARE = 0.4            # "name" ends whose box differs by a few pixels from objects.json
BE_SYNSET_SHARE = 0.08        # predicates mapped to be.v.01 whatever their wording

# Id ranges: the objects' own ids, ids of objects merged away, and ids only relationships know.
OBJECT_ID_BASE = 1_000_000
MERGED_ID_BASE = 20_000_000
LOST_ID_BASE = 40_000_000
COCO_ID_BASE = 100
FLICKR_ID_BASE = 2_000_000_000


@dataclass(frozen=True)
class VisualGenomeSpec:
    images: int
    long_sides: tuple[tuple[int, float], ...]
    style: SceneStyle
    relations_per_object: float
    chunk_images: int = 4000


@dataclass
class VisualGenomeCounts:
    images: int = 0
    objects: int = 0
    relationships: int = 0
    attributes: int = 0       # objects that carry an "attributes" list
    # Per image (in image id order): the mood it was drawn for and the noise-free distribution its
    # content evokes (see annotation.latent_distribution), for tests of what dataset B can recover.
    moods: list[np.ndarray] = field(default_factory=list)
    latent: list[np.ndarray] = field(default_factory=list)


def _templates() -> dict[str, list[str]]:
    """%-format templates per (kind, plural?) variant, in the real key order; JSON for fixed parts."""
    out: dict[str, list[str]] = {"object": [], "attribute": [], "attribute_with": [], "name_end": [],
                                 "names_end": []}
    for kind in g.OBJECTS:
        for plural in (False, True):
            name = kind.plural if plural and kind.plural else kind.name
            syn = json.dumps(list(kind.synsets))
            names = json.dumps([name])
            out["object"].append('{"synsets": ' + syn + ', "h": %d, "object_id": %d, "merged_object_ids": %s, '
                                 '"names": ' + names + ', "w": %d, "y": %d, "x": %d}')
            out["attribute"].append('{"synsets": ' + syn + ', "h": %d, "object_id": %d, "names": ' + names
                                    + ', "w": %d, "y": %d, "x": %d}')
            out["attribute_with"].append('{"synsets": ' + syn + ', "h": %d, "object_id": %d, "names": ' + names
                                         + ', "w": %d, "attributes": %s, "y": %d, "x": %d}')
            out["name_end"].append('{"name": ' + json.dumps(name) + ', "h": %d, "synsets": ' + syn
                                   + ', "object_id": %d, "w": %d, "y": %d, "x": %d}')
            out["names_end"].append('{"h": %d, "object_id": %d, "merged_object_ids": %s, "synsets": ' + syn
                                    + ', "w": %d, "y": %d, "x": %d, "names": ' + names + '}')
    return out


_T = _templates()
_HAS_PLURAL = np.array([k.plural is not None for k in g.OBJECTS])
_FORM_TEXT = [json.dumps(text) for text, _ in FORMS]
_FORM_SYNSETS = [json.dumps(list(synsets)) for _, synsets in FORMS] + ['["be.v.01"]']
_BE_SYNSET = len(FORMS)

# attributes.json word lists: per kind, every single word and every ordered pair of distinct words.
_ATTR_CHOICES: list[str] = []
_ATTR_OFFSET = np.zeros(g.N_KINDS, dtype=np.int64)
_ATTR_WORDS = np.array([len(k.attributes) for k in g.OBJECTS])
for _k, _kind in enumerate(g.OBJECTS):
    _ATTR_OFFSET[_k] = len(_ATTR_CHOICES)
    _words = _kind.attributes
    _ATTR_CHOICES += [json.dumps([w]) for w in _words]
    _ATTR_CHOICES += [json.dumps([a, b]) for a in _words for b in _words if a != b]


def _choose_attributes(rng: np.random.Generator, kind: np.ndarray) -> np.ndarray:
    """Index into _ATTR_CHOICES per object: one word (70%) or two."""
    words = _ATTR_WORDS[kind]
    u = rng.random(len(kind))
    single = rng.random(len(kind)) < 0.7
    pick = np.where(single, np.floor(u * words), words + np.floor(u * words * (words - 1)))
    return _ATTR_OFFSET[kind] + pick.astype(np.int64)


class _JsonArray:
    """A JSON array streamed record by record: "[" + records joined by ", " + "]", no newline."""

    def __init__(self, handle: TextIO) -> None:
        self.handle = handle
        self.empty = True
        handle.write("[")

    def extend(self, records: list[str]) -> None:
        if not records:
            return
        if not self.empty:
            self.handle.write(", ")
        self.handle.write(", ".join(records))
        self.empty = False

    def close(self) -> None:
        self.handle.write("]")


def write_visual_genome(root: Path, seed: int, spec: VisualGenomeSpec, images: bool = True,
                        progress: Callable[[str], None] | None = None) -> VisualGenomeCounts:
    """Write the folder under `root` and return what it holds. Deterministic for a given seed."""
    counts = VisualGenomeCounts()
    names = ("image_data", "objects", "relationships", "attributes")
    with contextlib.ExitStack() as stack:
        tmp = {n: stack.enter_context(atomic_output(root / f"{n}.json")) for n in names}
        handles = {n: stack.enter_context(open(tmp[n], "w", encoding="utf-8", newline="\n", buffering=1 << 22))
                   for n in names}
        arrays = {n: _JsonArray(handles[n]) for n in names}
        n_chunks = -(-spec.images // spec.chunk_images)
        for chunk in range(n_chunks):
            first = chunk * spec.chunk_images
            size = min(spec.chunk_images, spec.images - first)
            rng = np.random.default_rng(np.random.SeedSequence([seed, 3, chunk]))
            # Pictures draw from their own stream, so images=False leaves the annotations unchanged.
            render_rng = np.random.default_rng(np.random.SeedSequence([seed, 4, chunk])) if images else None
            records = _chunk_records(rng, render_rng, first, size, counts, spec, root)
            for n in names:
                arrays[n].extend(records[n])
            if progress and (chunk + 1 == n_chunks or (chunk + 1) % 5 == 0):
                progress(f"Visual Genome: {first + size}/{spec.images} images, {counts.objects} objects, "
                         f"{counts.relationships} relationships")
        for n in names:
            arrays[n].close()
            handles[n].close()
    write_text_atomic("\n".join(g.object_alias_lines()) + "\n", root / "object_alias.txt")
    write_text_atomic("\n".join(g.RELATIONSHIP_ALIAS_LINES) + "\n", root / "relationship_alias.txt")
    return counts


def _null(value: int) -> str:
    return "null" if value < 0 else str(value)


def _chunk_records(rng: np.random.Generator, render_rng: np.random.Generator | None, first: int, size: int,
                   counts: VisualGenomeCounts, spec: VisualGenomeSpec, root: Path) -> dict[str, list[str]]:
    """Generate `size` scenes and format their JSON records; advance the running id counters."""
    image_id = np.arange(first + 1, first + size + 1)
    width, height = picture_sizes(rng, size, spec.long_sides)
    moods = rng.choice(g.N_EMOTIONS, size=size, p=MOOD_WEIGHTS / MOOD_WEIGHTS.sum())
    batch = sample_scenes(rng, moods, width, height, spec.style)
    counts.moods.append(moods)
    counts.latent.append(latent_distribution(batch))
    rel = sample_relations(rng, batch, spec.relations_per_object)
    folder = (rng.random(size) < SECOND_FOLDER_SHARE).astype(np.int64)
    coco = np.where(rng.random(size) < COCO_SHARE, COCO_ID_BASE + 6 * image_id + rng.integers(0, 6, size), -1)
    flickr = np.where(rng.random(size) < FLICKR_SHARE,
                      FLICKR_ID_BASE + 1000 * image_id + rng.integers(0, 1000, size), -1)

    # Objects: ids, names (some plural), merged ids, attributes.
    m = batch.n_objects
    row_id = OBJECT_ID_BASE + counts.objects + np.arange(m)
    variant = 2 * batch.kind + ((rng.random(m) < PLURAL_SHARE) & _HAS_PLURAL[batch.kind])
    merged = rng.random(m) < MERGED_SHARE
    merged_text = ["[%d]" % (MERGED_ID_BASE + counts.objects + i) if flag else "[]"
                   for i, flag in enumerate(merged.tolist())]
    has_attributes = rng.random(m) < ATTRIBUTE_SHARE
    attribute_text = np.array(_ATTR_CHOICES, dtype=object)[_choose_attributes(rng, batch.kind)]

    # Relationship ends: "name" or "names" form, some boxes jittered, some ids unknown to objects.json.
    r = len(rel)
    rel_id = counts.relationships + 1 + np.arange(r)
    ends = []
    for side, rows in enumerate((rel.subject, rel.object)):
        names_form = rng.random(r) < NAMES_FORM_SHARE
        lost = ~names_form & (rng.random(r) < MISSING_ID_SHARE)
        jitter = ~names_form & (rng.random(r) < JITTER_SHARE)
        shift = rng.integers(-3, 4, (4, r)) * jitter
        end_id = np.where(lost, LOST_ID_BASE + 2 * (rel_id - 1) + side, row_id[rows])
        x = np.maximum(batch.x[rows] + shift[0], 0)
        y = np.maximum(batch.y[rows] + shift[1], 0)
        w = np.maximum(batch.w[rows] + shift[2], 1)
        h = np.maximum(batch.h[rows] + shift[3], 1)
        ends.append([
            _T["names_end"][v] % (hh, i, merged_text[row], ww, yy, xx) if nf
            else _T["name_end"][v] % (hh, i, ww, yy, xx)
            for v, nf, row, i, xx, yy, ww, hh in zip(variant[rows].tolist(), names_form.tolist(), rows.tolist(),
                                                      end_id.tolist(), x.tolist(), y.tolist(), w.tolist(), h.tolist())
        ])
    synset_index = np.where(rng.random(r) < BE_SYNSET_SHARE, _BE_SYNSET, rel.form)
    rel_text = [
        '{"predicate": %s, "object": %s, "relationship_id": %d, "synsets": %s, "subject": %s}'
        % (_FORM_TEXT[f], obj, rid, _FORM_SYNSETS[si], subj)
        for f, obj, rid, si, subj in zip(rel.form.tolist(), ends[1], rel_id.tolist(), synset_index.tolist(), ends[0])
    ]

    kx, ky, kw, kh = (a.tolist() for a in (batch.x, batch.y, batch.w, batch.h))
    object_text = [_T["object"][v] % (hh, i, mt, ww, yy, xx)
                   for v, i, mt, xx, yy, ww, hh in zip(variant.tolist(), row_id.tolist(), merged_text, kx, ky, kw, kh)]
    attr_text = [_T["attribute_with"][v] % (hh, i, ww, at, yy, xx) if ha else _T["attribute"][v] % (hh, i, ww, yy, xx)
                 for v, i, ha, at, xx, yy, ww, hh in zip(variant.tolist(), row_id.tolist(), has_attributes.tolist(),
                                                         attribute_text.tolist(), kx, ky, kw, kh)]

    urls = [f"{URL_PREFIX}{FOLDERS[f]}/{i}.jpg" for f, i in zip(folder.tolist(), image_id.tolist())]
    records: dict[str, list[str]] = {"image_data": [], "objects": [], "relationships": [], "attributes": []}
    ostart, rstart = batch.start.tolist(), rel.start.tolist()
    for j, (iid, wd, ht, url, cid, fid) in enumerate(zip(image_id.tolist(), width.tolist(), height.tolist(), urls,
                                                        coco.tolist(), flickr.tolist())):
        a, b = ostart[j], ostart[j + 1]
        records["image_data"].append('{"width": %d, "url": "%s", "height": %d, "image_id": %d, "coco_id": %s, '
                                     '"flickr_id": %s}' % (wd, url, ht, iid, _null(cid), _null(fid)))
        records["objects"].append('{"image_id": %d, "objects": [%s], "image_url": "%s"}'
                                  % (iid, ", ".join(object_text[a:b]), url))
        records["attributes"].append('{"image_id": %d, "attributes": [%s]}' % (iid, ", ".join(attr_text[a:b])))
        records["relationships"].append('{"relationships": [%s], "image_id": %d}'
                                        % (", ".join(rel_text[rstart[j]:rstart[j + 1]]), iid))

    if render_rng is not None:
        for j, (iid, f) in enumerate(zip(image_id.tolist(), folder.tolist())):
            save_jpeg(render_scene(batch, j, render_rng), root / FOLDERS[f] / f"{iid}.jpg")

    counts.images += size
    counts.objects += m
    counts.relationships += r
    counts.attributes += int(has_attributes.sum())
    return records
