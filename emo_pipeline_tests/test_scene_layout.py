"""Scene layout: predicate geometry, the layout search, impossible overlaps and the label maps, on
hand-made boxes whose answers can be worked out by hand."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from emo_pipeline.scenes import layout as sl

HIGH = (0.1, 0.1, 0.2, 0.2)  # centre y 0.2
LOW = (0.1, 0.6, 0.2, 0.2)  # centre y 0.7
TABLE = (0.3, 0.4, 0.4, 0.3)  # spans y 0.4..0.7, centre y 0.55
CONTAINER = (0.3, 0.3, 0.4, 0.4)
MAN = (0.3, 0.2, 0.3, 0.7)


@pytest.mark.parametrize(("predicate", "subject", "obj", "expected"), [
    ("above", HIGH, LOW, True),
    ("over", HIGH, LOW, True),
    ("on top of", LOW, HIGH, False),
    ("under", LOW, HIGH, True),
    ("below", LOW, HIGH, True),
    ("beneath", HIGH, LOW, False),
    ("underneath", HIGH, LOW, False),
    # A cup standing on the table: its bottom (0.42) inside the table's span, centre above the table's.
    ("on", (0.4, 0.3, 0.1, 0.12), TABLE, True),
    ("on", (0.4, 0.25, 0.1, 0.12), TABLE, True),  # bottom 0.37: just above the top edge, within tolerance
    ("on", (0.4, 0.1, 0.1, 0.12), TABLE, False),  # floating: bottom 0.22
    ("on", (0.8, 0.3, 0.1, 0.12), TABLE, False),  # beside the table, no horizontal overlap
    ("on", (0.4, 0.5, 0.1, 0.15), TABLE, False),  # bottom inside, but centre (0.575) below the table's
    (" Standing  On ", (0.4, 0.3, 0.1, 0.12), TABLE, True),  # case and spacing do not matter
    ("parked on", (0.4, 0.1, 0.1, 0.12), TABLE, False),
    ("in", (0.45, 0.45, 0.1, 0.1), CONTAINER, True),
    ("inside", (0.8, 0.8, 0.1, 0.1), CONTAINER, False),
    ("of", (0.35, 0.6, 0.05, 0.05), CONTAINER, True),  # a part inside its whole
    ("in front of", (0.35, 0.5, 0.1, 0.1), (0.3, 0.1, 0.2, 0.2), True),  # centre outside, columns overlap
    ("in front of", (0.8, 0.5, 0.1, 0.1), (0.3, 0.1, 0.2, 0.2), False),
    ("behind", (0.35, 0.5, 0.1, 0.1), (0.3, 0.1, 0.2, 0.2), True),
    ("behind", (0.8, 0.5, 0.1, 0.1), (0.3, 0.1, 0.2, 0.2), False),
    ("near", HIGH, (0.4, 0.1, 0.2, 0.2), True),  # gap 0.1
    ("next to", HIGH, (0.5, 0.1, 0.2, 0.2), False),  # gap 0.2
    ("beside", HIGH, (0.4, 0.4, 0.2, 0.2), True),  # diagonal gap hypot(0.1, 0.1) = 0.141
    ("by", HIGH, (0.42, 0.42, 0.2, 0.2), False),  # diagonal gap hypot(0.12, 0.12) = 0.170
    ("near", HIGH, (0.15, 0.15, 0.2, 0.2), True),  # overlapping: gap 0
    ("has", MAN, (0.4, 0.18, 0.1, 0.1), True),  # the hat's centre (0.45, 0.23) is on the man
    ("wearing", MAN, (0.8, 0.0, 0.1, 0.1), False),
    ("holding", MAN, (0.5, 0.5, 0.1, 0.1), True),
    ("carrying", MAN, (0.0, 0.5, 0.1, 0.1), False),
])
def test_relation_holds_reads_each_predicate_group(predicate, subject, obj, expected):
    assert sl.relation_holds(predicate, subject, obj) is expected


def test_relation_holds_has_no_reading_for_other_predicates():
    assert sl.relation_holds("looking at", HIGH, LOW) is None
    assert sl.relation_holds("", HIGH, LOW) is None


SMALL_A = (0.1, 0.1, 0.2, 0.2)
SMALL_B = (0.15, 0.15, 0.2, 0.2)  # covers 0.0225 of A's 0.04: more than half


def test_small_boxes_on_top_of_each_other_overlap_impossibly():
    assert sl.overlap_violations(["cup", "dog"], [], [SMALL_A, SMALL_B]) == [(0, 1)]
    # A relation without a containment reading does not excuse it.
    assert sl.overlap_violations(["cup", "dog"], [(0, "near", 1)], [SMALL_A, SMALL_B]) == [(0, 1)]


def test_containment_relations_and_background_regions_may_overlap():
    assert sl.overlap_violations(["cup", "table"], [(0, "on", 1)], [SMALL_A, SMALL_B]) == []
    assert sl.overlap_violations(["hat", "man"], [(1, "has", 0)], [SMALL_A, SMALL_B]) == []  # either direction
    sky = (0.0, 0.0, 0.6, 0.6)  # 0.36 of the canvas
    assert sl.overlap_violations(["sky", "kite"], [], [sky, SMALL_A]) == []


def test_a_slight_overlap_is_allowed():
    beside = (0.25, 0.1, 0.2, 0.2)  # covers 0.01 of A's 0.04
    assert sl.overlap_violations(["cup", "dog"], [], [SMALL_A, beside]) == []


def test_layout_score_counts_held_failed_and_overlapping():
    relations = [(0, "above", 1), (0, "below", 1), (0, "looking at", 1)]
    # One relation holds, one fails, one has no reading, and the two boxes overlap impossibly: 1 - 1 - 2.
    assert sl.layout_score(["cup", "dog"], relations, [SMALL_A, SMALL_B]) == -2.0
    with pytest.raises(ValueError):
        sl.layout_score(["cup", "dog"], [(0, "on", 2)], [SMALL_A, SMALL_B])


def _scene_boxes() -> dict[str, np.ndarray]:
    """Sky samples high, grass low (both large), and dogs of which only a quarter stand on the grass."""
    rng = np.random.default_rng(7)
    sky_y = rng.uniform(0.0, 0.05, 20)
    grass_y = rng.uniform(0.6, 0.65, 20)
    sky = np.column_stack([np.zeros(20), sky_y, np.ones(20), rng.uniform(0.3, 0.35, 20)])
    grass = np.column_stack([np.zeros(20), grass_y, np.ones(20), 1.0 - grass_y])
    # Standing dogs: bottom at 0.75..0.8, inside the grass; flying dogs: bottom at 0.2..0.3.
    standing = np.column_stack([rng.uniform(0.3, 0.5, 5), rng.uniform(0.55, 0.6, 5), np.full(5, 0.2), np.full(5, 0.2)])
    flying = np.column_stack([rng.uniform(0.3, 0.5, 15), rng.uniform(0.0, 0.1, 15), np.full(15, 0.2), np.full(15, 0.2)])
    return {"sky": sky, "grass": grass, "dog": np.vstack([standing, flying])}


SCENE = ["sky", "grass", "dog"]
SCENE_RELATIONS = [(0, "above", 1), (2, "on", 1)]


def test_place_objects_is_deterministic_per_seed_and_varies_across_seeds():
    boxes = _scene_boxes()
    names = [*SCENE, "kite"]  # the kite has no observed boxes: it gets a default one
    first = sl.place_objects(names, SCENE_RELATIONS, boxes, np.random.default_rng(3))
    again = sl.place_objects(names, SCENE_RELATIONS, boxes, np.random.default_rng(3))
    other = sl.place_objects(names, SCENE_RELATIONS, boxes, np.random.default_rng(4))
    assert first == again
    assert first != other
    for seed in range(5):
        for x, y, w, h in sl.place_objects(names, SCENE_RELATIONS, boxes, np.random.default_rng(seed), tries=8):
            assert x >= 0.0 and x + w <= 1.0 + 1e-12 and y >= 0.0 and y + h <= 1.0 + 1e-12
            assert w > 0 and h > 0


def test_place_objects_shifts_boxes_inside_the_canvas_and_defaults_unseen_names():
    boxes = {"cup": np.array([[0.9, -0.1, 0.3, 0.2]]), "banner": np.array([[-0.2, 0.5, 1.4, 0.1]]),
             "ghost": np.empty((0, 4))}
    cup, banner, ghost = sl.place_objects(["cup", "banner", "ghost"], [], boxes, np.random.default_rng(0), tries=1)
    assert cup == pytest.approx((0.7, 0.0, 0.3, 0.2))
    assert banner == pytest.approx((0.0, 0.5, 1.0, 0.1))
    assert 0.1 <= ghost[2] <= 0.3 and 0.1 <= ghost[3] <= 0.3


def test_the_search_finds_a_layout_where_the_relations_hold():
    boxes = _scene_boxes()
    single = [sl.layout_score(SCENE, SCENE_RELATIONS,
                              sl.place_objects(SCENE, SCENE_RELATIONS, boxes, np.random.default_rng(s),
                                               tries=1, repairs=0))
              for s in range(20)]
    assert min(single) < 2  # single draws often leave the dog in the sky: the search matters
    for seed in range(5):
        placed = sl.place_objects(SCENE, SCENE_RELATIONS, boxes, np.random.default_rng(seed), repairs=0)
        for s, p, o in SCENE_RELATIONS:
            assert sl.relation_holds(p, placed[s], placed[o]) is True
        assert sl.overlap_violations(SCENE, SCENE_RELATIONS, placed) == []
        assert sl.layout_score(SCENE, SCENE_RELATIONS, placed) >= max(single)


def test_the_repair_pass_never_makes_a_layout_worse():
    boxes = _scene_boxes()
    gains = []
    for seed in range(10):
        plain, repaired = (sl.layout_score(SCENE, SCENE_RELATIONS,
                                           sl.place_objects(SCENE, SCENE_RELATIONS, boxes, np.random.default_rng(seed),
                                                            tries=1, repairs=r))
                           for r in (0, 16))
        assert repaired >= plain  # the same first draw, then only improvements are kept
        gains.append(repaired - plain)
    assert max(gains) > 0


def test_label_map_paints_small_boxes_over_large_ones():
    big, small = (0.0, 0.0, 0.6, 0.6), (0.2, 0.2, 0.2, 0.2)
    # The small box comes first in the list, yet stays visible: painting goes by area.
    labels = sl.label_map([small, big], [7, 5], size=(10, 10))
    assert labels.shape == (10, 10) and labels.dtype == np.uint16
    assert (labels[2:4, 2:4] == 7).all()
    assert {int(v): int(c) for v, c in zip(*np.unique(labels, return_counts=True))} == {0: 64, 5: 32, 7: 4}
    assert (labels[:6, :6] != 0).all() and labels[6:, :].sum() == 0 and labels[:, 6:].sum() == 0


def test_label_map_size_is_width_by_height_and_tiny_boxes_keep_a_pixel():
    labels = sl.label_map([(0.5, 0.5, 0.01, 0.01)], [3], size=(8, 4))
    assert labels.shape == (4, 8)
    assert np.argwhere(labels == 3).tolist() == [[2, 4]]


def test_label_map_equal_areas_paint_later_objects_on_top():
    labels = sl.label_map([(0.0, 0.0, 0.5, 0.5), (0.2, 0.2, 0.5, 0.5)], [1, 2], size=(10, 10))
    assert labels[3, 3] == 2
    assert (labels == 1).sum() == 25 - 9


def _png_bit_depth(data: bytes) -> int:
    # IHDR follows the 8-byte signature: length, type, width, height, then the bit depth byte.
    assert data[12:16] == b"IHDR"
    return struct.unpack(">B", data[24:25])[0]


@pytest.mark.parametrize(("top_id", "depth"), [(255, 8), (300, 16)])
def test_label_map_png_round_trips_the_class_ids(top_id, depth):
    labels = sl.label_map([(0.0, 0.0, 0.6, 0.6), (0.2, 0.2, 0.2, 0.2)], [4, top_id], size=(12, 9))
    data = sl.label_map_png(labels)
    assert _png_bit_depth(data) == depth
    with Image.open(io.BytesIO(data)) as image:
        back = np.array(image)
    assert back.shape == (9, 12)
    np.testing.assert_array_equal(back.astype(np.int64), labels.astype(np.int64))


def test_colour_legend_png_is_a_png():
    labels = sl.label_map([(0.0, 0.0, 0.6, 0.6), (0.2, 0.2, 0.2, 0.2)], [4, 300], size=(16, 16))
    assert sl.colour_legend_png(labels, {4: "grass"}, title="scene").startswith(b"\x89PNG")
