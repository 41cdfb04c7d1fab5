"""The synthetic world: real formats, determinism, readers' acceptance and a learnable planted signal."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emo_pipeline.core.emotions import EMOTIONS, KEYWORDS
from emo_pipeline.synthetic import SCALES, WorldSummary, read_planted_vg, write_world
from emo_pipeline.synthetic.emotion6_writer import HEADER
from emo_pipeline.synthetic.grammar import OBJECTS, PALETTES
from emo_pipeline.synthetic.render import LOOKS
from emo_pipeline.synthetic.scenes import SceneStyle
from emo_pipeline.synthetic.visual_genome_writer import VisualGenomeSpec, write_visual_genome
from emo_pipeline_tests.conftest import shared_datasets

SEED = 7
REAL_HEADER = ("[image_filename]\t[valence]\t[arousal]\t[prob. anger]\t[prob. disgust]\t[prob. fear]\t"
               "[prob. joy]\t[prob. sadness]\t[prob. surprise]\t[prob. neutral]")
VG_JSON = ("image_data.json", "objects.json", "relationships.json", "attributes.json")


@pytest.fixture(scope="module")
def world_and_progress(tmp_path_factory: pytest.TempPathFactory) -> tuple[WorldSummary, list[str]]:
    """The demo world, written once for the module, with the progress lines it reported."""
    lines: list[str] = []
    summary = write_world(tmp_path_factory.mktemp("world"), seed=SEED, scale="demo", progress=lines.append)
    return summary, lines


@pytest.fixture(scope="module")
def world(world_and_progress: tuple[WorldSummary, list[str]]) -> WorldSummary:
    return world_and_progress[0]


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _ground_truth(world: WorldSummary) -> tuple[list[str], np.ndarray]:
    lines = (world.emotion6 / "ground_truth.txt").read_text().split("\n")
    rows = [line.split("\t") for line in lines[1:] if line]
    return [r[0] for r in rows], np.array([[float(v) for v in r[1:]] for r in rows])


def _load(path: Path):
    return json.loads(path.read_text())


# --- determinism -------------------------------------------------------------------------------------

def test_same_seed_same_bytes_and_another_seed_differs(world: WorldSummary, tmp_path: Path):
    """Also: writing into a folder that holds an older world replaces it entirely."""
    target = tmp_path / "world"
    write_world(target, seed=SEED + 1)
    other = _digests(target)
    write_world(target, seed=SEED)
    first, again = _digests(world.root), _digests(target)
    assert first == again
    # Emotion6: pictures, ground truth, readme; EmotionROI: pictures, ESMs, two split files;
    # VG: pictures, four JSON files, two alias files; the two planted_*.json files.
    assert len(first) == (240 + 2) + (2 * 120 + 2) + (300 + 4 + 2) + 2
    differing = [name for name in first if other.get(name) != first[name]]
    assert "Emotion6/ground_truth.txt" in differing and "VG/objects.json" in differing


def test_no_staging_leftovers(world: WorldSummary):
    assert sorted(p.name for p in world.root.iterdir()) == [
        "Emotion6", "EmotionROI", "VG", "planted_affinities.json", "planted_scenes.json"]


def test_every_object_and_palette_is_drawable():
    assert set(LOOKS) == {kind.name for kind in OBJECTS}
    assert len({p.name for p in PALETTES}) == len(PALETTES)


def test_unknown_scale_is_refused(tmp_path: Path):
    assert SCALES == ("demo", "vg-full", "detector-pretraining")
    with pytest.raises(ValueError, match="scale"):
        write_world(tmp_path, scale="huge")


def test_the_detector_pretraining_world_is_the_demo_with_ten_times_its_visual_genome(tmp_path: Path):
    demo = write_world(tmp_path / "demo", seed=4, scale="demo", images=False)
    large = write_world(tmp_path / "large", seed=4, scale="detector-pretraining", images=False)
    assert (large.vg_images, demo.vg_images) == (3000, 300)
    assert (large.emotion6 / "ground_truth.txt").read_bytes() == (demo.emotion6 / "ground_truth.txt").read_bytes()
    sizes = {(r["width"], r["height"]) for r in _load(large.visual_genome / "image_data.json")}
    assert sizes == {(r["width"], r["height"]) for r in _load(demo.visual_genome / "image_data.json")}


def test_summary_and_progress(world_and_progress: tuple[WorldSummary, list[str]]):
    world, lines = world_and_progress
    assert (world.emotion6_images, world.emotionroi_images, world.vg_images) == (240, 120, 300)
    assert world.vg_objects == sum(len(r["objects"]) for r in _load(world.visual_genome / "objects.json"))
    assert world.vg_relationships == sum(len(r["relationships"])
                                         for r in _load(world.visual_genome / "relationships.json"))
    assert "Emotion6: 240 images written" in lines
    assert any(line.startswith("Visual Genome: 300/300 images") for line in lines)


# --- Emotion6 ----------------------------------------------------------------------------------------

def test_emotion6_header_is_the_real_one(world: WorldSummary):
    real = shared_datasets() / "Emotion6" / "ground_truth.txt"
    expected = real.read_bytes().split(b"\n")[0].rstrip(b"\r").decode() if real.is_file() else REAL_HEADER
    assert expected == HEADER
    text = (world.emotion6 / "ground_truth.txt").read_bytes()
    assert text.split(b"\n")[0].decode() == expected
    assert b"\r" not in text and text.endswith(b"\n")


def test_emotion6_rows(world: WorldSummary):
    keys, values = _ground_truth(world)
    expected = {f"{k}/{n}.jpg" for k in KEYWORDS for n in range(1, 41)}
    assert len(keys) == len(expected) and set(keys) == expected
    assert keys != sorted(keys)
    for keyword in KEYWORDS:  # interleaved like the real file, yet each keyword in 1..N order
        numbers = [int(k.split("/")[1][:-4]) for k in keys if k.startswith(keyword + "/")]
        assert numbers == list(range(1, 41))
    probs = values[:, 2:]
    assert np.abs(probs.sum(axis=1) - 1).max() <= 2e-6
    np.testing.assert_allclose(probs * 15, np.round(probs * 15), atol=2e-5)  # vote fractions k/15
    assert ((values[:, :2] >= 1) & (values[:, :2] <= 9)).all()
    np.testing.assert_allclose(values[:, :2] * 10, np.round(values[:, :2] * 10), atol=1e-9)
    for image_key in keys:
        assert (world.emotion6 / "images" / image_key).is_file()


def test_emotion6_numbers_are_formatted_like_c_g(world: WorldSummary):
    body = (world.emotion6 / "ground_truth.txt").read_text().split("\n")[1:]
    fields = Counter(f for line in body if line for f in line.split("\t")[1:])
    assert {"0", "0.0666667", "0.133333"} <= set(fields)
    assert all(re.fullmatch(r"0|1|0\.\d{1,7}|[1-9](\.\d)?", f) for f in fields), sorted(fields)[:20]


def test_emotion6_keyword_is_not_the_label(world: WorldSummary):
    keys, values = _ground_truth(world)
    dominant = values[:, 2:].argmax(axis=1)
    match = np.mean([EMOTIONS[d] == k.split("/")[0] for d, k in zip(dominant, keys)])
    assert 0.3 < match < 0.75


def test_emotion6_images_are_rgb_jpegs_long_side_160(world: WorldSummary):
    for path in sorted((world.emotion6 / "images").rglob("*.jpg"))[:30]:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and max(image.size) == 160


# --- EmotionROI --------------------------------------------------------------------------------------

def test_emotionroi_esm_matches_its_image(world: WorldSummary):
    images = sorted((world.emotionroi / "images").rglob("*.jpg"))
    assert len(images) == 120
    for path in images:
        esm_path = world.emotionroi / "ground_truth" / path.relative_to(world.emotionroi / "images")
        with Image.open(path) as image, Image.open(esm_path) as esm:
            assert esm.mode == "L" and esm.size == image.size
            levels = np.asarray(esm)
            assert levels.max() > 60 and levels.min() < 40  # bright somewhere, dark elsewhere


def test_emotionroi_split(world: WorldSummary):
    split = world.emotionroi / "training_testing_split"
    training = (split / "training.txt").read_text().splitlines()
    testing = (split / "testing.txt").read_text().splitlines()
    assert (len(training), len(testing)) == (84, 36)
    assert not set(training) & set(testing)
    assert set(training) | set(testing) == {f"{e}/{n}.jpg" for e in KEYWORDS for n in range(1, 21)}


# --- Visual Genome -----------------------------------------------------------------------------------

def _key_sets(records: list[dict]) -> dict[str, set]:
    """Key tuples (in order) of records, of their items and of relationship ends."""
    out: dict[str, set] = {"record": set(), "item": set(), "end": set()}
    for record in records:
        out["record"].add(tuple(record))
        for field in ("objects", "relationships", "attributes"):
            for item in record.get(field, []):
                out["item"].add(tuple(item))
                if field == "relationships":
                    out["end"] |= {tuple(item["subject"]), tuple(item["object"])}
    return out


@pytest.mark.real_data
@pytest.mark.parametrize("name", VG_JSON)
def test_vg_keys_match_the_real_files(world: WorldSummary, name: str):
    sample = shared_datasets() / "visual_genome_sample" / name
    if not sample.is_file():
        pytest.skip(f"the real Visual Genome sample is not at {sample.parent}")
    assert _key_sets(_load(world.visual_genome / name)) == _key_sets(_load(sample))


@pytest.mark.parametrize("name", VG_JSON)
def test_vg_json_is_in_the_real_compact_style(world: WorldSummary, name: str):
    text = (world.visual_genome / name).read_text()
    assert text == json.dumps(json.loads(text))  # one line, ", " and ": " separators, no newline at the end


def test_vg_relationship_ends_mix_name_and_names(world: WorldSummary):
    relationships = [r for record in _load(world.visual_genome / "relationships.json")
                     for r in record["relationships"]]
    ends = [end for r in relationships for end in (r["subject"], r["object"])]
    with_name = sum("name" in e for e in ends)
    with_names = sum("names" in e for e in ends)
    assert with_name + with_names == len(ends) and with_name > 0 and with_names > 0
    known = {o["object_id"] for record in _load(world.visual_genome / "objects.json") for o in record["objects"]}
    missing = np.mean([e["object_id"] not in known for e in ends])
    assert 0.1 < missing < 0.3  # about a fifth, as in the real file
    predicates = Counter(r["predicate"] for r in relationships)
    assert {"ON", "WEARING", "has"} <= set(predicates)


def test_vg_images_urls_names_and_borders(world: WorldSummary):
    vg = world.visual_genome
    image_data = _load(vg / "image_data.json")
    assert [d["image_id"] for d in image_data] == list(range(1, 301))
    folders = Counter()
    for d in image_data:
        match = re.fullmatch(r"https://cs\.stanford\.edu/people/rak248/(VG_100K(?:_2)?)/(\d+)\.jpg", d["url"])
        assert match and int(match.group(2)) == d["image_id"]
        folders[match.group(1)] += 1
        with Image.open(vg / match.group(1) / f"{d['image_id']}.jpg") as image:
            assert image.size == (d["width"], d["height"])
    assert set(folders) == {"VG_100K", "VG_100K_2"}

    sizes = {d["image_id"]: (d["width"], d["height"]) for d in image_data}
    objects = [(record["image_id"], o) for record in _load(vg / "objects.json") for o in record["objects"]]
    names = {o["names"][0] for _, o in objects}
    assert "street light" in names and "sky" in names  # names with spaces, as in the real data
    past = sum(o["x"] + o["w"] > sizes[i][0] or o["y"] + o["h"] > sizes[i][1] for i, o in objects)
    assert 0 < past < 0.05 * len(objects)

    alias = {}
    for line in (vg / "object_alias.txt").read_text().splitlines():
        canonical, *others = line.split(",")
        alias.update(dict.fromkeys(others, canonical))
    assert any(n in alias for n in names)  # some objects use a plural alias that maps back
    canonical = {alias.get(n, n) for n in names}
    planted = set(_load(world.planted_affinities)["objects"])
    assert canonical <= planted


def test_vg_streams_across_chunks(tmp_path: Path):
    """Chunked writing gives valid files with unique ids running on across chunks."""
    spec = VisualGenomeSpec(images=20, long_sides=((160, 1.0),), relations_per_object=0.5, chunk_images=7,
                            style=SceneStyle(foreground_mean=2.0, foreground_max=5, windows_mean=0.5))
    counts = write_visual_genome(tmp_path, seed=3, spec=spec, images=False)
    objects = _load(tmp_path / "objects.json")
    ids = [o["object_id"] for record in objects for o in record["objects"]]
    rel_ids = [r["relationship_id"] for record in _load(tmp_path / "relationships.json")
               for r in record["relationships"]]
    assert [record["image_id"] for record in objects] == list(range(1, 21))
    assert len(ids) == len(set(ids)) == counts.objects
    assert rel_ids == list(range(1, counts.relationships + 1))
    assert not list(tmp_path.glob("VG_100K*"))


# --- readers -----------------------------------------------------------------------------------------

def test_emotion6_reader_accepts_the_world(world: WorldSummary):
    from emo_pipeline.sources.emotion6 import inspect_emotion6

    report = inspect_emotion6(world.emotion6)
    assert report.rejected == [] and report.rows == 240


def test_emotionroi_reader_accepts_the_world(world: WorldSummary):
    from emo_pipeline.sources.emotionroi import inspect_emotionroi

    report = inspect_emotionroi(world.emotionroi)
    assert report.rejected == [] and report.rows == 120


def test_visual_genome_reader_accepts_the_world(world: WorldSummary):
    from emo_pipeline.sources.visual_genome import inspect_visual_genome

    report = inspect_visual_genome(world.visual_genome)
    assert report.rejected == [] and report.rows == 300


# --- the planted signal ------------------------------------------------------------------------------

def test_planted_affinities(world: WorldSummary):
    planted = _load(world.planted_affinities)
    assert planted["emotions"] == list(EMOTIONS) and planted["seed"] == SEED and planted["scale"] == "demo"
    assert 30 <= len(planted["objects"]) <= 45 and any(" " in name for name in planted["objects"])
    for table in ("objects", "palettes"):
        for affinity in planted[table].values():
            assert len(affinity) == 7 and abs(sum(affinity) - 1) < 1e-5
    for e, emotion in enumerate(EMOTIONS):
        ranked = [planted["objects"][name][e] for name in planted["top_objects"][emotion]]
        assert ranked == sorted(ranked, reverse=True)
    assert planted["top_objects"]["fear"][:1] != planted["top_objects"]["joy"][:1]


def test_dominant_emotion_follows_planted_objects(world: WorldSummary):
    """Pictures whose dominant emotion is e show e's top planted objects more often than the others."""
    planted = _load(world.planted_affinities)
    scenes = _load(world.planted_scenes)["Emotion6"]
    keys, values = _ground_truth(world)
    dominant = values[:, 2:].argmax(axis=1)
    for e, emotion in enumerate(EMOTIONS[:6]):
        top = set(planted["top_objects"][emotion][:3])
        has_top = np.array([any(o["name"] in top for o in scenes[k]["objects"]) for k in keys])
        assert has_top[dominant == e].mean() > has_top[dominant != e].mean() + 0.1, emotion


def test_objects_and_palette_predict_better_than_the_mean(world: WorldSummary):
    """A ridge regression on what was planted (object areas, palette) beats predicting the mean."""
    planted = _load(world.planted_affinities)
    names, palettes = sorted(planted["objects"]), sorted(planted["palettes"])
    scenes = _load(world.planted_scenes)["Emotion6"]
    keys, values = _ground_truth(world)
    probs = values[:, 2:]
    features = np.zeros((len(keys), len(names) + len(palettes)))
    for i, key in enumerate(keys):
        scene = scenes[key]
        for o in scene["objects"]:
            features[i, names.index(o["name"])] += np.sqrt(o["w"] * o["h"] / (scene["width"] * scene["height"]))
        features[i, len(names) + palettes.index(scene["palette"])] = 1.0
    train = np.arange(len(keys)) % 10 < 7
    weights = np.linalg.solve(features[train].T @ features[train] + np.eye(features.shape[1]),
                              features[train].T @ probs[train])
    predicted = np.clip(features[~train] @ weights, 1e-6, None)
    predicted /= predicted.sum(axis=1, keepdims=True)
    model = ((predicted - probs[~train]) ** 2).mean()
    baseline = ((probs[train].mean(axis=0) - probs[~train]) ** 2).mean()
    assert model < 0.8 * baseline


def test_planted_visual_genome_distributions(world: WorldSummary):
    """Every VG image's planted distribution: one per image id, summing to 1, led by its mood mostly,
    and made from the objects objects.json lists for it (an image with fear's top objects leans to fear)."""
    planted = read_planted_vg(world.root)
    assert planted["image_id"].tolist() == list(range(1, world.vg_images + 1))
    probs = planted[[f"prob_{e}" for e in EMOTIONS]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    led = np.asarray(EMOTIONS)[probs.argmax(axis=1)] == planted["mood"].to_numpy()
    assert led.mean() > 0.6
    fear_objects = set(_load(world.planted_affinities)["top_objects"]["fear"][:3])
    names = {r["image_id"]: {o.get("name") or o["names"][0] for o in r["objects"]}
             for r in _load(world.visual_genome / "objects.json")}
    has_fear = planted["image_id"].map(lambda i: bool(names[i] & fear_objects)).to_numpy()
    fear = probs[:, EMOTIONS.index("fear")]
    assert fear[has_fear].mean() > fear[~has_fear].mean() + 0.1
