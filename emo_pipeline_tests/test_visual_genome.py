"""Visual Genome reader: the real sample (v1.4 and v1.2), bad inputs built from real records, Parquet output.

Expected numbers are counted here independently with plain `json.load` (fine for 100 records).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emo_pipeline.core.rejection import NotADatasetError
from emo_pipeline.sources.visual_genome import (
    SCHEMAS,
    VG_TABLES,
    VisualGenomeData,
    ingest_visual_genome,
    inspect_visual_genome,
    read_visual_genome,
)

ALIAS_FILES = ("object_alias.txt", "relationship_alias.txt")


# ------------------------------------------------------------------------------------------------
# Independent helpers (plain Python, no DuckDB)


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def norm(text: str) -> str:
    return " ".join(text.split()).lower()


def alias_map(path: Path) -> dict[str, str]:
    """First entry of each line is canonical; first line wins; chains are followed to their end."""
    mapping: dict[str, str] = {}
    if not path.is_file():
        return mapping
    for line in path.read_text(encoding="utf-8").splitlines():
        entries = [norm(e) for e in line.split(",") if norm(e)]
        for synonym in entries[1:]:
            if synonym != entries[0]:
                mapping.setdefault(synonym, entries[0])
    resolved = {}
    for synonym, target in mapping.items():
        while target in mapping:  # the real files hold no cycles
            target = mapping[target]
        resolved[synonym] = target
    return resolved


def inline_name(entity: dict) -> str:
    return entity["name"] if "name" in entity else entity["names"][0]


@pytest.fixture(scope="module", params=["1.4", "1.2"])
def vg_version(request: pytest.FixtureRequest, real_vg_sample: Path,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(version, folder): the sample itself, or image_data.json beside the v1.2 objects/relationships."""
    if request.param == "1.4":
        return "1.4", real_vg_sample
    folder = tmp_path_factory.mktemp("vg_v1_2")
    (folder / "image_data.json").symlink_to(real_vg_sample / "image_data.json")
    for name in ("objects.json", "relationships.json"):
        (folder / name).symlink_to(real_vg_sample / "v1_2" / name)
    return "1.2", folder


@pytest.fixture(scope="module")
def vg_read(vg_version: tuple[str, Path]) -> tuple[str, Path, VisualGenomeData]:
    version, folder = vg_version
    return version, folder, read_visual_genome(folder)


# ------------------------------------------------------------------------------------------------
# The real sample


def test_real_sample_reads_without_rejections(vg_read) -> None:
    version, folder, data = vg_read
    assert data.rejected == []
    assert data.version == version
    assert len(data.images) == len(load(folder / "image_data.json")) == 100


def test_object_and_relationship_counts_match_plain_json(vg_read) -> None:
    _, folder, data = vg_read
    objects = load(folder / "objects.json")
    relationships = load(folder / "relationships.json")
    assert len(data.objects) == sum(len(r["objects"]) for r in objects)
    assert len(data.relationships) == sum(len(r["relationships"]) for r in relationships)


def test_objects_names_canonical_and_aliased(vg_read) -> None:
    _, folder, data = vg_read
    aliases = alias_map(folder / "object_alias.txt")
    expected = {}
    for record in load(folder / "objects.json"):
        for obj in record["objects"]:
            first = norm(obj["names"][0])
            expected[obj["object_id"]] = (aliases.get(first, first), [norm(n) for n in obj["names"]])
    got = {row.object_id: (row.name, row.names) for row in data.objects.itertuples()}
    assert got == expected
    assert data.objects["name"].str.contains(" ").any(), "names with spaces (street light) are kept whole"


def test_subjects_with_name_and_names_both_read(vg_read) -> None:
    version, folder, data = vg_read
    raw = [rel for r in load(folder / "relationships.json") for rel in r["relationships"]]
    forms = {"name": 0, "names": 0}
    for rel in raw:
        for side in ("subject", "object"):
            forms["name" if "name" in rel[side] else "names"] += 1
    if version == "1.4":  # both forms occur in the real v1.4 file
        assert forms["name"] > 0 and forms["names"] > 0
    aliases = alias_map(folder / "object_alias.txt")
    expected = {}
    for rel in raw:
        s, o = norm(inline_name(rel["subject"])), norm(inline_name(rel["object"]))
        expected[rel["relationship_id"]] = (aliases.get(s, s), aliases.get(o, o))
    got = {row.relationship_id: (row.subject_name, row.object_name) for row in data.relationships.itertuples()}
    assert got == expected
    assert (data.relationships["subject_name"].str.len() > 0).all()
    assert (data.relationships["object_name"].str.len() > 0).all()


def test_predicates_lower_case_and_aliased(vg_read) -> None:
    version, folder, data = vg_read
    raw = [rel["predicate"] for r in load(folder / "relationships.json") for rel in r["relationships"]]
    assert "ON" in raw and "WEARING" in raw  # the real files mix cases
    predicates = data.relationships["predicate"]
    assert (predicates == predicates.str.lower()).all()
    assert "on" in set(predicates)
    if version == "1.4":
        # relationship_alias.txt: line 1 is "near,next to", line 2182 "next to,...,are next to,..."
        aliases = alias_map(folder / "relationship_alias.txt")
        assert aliases["next to"] == aliases["are next to"] == "near"
        assert "next to" in raw and "are next to" in raw
        assert not set(predicates) & {"next to", "are next to"}
        assert (predicates == "near").sum() == sum(aliases.get(norm(p), norm(p)) == "near" for p in raw)
        assert list(predicates) == [aliases.get(norm(p), norm(p)) for p in raw]


def test_object_alias_pair_applied(real_vg_sample: Path) -> None:
    # object_alias.txt: "tree,trees,tree is,..." maps the sample's "trees" to "tree"
    assert alias_map(real_vg_sample / "object_alias.txt")["trees"] == "tree"
    data = read_visual_genome(real_vg_sample)
    trees = data.objects[data.objects["names"].map(lambda names: names[0] == "trees")]
    assert len(trees) > 0
    assert (trees["name"] == "tree").all()


def test_boxes_within_image_after_clipping(vg_read) -> None:
    _, folder, data = vg_read
    size = data.images.set_index("image_id")[["width", "height"]]
    objects = data.objects.join(size, on="image_id")
    assert (objects[["x", "y"]] >= 0).all().all()
    assert ((objects.w > 0) & (objects.h > 0)).all()
    assert (objects.x + objects.w <= objects.width).all()
    assert (objects.y + objects.h <= objects.height).all()
    images = {r["image_id"]: r for r in load(folder / "image_data.json")}
    past_border = sum(
        o["x"] < 0 or o["y"] < 0 or o["x"] + o["w"] > images[r["image_id"]]["width"]
        or o["y"] + o["h"] > images[r["image_id"]]["height"]
        for r in load(folder / "objects.json") for o in r["objects"])
    assert int(objects["clipped"].sum()) == past_border
    relationships = data.relationships.join(size, on="image_id")
    for side in ("subject", "object"):
        x, y, w, h = (relationships[f"{side}_{c}"] for c in "xywh")
        assert ((x >= 0) & (y >= 0) & (w > 0) & (h > 0)).all()
        assert ((x + w <= relationships.width) & (y + h <= relationships.height)).all()


def test_attribute_rows_match_plain_json(vg_read) -> None:
    _, folder, data = vg_read
    path = folder / "attributes.json"
    if not path.is_file():  # the v1.2 folder here has none: an empty table of the same schema
        assert not data.has_attributes
        assert len(data.attributes) == 0
        assert list(data.attributes.columns) == [c for c, _ in SCHEMAS["attributes"]]
        return
    expected = sum(len([a for a in obj.get("attributes", []) if a.strip()])
                   for r in load(path) for obj in r["attributes"])
    assert data.has_attributes
    assert len(data.attributes) == expected
    assert (data.attributes["attribute"] == data.attributes["attribute"].str.strip().str.lower()).all()


def test_images_folder_and_path(real_vg_sample: Path) -> None:
    data = read_visual_genome(real_vg_sample)
    first = data.images.iloc[0]
    assert (first.image_id, first.folder, first.image_path) == (1, "VG_100K_2", "VG_100K_2/1.jpg")
    assert set(data.images["folder"]) == {"VG_100K", "VG_100K_2"}
    assert data.images["coco_id"].dtype == "Int64"


def test_inspect_reports_counts(real_vg_sample: Path) -> None:
    report = inspect_visual_genome(real_vg_sample)
    assert report.dataset == "vg"
    assert report.rows == 100
    assert report.rejected == []
    objects = sum(len(r["objects"]) for r in load(real_vg_sample / "objects.json"))
    assert report.tables["objects"] == objects
    assert set(report.tables) == {"images", "objects", "relationships", "attributes"}


def test_parquet_outputs_have_exact_columns(real_vg_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    outputs = {table: out / f"vg_{table}.parquet" for table in VG_TABLES}
    result = ingest_visual_genome(real_vg_sample, outputs, threads=2)
    assert result.paths == outputs
    for table in VG_TABLES:
        written = pq.read_table(outputs[table])
        expected = ["file", "line", "field", "reason"] if table == "rejected" else [c for c, _ in SCHEMAS[table]]
        assert written.column_names == expected, table
        assert written.num_rows == result.counts[table]
    objects = pq.read_table(outputs["objects"]).schema
    assert objects.field("x").type == pa.int32()
    assert objects.field("object_id").type == pa.int64()
    assert objects.field("names").type == pa.list_(pa.string())
    assert objects.field("clipped").type == pa.bool_()
    assert pq.read_table(outputs["images"]).schema.field("coco_id").type == pa.int64()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in outputs.values())  # no leftovers


def test_integer_columns_are_delta_encoded(real_vg_sample: Path, tmp_path: Path) -> None:
    outputs = {table: tmp_path / f"{table}.parquet" for table in VG_TABLES}
    ingest_visual_genome(real_vg_sample, outputs)
    columns = pq.ParquetFile(outputs["objects"]).metadata.row_group(0)
    encodings = {columns.column(i).path_in_schema: columns.column(i).encodings for i in range(columns.num_columns)}
    for integer in ("image_id", "object_id", "x", "y", "w", "h"):
        assert "DELTA_BINARY_PACKED" in encodings[integer], (integer, encodings[integer])
    assert "DELTA_BINARY_PACKED" not in encodings["name"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="only Linux gives each thread its own priority")
def test_the_largest_file_is_read_at_full_priority_and_the_others_lower(
        real_vg_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from emo_pipeline.sources.visual_genome import reader

    priorities: dict[str, int] = {}
    read_file = reader.read_file

    def recording(con, table, path, out, work):
        priorities[table] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return read_file(con, table, path, out, work)

    monkeypatch.setattr(reader, "read_file", recording)
    ingest_visual_genome(real_vg_sample, {table: tmp_path / f"{table}.parquet" for table in VG_TABLES})
    sizes = {t: (real_vg_sample / f"{t}.json").stat().st_size for t in ("objects", "relationships", "attributes")}
    largest = max(sizes, key=sizes.get)
    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert priorities.pop("images") == ours
    assert priorities.pop(largest) == ours
    lowered = min(19, ours + reader._SMALLER_FILE_NICE)
    assert sorted(priorities) == sorted(set(sizes) - {largest})
    assert all(p == lowered for p in priorities.values()), priorities


# ------------------------------------------------------------------------------------------------
# Bad inputs, each in a small folder built from a few real records

Records = dict[str, list[dict]]


def build(real: Path, folder: Path, edit: Callable[[Records], None] | None = None, records: int = 6) -> Records:
    """The first `records` records of each real file (edited), written under `folder`; returns them."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {name: load(real / name)[:records]
            for name in ("image_data.json", "objects.json", "relationships.json", "attributes.json")}
    if edit:
        edit(data)
    for name, rows in data.items():
        (folder / name).write_text(json.dumps(rows), encoding="utf-8")
    for name in ALIAS_FILES:
        shutil.copy(real / name, folder / name)
    return data


def n_objects(data: Records) -> int:
    return sum(len(r.get("objects", [])) for r in data["objects.json"])


def only(rejected: list, file: str):
    found = [r for r in rejected if r.file == file]
    assert len(found) == 1, found
    return found[0]


def test_truncated_objects_keeps_complete_records(real_vg_sample: Path, tmp_path: Path) -> None:
    data = build(real_vg_sample, tmp_path)
    text = json.dumps(data["objects.json"])
    complete = json.dumps(data["objects.json"][:3])[:-1]  # "[rec1, rec2, rec3"
    cut = len(complete) + 40  # 40 characters into record 4
    (tmp_path / "objects.json").write_text(text[:cut], encoding="utf-8")
    result = read_visual_genome(tmp_path)
    rejection = only(result.rejected, "objects.json")
    assert rejection.line == 4
    assert "truncated JSON" in rejection.reason
    assert len(result.objects) == sum(len(r["objects"]) for r in data["objects.json"][:3])
    assert len(result.relationships) == sum(len(r["relationships"]) for r in data["relationships.json"])


def test_invalid_json_in_the_middle(real_vg_sample: Path, tmp_path: Path) -> None:
    data = build(real_vg_sample, tmp_path)
    parts = [json.dumps(r) for r in data["objects.json"]]
    parts[2] = parts[2].replace('"objects":', '"objects" ', 1)  # record 3 loses a colon
    (tmp_path / "objects.json").write_text("[" + ", ".join(parts) + "]", encoding="utf-8")
    result = read_visual_genome(tmp_path)
    rejection = only(result.rejected, "objects.json")
    assert (rejection.line, rejection.field) == (3, "(record)")
    assert rejection.reason.startswith("invalid JSON")
    assert len(result.objects) == sum(len(r["objects"]) for r in data["objects.json"][:2])


def test_box_entirely_outside_the_image(real_vg_sample: Path, tmp_path: Path) -> None:
    def edit(data: Records) -> None:
        width = data["image_data.json"][1]["width"]
        data["objects.json"][1]["objects"][4]["x"] = width + 10

    data = build(real_vg_sample, tmp_path, edit)
    result = read_visual_genome(tmp_path)
    rejection = only(result.rejected, "objects.json")
    assert (rejection.line, rejection.field) == (2, "objects[4]")
    assert "entirely outside" in rejection.reason
    assert len(result.objects) == n_objects(data) - 1


def test_text_in_a_number_field(real_vg_sample: Path, tmp_path: Path) -> None:
    def edit(data: Records) -> None:
        data["objects.json"][2]["objects"][0]["x"] = "abc"
        data["relationships.json"][3]["relationships"][1]["subject"]["w"] = "wide"

    data = build(real_vg_sample, tmp_path, edit)
    result = read_visual_genome(tmp_path)
    rejection = only(result.rejected, "objects.json")
    assert (rejection.line, rejection.field) == (3, "objects[0].x")
    assert rejection.reason == "not a number: abc"
    rel = only(result.rejected, "relationships.json")
    assert (rel.line, rel.field, rel.reason) == (4, "relationships[1].subject.w", "not a number: wide")
    assert len(result.objects) == n_objects(data) - 1
    assert len(result.relationships) == sum(len(r["relationships"]) for r in data["relationships.json"]) - 1


def test_merged_object_ids_of_any_shape_mark_v1_4(real_vg_sample: Path, tmp_path: Path) -> None:
    # Only the key's presence matters; a value that is not an id list must not cost a row.
    def edit(data: Records) -> None:
        for record in data["objects.json"]:
            for obj in record["objects"]:
                obj.pop("merged_object_ids", None)
        data["objects.json"][4]["objects"][0]["merged_object_ids"] = "see 1058549"

    data = build(real_vg_sample, tmp_path, edit)
    result = read_visual_genome(tmp_path)
    assert result.rejected == []
    assert result.version == "1.4"
    assert len(result.objects) == n_objects(data)


def test_negative_size_and_empty_names(real_vg_sample: Path, tmp_path: Path) -> None:
    def edit(data: Records) -> None:
        data["objects.json"][0]["objects"][1]["h"] = -5
        data["objects.json"][0]["objects"][2]["names"] = ["  "]

    data = build(real_vg_sample, tmp_path, edit)
    result = read_visual_genome(tmp_path)
    rejected = {(r.line, r.field): r.reason for r in result.rejected}
    assert rejected[(1, "objects[1].h")].startswith("negative box size")
    assert rejected[(1, "objects[2].names")] == "empty names"
    assert len(result.objects) == n_objects(data) - 2


def test_unknown_top_level_shape(real_vg_sample: Path, tmp_path: Path) -> None:
    data = build(real_vg_sample, tmp_path)
    (tmp_path / "objects.json").write_text(json.dumps({"objects": data["objects.json"]}), encoding="utf-8")
    with pytest.raises(NotADatasetError, match=r"objects\.json holds a JSON object, not a list of records"):
        read_visual_genome(tmp_path)


def test_unknown_shape_of_relationships_is_one_rejection(real_vg_sample: Path, tmp_path: Path) -> None:
    data = build(real_vg_sample, tmp_path)
    (tmp_path / "relationships.json").write_text(json.dumps({"relationships": []}), encoding="utf-8")
    result = read_visual_genome(tmp_path)
    rejection = only(result.rejected, "relationships.json")
    assert "unknown top-level JSON shape" in rejection.reason
    assert len(result.relationships) == 0
    assert list(result.relationships.columns) == [c for c, _ in SCHEMAS["relationships"]]
    assert len(result.objects) == n_objects(data)


def test_list_of_other_records_is_not_a_dataset(real_vg_sample: Path, tmp_path: Path) -> None:
    data = build(real_vg_sample, tmp_path)
    (tmp_path / "objects.json").write_text(json.dumps(data["relationships.json"]), encoding="utf-8")
    with pytest.raises(NotADatasetError, match="has an 'objects' list"):
        read_visual_genome(tmp_path)


def test_objects_of_an_unknown_image(real_vg_sample: Path, tmp_path: Path) -> None:
    def edit(data: Records) -> None:
        data["objects.json"][3]["image_id"] = 987654321

    data = build(real_vg_sample, tmp_path, edit)
    result = read_visual_genome(tmp_path)
    rejection = only(result.rejected, "objects.json")
    assert (rejection.line, rejection.field) == (4, "image_id")
    assert "987654321 is not a valid image" in rejection.reason
    assert len(result.objects) == n_objects(data) - len(data["objects.json"][3]["objects"])


def test_record_missing_objects(real_vg_sample: Path, tmp_path: Path) -> None:
    def edit(data: Records) -> None:
        del data["objects.json"][4]["objects"]

    data = build(real_vg_sample, tmp_path, edit)
    result = read_visual_genome(tmp_path)
    rejection = only(result.rejected, "objects.json")
    assert (rejection.line, rejection.field, rejection.reason) == (5, "objects", "missing")
    assert len(result.objects) == n_objects(data)


def test_element_of_the_wrong_type(real_vg_sample: Path, tmp_path: Path) -> None:
    def edit(data: Records) -> None:
        data["objects.json"][1]["objects"][3] = "not an object"
        data["objects.json"][2]["objects"][1]["names"] = "dog"

    data = build(real_vg_sample, tmp_path, edit)
    result = read_visual_genome(tmp_path)
    rejected = {(r.line, r.field): r.reason for r in result.rejected}
    assert rejected == {(2, "objects[3]"): "not a JSON object: VARCHAR",
                        (3, "objects[1].names"): "not a list: VARCHAR"}
    assert len(result.objects) == n_objects(data) - 2


def test_repeated_record_found_across_small_batches(real_vg_sample: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows stream in batches of 5, so each record's objects span several batches: a record seen again
    in the next batch is not a repeat of itself, and a later record of the same image is."""
    from emo_pipeline.sources.visual_genome import streaming

    monkeypatch.setattr(streaming, "_BATCH_ROWS", 5)

    def edit(data: Records) -> None:
        data["objects.json"][5] = {**data["objects.json"][1], "image_id": data["objects.json"][1]["image_id"]}

    data = build(real_vg_sample, tmp_path, edit)
    assert all(len(r["objects"]) > 5 for r in data["objects.json"])  # every record spans batches
    result = read_visual_genome(tmp_path)
    first_id = data["objects.json"][1]["image_id"]
    assert [(r.file, r.line, r.field, r.reason) for r in result.rejected] == [
        ("objects.json", 6, "image_id", f"duplicate image_id {first_id} (first at record 2)")]
    assert len(result.objects) == n_objects(data) - len(data["objects.json"][5]["objects"])


def test_empty_object_list_is_no_problem(real_vg_sample: Path, tmp_path: Path) -> None:
    def edit(data: Records) -> None:
        data["objects.json"][0]["objects"] = []
        data["relationships.json"][0]["relationships"] = []

    data = build(real_vg_sample, tmp_path, edit)
    result = read_visual_genome(tmp_path)
    assert result.rejected == []
    assert len(result.objects) == n_objects(data)


def test_not_a_folder_or_missing_files(tmp_path: Path) -> None:
    with pytest.raises(NotADatasetError, match="is not a folder"):
        read_visual_genome(tmp_path / "absent")
    (tmp_path / "image_data.json").write_text("[]", encoding="utf-8")
    with pytest.raises(NotADatasetError, match="has no objects.json"):
        read_visual_genome(tmp_path)
    (tmp_path / "objects.json").write_text("[]", encoding="utf-8")
    with pytest.raises(NotADatasetError, match="no valid image record"):
        read_visual_genome(tmp_path)


def test_failed_ingest_leaves_no_output(real_vg_sample: Path, tmp_path: Path) -> None:
    folder = tmp_path / "vg"
    data = build(real_vg_sample, folder)
    (folder / "objects.json").write_text(json.dumps(data["relationships.json"]), encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(NotADatasetError):
        ingest_visual_genome(folder, {t: out / f"{t}.parquet" for t in VG_TABLES})
    assert not out.exists() or list(out.iterdir()) == []


def test_alias_file_quirks(real_vg_sample: Path, tmp_path: Path) -> None:
    build(real_vg_sample, tmp_path)
    (tmp_path / "object_alias.txt").write_text(
        "tree ,trees,  tree   is\n\nman,men\nguy,men\n", encoding="utf-8")
    result = read_visual_genome(tmp_path)
    assert "trees" not in set(result.objects["name"])
    rejection = only(result.rejected, "object_alias.txt")
    assert (rejection.line, rejection.field) == (4, "men")
    assert "already an alias of 'man'" in rejection.reason


def test_names_and_predicates_normalised(real_vg_sample: Path, tmp_path: Path) -> None:
    def edit(data: Records) -> None:
        data["objects.json"][0]["objects"][0]["names"] = ["  Street\t Light ", "LAMP"]
        data["relationships.json"][0]["relationships"][0]["predicate"] = " Next  To\n"
        data["relationships.json"][0]["relationships"][0]["subject"] = {
            **data["relationships.json"][0]["relationships"][0]["subject"], "name": "Trees "}

    build(real_vg_sample, tmp_path, edit)
    result = read_visual_genome(tmp_path)
    assert result.rejected == []
    first = result.objects.iloc[0]
    assert (first["name"], first["names"]) == ("street light", ["street light", "lamp"])
    rel = result.relationships.iloc[0]
    assert (rel.predicate, rel.subject_name) == ("near", "tree")
