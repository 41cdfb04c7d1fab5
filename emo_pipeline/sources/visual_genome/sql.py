"""The DuckDB SQL of the Visual Genome reader: one query per table that unnests, checks and clips.

Each table's query yields one row per list element with `pos` (record position), `idx` / `sub`
(element indices), `problem` (NULL: keep the row; 0: stand-in row of a record with an empty list;
n > 0: the n-th check failed), `field` and `reason` for rejected rows, `list_present`, and the
output columns. A check is a triple of SQL (condition, field, reason); the first failing one wins.
"""

from __future__ import annotations

from pathlib import Path

from emo_pipeline.sources.visual_genome.schemas import IMAGE_FILE, MAX_OBJECT_BYTES, WS_CLASS

# Typed-reader declarations (the first of `streaming`'s three readers). Leaves the tables do not need
# are not declared, so DuckDB skips them. Only the presence of `merged_object_ids` matters (version);
# it is declared as the id list it is in v1.4, which converts faster than raw JSON (measured), and a
# file where it holds anything else goes to the lenient reader, which accepts any value.
_ENTITY_TYPE = {"object_id": "BIGINT", "x": "BIGINT", "y": "BIGINT", "w": "BIGINT", "h": "BIGINT",
                "name": "VARCHAR", "names": "VARCHAR[]"}
_RECORD_TYPES: dict[str, dict] = {
    "images": {"image_id": "BIGINT", "width": "BIGINT", "height": "BIGINT", "url": "VARCHAR",
               "coco_id": "BIGINT", "flickr_id": "BIGINT"},
    "objects": {"image_id": "BIGINT", "objects": [{
        "object_id": "BIGINT", "x": "BIGINT", "y": "BIGINT", "w": "BIGINT", "h": "BIGINT",
        "name": "VARCHAR", "names": "VARCHAR[]", "synsets": "VARCHAR[]", "merged_object_ids": "BIGINT[]"}]},
    "relationships": {"image_id": "BIGINT", "relationships": [{
        "relationship_id": "BIGINT", "predicate": "VARCHAR", "synsets": "VARCHAR[]",
        "subject": _ENTITY_TYPE, "object": _ENTITY_TYPE}]},
    "attributes": {"image_id": "BIGINT", "attributes": [{
        "object_id": "BIGINT", "name": "VARCHAR", "names": "VARCHAR[]", "attributes": "VARCHAR[]"}]},
}

Check = tuple[str, str, str]


def sql_str(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _duck_type(spec: object) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, list):
        return _duck_type(spec[0]) + "[]"
    return "STRUCT(" + ", ".join(f'"{k}" {_duck_type(v)}' for k, v in spec.items()) + ")"


class Fields:
    """SQL that reads one key of a JSON object, for the typed (fast) or the lenient (raw JSON) reader.

    Both give the same columns: numbers as read (BIGINT, or text checked with TRY_CAST), strings,
    string lists, element lists, and the JSON type of a value ('OBJECT', 'ARRAY', ...; NULL when
    missing). The typed reader fails on a type mismatch, so there a present value has the right type.
    """

    def __init__(self, typed: bool) -> None:
        self.typed = typed

    def record(self) -> str:
        return "r" if self.typed else "r.rec"

    def record_type(self) -> str:
        return "'OBJECT'" if self.typed else "json_type(r.rec)"

    def child(self, parent: str, key: str) -> str:
        return f'{parent}."{key}"' if self.typed else f"({parent}->'{key}')"

    def scalar(self, parent: str, key: str) -> str:
        return f'{parent}."{key}"' if self.typed else f"({parent}->>'{key}')"

    def strings(self, parent: str, key: str) -> str:
        return self._list(parent, key, "VARCHAR")

    def elements(self, parent: str, key: str) -> str:
        return self._list(parent, key, "JSON")

    def _list(self, parent: str, key: str, item: str) -> str:
        if self.typed:
            return f'{parent}."{key}"'
        ref = f"({parent}->'{key}')"
        return f"CASE WHEN json_type({ref}) = 'ARRAY' THEN from_json({ref}, '[\"{item}\"]') END"

    def type_of(self, parent: str, key: str, expected: str) -> str:
        if self.typed:
            return f"CASE WHEN {parent}.\"{key}\" IS NULL THEN NULL ELSE '{expected}' END"
        return f"json_type({parent}->'{key}')"

    def value_type(self, expr: str, expected: str) -> str:
        if self.typed:
            return f"CASE WHEN {expr} IS NULL THEN 'NULL' ELSE '{expected}' END"
        return f"json_type({expr})"


def source_sql(fields: Fields, table: str, path: Path, fmt: str) -> str:
    """FROM clause yielding `r.pos` (1-based record position) and the record's keys."""
    common = f"format='{fmt}', maximum_object_size={MAX_OBJECT_BYTES}"
    if fields.typed:
        spec = _RECORD_TYPES[table]
        columns = "{" + ", ".join(f"'{k}': '{_duck_type(v)}'" for k, v in spec.items()) + "}"
        names = ", ".join(f'"{k}"' for k in spec)
        return f"read_json({sql_str(path)}, {common}, columns={columns}) WITH ORDINALITY AS r({names}, pos)"
    return (f"read_json({sql_str(path)}, {common}, records=false, columns={{'rec': 'JSON'}}) "
            "WITH ORDINALITY AS r(rec, pos)")


def _problem_number(checks: list[Check], start: int = 1, before: str = "") -> str:
    """CASE giving `start + i` for the first failing check i (NULL if none); `before` adds leading WHENs."""
    whens = " ".join(f"WHEN {cond} THEN {start + i}" for i, (cond, _, _) in enumerate(checks))
    return f"CASE {before} {whens} END"


def _problem_text(checks: list[Check]) -> tuple[str, str]:
    """CASEs on `problem` giving the field and the reason of check number `problem`."""
    # The outer CASE keeps the long inner one off the (many) rows that have no problem.
    field = "CASE problem " + " ".join(f"WHEN {i} THEN {f}" for i, (_, f, _) in enumerate(checks, 1)) + " END"
    reason = "CASE problem " + " ".join(f"WHEN {i} THEN {r}" for i, (_, _, r) in enumerate(checks, 1)) + " END"
    return f"CASE WHEN problem > 0 THEN {field} END", f"CASE WHEN problem > 0 THEN {reason} END"


def _missing(type_expr: str) -> str:
    return f"({type_expr} IS NULL OR {type_expr} = 'NULL')"


def _number_checks(fields: Fields, raw: str, field: str, cast: str = "BIGINT") -> list[Check]:
    checks = [(f"{raw} IS NULL", field, "'missing'")]
    if not fields.typed:  # the typed reader has already refused anything that is not a number
        checks.append((f"TRY_CAST({raw} AS DOUBLE) IS NULL", field, f"'not a number: ' || {raw}"))
    if not fields.typed or cast != "BIGINT":
        checks.append((f"TRY_CAST({raw} AS {cast}) IS NULL", field, f"'number out of range: ' || {raw}"))
    return checks


def _or_empty(expr: str) -> str:
    """A string list, or [] where it is NULL. Not `coalesce(expr, [])`: that copies every list (measured:
    a tenth of the objects query); a CASE whose rows all take one branch passes its lists through."""
    return f"CASE WHEN {expr} IS NULL THEN []::VARCHAR[] ELSE {expr} END"


def _norm(expr: str) -> str:
    """Lower-case, strip, collapse whitespace runs to one space (as `aliases._normalise` does in Python).

    Nearly every string is already words separated by single spaces (no tab, newline, CR, FF or VT:
    the range \\t-\\r): one anchored match tells so and such a string is only lower-cased. The
    replacement runs on the rest (measured: the anchored match costs a third less than searching
    for the first bad character).
    """
    clean = f"regexp_full_match({expr}, '[^ \\t-\\r]+( [^ \\t-\\r]+)*')"
    return (f"CASE WHEN {clean} THEN lower({expr}) "
            f"ELSE lower(trim(regexp_replace({expr}, '{WS_CLASS}+', ' ', 'g'))) END")


def _norm_list(expr: str) -> str:
    return f"list_filter(list_transform({expr}, lambda n: {_norm('n')}), lambda n: n <> '')"


def _box_ints(p: str) -> str:
    return ", ".join(f"TRY_CAST({p}{c}_raw AS INTEGER)::BIGINT AS {p}{c}_int" for c in "xywh")


def _box_clip(p: str) -> str:
    """Clipped corners `{p}x0, {p}y0` (inclusive) and `{p}x1, {p}y1` (exclusive) inside the image."""
    return (f"greatest({p}x_int, 0) AS {p}x0, greatest({p}y_int, 0) AS {p}y0, "
            f"least({p}x_int + {p}w_int, img_w) AS {p}x1, least({p}y_int + {p}h_int, img_h) AS {p}y1")


def _box_checks(fields: Fields, p: str, at: str) -> list[Check]:
    """Checks on the box `{p}x_raw`...; `at` is the SQL of the element's path, e.g. 'objects[3]'."""
    checks: list[Check] = []
    for c in "xywh":
        checks += _number_checks(fields, f"{p}{c}_raw", f"{at} || '.{c}'", "INTEGER")
    w, h = f"{p}w_int", f"{p}h_int"
    box = f"'x=' || {p}x_int || ' y=' || {p}y_int || ' w=' || {w} || ' h=' || {h}"
    checks += [
        (f"{w} < 0 OR {h} < 0", f"{at} || CASE WHEN {w} < 0 THEN '.w' ELSE '.h' END",
         f"'negative box size: ' || {box}"),
        (f"{w} = 0 OR {h} = 0", f"{at} || CASE WHEN {w} = 0 THEN '.w' ELSE '.h' END",
         f"'empty box (zero width or height): ' || {box}"),
        (f"{p}x1 <= {p}x0 OR {p}y1 <= {p}y0", at,
         f"'box entirely outside the ' || img_w || 'x' || img_h || ' image: ' || {box}"),
    ]
    return checks


def _box_out(p: str, out: str) -> str:
    return f"{p}x0 AS {out}x, {p}y0 AS {out}y, {p}x1 - {p}x0 AS {out}w, {p}y1 - {p}y0 AS {out}h"


def _record_checks(fields: Fields, list_key: str) -> list[Check]:
    return [
        ("rec_type <> 'OBJECT'", "'(record)'", "'not a JSON object: ' || rec_type"),
        *_number_checks(fields, "image_id_raw", "'image_id'"),
        ("image_id IS NULL", "'image_id'", f"'image_id ' || image_id_raw || ' is not a valid image of {IMAGE_FILE}'"),
        (_missing("list_type"), f"'{list_key}'", "'missing'"),
        ("list_type <> 'ARRAY'", f"'{list_key}'", "'not a list: ' || list_type"),
    ]


def _record_stage(fields: Fields, source: str, list_key: str) -> str:
    """CTEs `rec` (one row per record, with `rec_problem`) and `item` (one row per list element, `o`).

    A rejected record, or one with an empty list, yields one `item` row (element NULL, `stand_in`),
    so it is rejected once rather than once per element, and every record is seen.
    """
    rec = fields.record()
    return f"""
    src AS (
        SELECT r.pos AS pos, {fields.record_type()} AS rec_type, {fields.scalar(rec, 'image_id')} AS image_id_raw,
               {fields.type_of(rec, list_key, 'ARRAY')} AS list_type, {fields.elements(rec, list_key)} AS items
        FROM {source}
    ),
    rec AS (
        SELECT *, {_problem_number(_record_checks(fields, list_key))} AS rec_problem
        FROM (SELECT src.*, d.image_id, d.width AS img_w, d.height AS img_h,
                     NOT {_missing('list_type')} AS list_present
              FROM src LEFT JOIN dims d ON d.image_id = TRY_CAST(src.image_id_raw AS BIGINT))
    ),
    item AS (
        SELECT pos, rec_type, image_id_raw, list_type, image_id, img_w, img_h, list_present, rec_problem,
               stand_in, generate_subscripts(lst, 1) - 1 AS idx, unnest(lst) AS o
        FROM (SELECT *, rec_problem IS NOT NULL OR coalesce(len(items), 0) = 0 AS stand_in,
                     CASE WHEN rec_problem IS NULL AND len(items) > 0 THEN items ELSE [NULL] END AS lst
              FROM rec)
    )"""


def _item_problem(record_checks: list[Check], item_checks: list[Check]) -> str:
    """Problem number of an element: its record's, else 0 for a stand-in row, else its first failing check."""
    return _problem_number(item_checks, start=len(record_checks) + 1,
                           before="WHEN rec_problem IS NOT NULL THEN rec_problem WHEN stand_in THEN 0")


def _images_sql(fields: Fields, source: str) -> str:
    rec = fields.record()
    raw = {k: fields.scalar(rec, k) for k in ("image_id", "width", "height", "url", "coco_id", "flickr_id")}
    checks = [
        ("rec_type <> 'OBJECT'", "'(record)'", "'not a JSON object: ' || rec_type"),
        *_number_checks(fields, "image_id_raw", "'image_id'"),
        ("dup > 1", "'image_id'", "'duplicate image_id ' || image_id || ' (first at record ' || first_pos || ')'"),
        *_number_checks(fields, "width_raw", "'width'", "INTEGER"),
        ("width <= 0", "'width'", "'not a positive size: ' || width_raw"),
        *_number_checks(fields, "height_raw", "'height'", "INTEGER"),
        ("height <= 0", "'height'", "'not a positive size: ' || height_raw"),
        ("url IS NULL", "'url'", "'missing'"),
        ("folder = ''", "'url'", "'names neither VG_100K/ nor VG_100K_2/: ' || url"),
        ("coco_id_raw IS NOT NULL AND coco_id IS NULL", "'coco_id'", "'not a number: ' || coco_id_raw"),
        ("flickr_id_raw IS NOT NULL AND flickr_id IS NULL", "'flickr_id'", "'not a number: ' || flickr_id_raw"),
    ]
    field, reason = _problem_text(checks)
    return f"""
    WITH src AS (
        SELECT r.pos AS pos, {fields.record_type()} AS rec_type,
               {raw['image_id']} AS image_id_raw, {raw['width']} AS width_raw, {raw['height']} AS height_raw,
               {raw['url']} AS url, {raw['coco_id']} AS coco_id_raw, {raw['flickr_id']} AS flickr_id_raw
        FROM {source}
    ),
    parsed AS (
        SELECT *, TRY_CAST(image_id_raw AS BIGINT) AS image_id,
               TRY_CAST(width_raw AS INTEGER) AS width, TRY_CAST(height_raw AS INTEGER) AS height,
               regexp_extract(url, '(VG_100K(_2)?)/[^/]+$', 1) AS folder,
               regexp_extract(url, '[^/]+$') AS file_name,
               TRY_CAST(coco_id_raw AS BIGINT) AS coco_id, TRY_CAST(flickr_id_raw AS BIGINT) AS flickr_id
        FROM src
    ),
    numbered AS (
        SELECT *, {_problem_number(checks)} AS problem
        FROM (SELECT *, CASE WHEN image_id IS NULL THEN 1
                             ELSE row_number() OVER (PARTITION BY image_id ORDER BY pos) END AS dup,
                        min(pos) OVER (PARTITION BY image_id) AS first_pos
              FROM parsed)
    )
    SELECT pos, 0 AS idx, 0 AS sub, problem, {field} AS field, {reason} AS reason, TRUE AS list_present,
           image_id, width, height, url, folder, folder || '/' || file_name AS image_path, coco_id, flickr_id
    FROM numbered ORDER BY pos"""


def _name_checks(at: str, prefix: str = "", empty: str = "len(names) = 0") -> list[Check]:
    """Checks on `{prefix}names_raw` / `{prefix}name_raw`; `empty` tests the normalised result."""
    p = prefix
    return [
        (f"{p}names_raw IS NULL AND {p}names_type IS NOT NULL AND {p}names_type <> 'NULL'", f"{at} || '.names'",
         f"'not a list: ' || {p}names_type"),
        (f"{p}names_raw IS NULL AND {p}name_raw IS NULL", f"{at} || '.names'", "'missing (neither names nor name)'"),
        (empty, f"{at} || '.names'", "'empty names'"),
    ]


def _first_name_sql(p: str = "") -> str:
    """`{p}name1`: the first entry of `names` (or the string `name`), normalised."""
    return f"{_norm(f'coalesce({p}names_raw[1], {p}name_raw)')} AS {p}name1"


def _names_sql(p: str = "") -> str:
    """`{p}names`: all names (`names`, else [`name`]), normalised, blanks dropped; needs `{p}name1`.

    Nearly every object has exactly one name: that case skips the per-element lambda, and when that
    name is already normalised the list read is passed on rather than built again.
    """
    one = f"CASE WHEN {p}name1 = '' THEN [] ELSE [{p}name1] END"
    return (f"CASE WHEN {p}names_raw IS NULL AND {p}name_raw IS NULL THEN NULL "
            f"WHEN len({p}names_raw) = 1 AND {p}names_raw[1] = {p}name1 AND {p}name1 <> '' THEN {p}names_raw "
            f"WHEN {p}names_raw IS NULL OR len({p}names_raw) = 1 THEN {one} "
            f"ELSE {_norm_list(f'{p}names_raw')} END AS {p}names")


def _entity_name_sql(p: str) -> str:
    """`{p}name`: the first non-blank of `name` / `names`, normalised (relationships keep no list)."""
    return (f"coalesce(nullif({_norm(f'{p}name_raw')}, ''), nullif({_norm(f'{p}names_raw[1]')}, ''), "
            f"{_norm_list(f'{p}names_raw')}[1]) AS {p}name")


def _objects_sql(fields: Fields, source: str) -> str:
    f = fields
    at = "'objects[' || idx || ']'"
    record_checks = _record_checks(f, "objects")
    item_checks = [
        ("item_type <> 'OBJECT'", at, "'not a JSON object: ' || item_type"),
        *_number_checks(f, "object_id_raw", f"{at} || '.object_id'"),
        *_box_checks(f, "", at),
        *_name_checks(at),
    ]
    field, reason = _problem_text(record_checks + item_checks)
    return f"""
    WITH {_record_stage(f, source, 'objects')},
    flat AS (
        SELECT pos, idx, rec_type, image_id_raw, list_type, image_id, img_w, img_h, list_present,
               rec_problem, stand_in,
               {f.value_type('o', 'OBJECT')} AS item_type,
               {f.scalar('o', 'object_id')} AS object_id_raw,
               {f.scalar('o', 'x')} AS x_raw, {f.scalar('o', 'y')} AS y_raw,
               {f.scalar('o', 'w')} AS w_raw, {f.scalar('o', 'h')} AS h_raw,
               {f.strings('o', 'names')} AS names_raw, {f.type_of('o', 'names', 'ARRAY')} AS names_type,
               {f.scalar('o', 'name')} AS name_raw,
               {f.strings('o', 'synsets')} AS synsets,
               {f.type_of('o', 'merged_object_ids', 'ARRAY')} IS NOT NULL AS merged
        FROM item
    ),
    named AS (SELECT *, {_first_name_sql()}, {_box_ints('')} FROM flat),
    normed AS (SELECT *, {_names_sql()}, {_box_clip('')} FROM named),
    numbered AS (SELECT *, {_item_problem(record_checks, item_checks)} AS problem FROM normed)
    SELECT pos, idx, 0 AS sub, problem, {field} AS field, {reason} AS reason, list_present, merged,
           image_id, TRY_CAST(object_id_raw AS BIGINT) AS object_id,
           coalesce(alias.canonical, names[1]) AS name, names, {_or_empty('synsets')} AS synsets,
           {_box_out('', '')},
           (x0 <> x_int OR y0 <> y_int OR x1 <> x_int + w_int OR y1 <> y_int + h_int) AS clipped
    FROM numbered LEFT JOIN object_alias alias ON alias.alias = names[1]"""


def _entity_sql(fields: Fields, side: str) -> str:
    """Raw columns of a relationship's subject/object: `{side}_type`, `{side}_x_raw`, `{side}_name_raw`..."""
    f, e = fields, fields.child("o", side)
    return ", ".join([
        f"{f.type_of('o', side, 'OBJECT')} AS {side}_type",
        f"{f.scalar(e, 'object_id')} AS {side}_id_raw",
        *(f"{f.scalar(e, c)} AS {side}_{c}_raw" for c in "xywh"),
        f"{f.scalar(e, 'name')} AS {side}_name_raw",
        f"{f.strings(e, 'names')} AS {side}_names_raw",
        f"{f.type_of(e, 'names', 'ARRAY')} AS {side}_names_type",
    ])


def _entity_checks(fields: Fields, side: str, at: str) -> list[Check]:
    here = f"{at} || '.{side}'"
    return [
        (_missing(f"{side}_type"), here, "'missing'"),
        (f"{side}_type <> 'OBJECT'", here, f"'not a JSON object: ' || {side}_type"),
        *_number_checks(fields, f"{side}_id_raw", f"{here} || '.object_id'"),
        *_name_checks(here, f"{side}_", empty=f"{side}_name IS NULL"),
        *_box_checks(fields, f"{side}_", here),
    ]


def _relationships_sql(fields: Fields, source: str) -> str:
    f = fields
    at = "'relationships[' || idx || ']'"
    record_checks = _record_checks(f, "relationships")
    item_checks = [
        ("item_type <> 'OBJECT'", at, "'not a JSON object: ' || item_type"),
        *_number_checks(f, "relationship_id_raw", f"{at} || '.relationship_id'"),
        ("predicate_raw IS NULL", f"{at} || '.predicate'", "'missing'"),
        ("predicate_norm = ''", f"{at} || '.predicate'", "'empty predicate'"),
        *_entity_checks(f, "subject", at),
        *_entity_checks(f, "object", at),
    ]
    field, reason = _problem_text(record_checks + item_checks)
    return f"""
    WITH {_record_stage(f, source, 'relationships')},
    flat AS (
        SELECT pos, idx, rec_type, image_id_raw, list_type, image_id, img_w, img_h, list_present,
               rec_problem, stand_in,
               {f.value_type('o', 'OBJECT')} AS item_type,
               {f.scalar('o', 'relationship_id')} AS relationship_id_raw,
               {f.scalar('o', 'predicate')} AS predicate_raw,
               {f.strings('o', 'synsets')} AS synsets,
               {_entity_sql(f, 'subject')}, {_entity_sql(f, 'object')}
        FROM item
    ),
    normed AS (
        SELECT *, {_norm('predicate_raw')} AS predicate_norm, {_entity_name_sql('subject_')},
               {_entity_name_sql('object_')},
               {_box_ints('subject_')}, {_box_ints('object_')}
        FROM flat
    ),
    clipped AS (SELECT *, {_box_clip('subject_')}, {_box_clip('object_')} FROM normed),
    numbered AS (SELECT *, {_item_problem(record_checks, item_checks)} AS problem FROM clipped)
    SELECT pos, idx, 0 AS sub, problem, {field} AS field, {reason} AS reason, list_present,
           image_id, TRY_CAST(relationship_id_raw AS BIGINT) AS relationship_id,
           coalesce(pa.canonical, predicate_norm) AS predicate, {_or_empty('synsets')} AS synsets,
           TRY_CAST(subject_id_raw AS BIGINT) AS subject_id,
           coalesce(sa.canonical, subject_name) AS subject_name, {_box_out('subject_', 'subject_')},
           TRY_CAST(object_id_raw AS BIGINT) AS object_id,
           coalesce(oa.canonical, object_name) AS object_name, {_box_out('object_', 'object_')}
    FROM numbered
    LEFT JOIN relationship_alias pa ON pa.alias = predicate_norm
    LEFT JOIN object_alias sa ON sa.alias = subject_name
    LEFT JOIN object_alias oa ON oa.alias = object_name"""


def _attributes_sql(fields: Fields, source: str) -> str:
    f = fields
    at = "'attributes[' || idx || ']'"
    record_checks = _record_checks(f, "attributes")
    object_checks = [
        ("item_type <> 'OBJECT'", at, "'not a JSON object: ' || item_type"),
        *_number_checks(f, "object_id_raw", f"{at} || '.object_id'"),
        *_name_checks(at),
        ("attributes_raw IS NULL AND attributes_type IS NOT NULL AND attributes_type <> 'NULL'",
         f"{at} || '.attributes'", "'not a list: ' || attributes_type"),
    ]
    empty_attribute = [("attribute IS NULL OR attribute = ''", f"{at} || '.attributes[' || sub || ']'",
                        "'empty attribute'")]
    checks = record_checks + object_checks + empty_attribute
    field, reason = _problem_text(checks)
    return f"""
    WITH {_record_stage(f, source, 'attributes')},
    flat AS (
        SELECT pos, idx, rec_type, image_id_raw, list_type, image_id, list_present, rec_problem, stand_in,
               {f.value_type('o', 'OBJECT')} AS item_type,
               {f.scalar('o', 'object_id')} AS object_id_raw,
               {f.strings('o', 'names')} AS names_raw, {f.type_of('o', 'names', 'ARRAY')} AS names_type,
               {f.scalar('o', 'name')} AS name_raw,
               {f.strings('o', 'attributes')} AS attributes_raw,
               {f.type_of('o', 'attributes', 'ARRAY')} AS attributes_type
        FROM item
    ),
    checked AS (
        SELECT *, {_item_problem(record_checks, object_checks)} AS object_problem
        FROM (SELECT *, {_names_sql()} FROM (SELECT *, {_first_name_sql()} FROM flat))
    ),
    pairs AS (
        -- an object without attributes gives no row; a rejected object gives one row carrying its problem
        SELECT * EXCLUDE (lst, attributes_raw), generate_subscripts(lst, 1) - 1 AS sub, unnest(lst) AS attribute_raw
        FROM (SELECT *, CASE WHEN object_problem IS NOT NULL THEN [NULL]
                             ELSE {_or_empty('attributes_raw')} END AS lst
              FROM checked)
    ),
    numbered AS (
        SELECT *, coalesce(object_problem, {_problem_number(empty_attribute, start=len(checks))}) AS problem
        FROM (SELECT *, {_norm('attribute_raw')} AS attribute FROM pairs)
    )
    SELECT pos, idx, sub, problem, {field} AS field, {reason} AS reason, list_present,
           image_id, TRY_CAST(object_id_raw AS BIGINT) AS object_id,
           coalesce(alias.canonical, names[1]) AS name, attribute
    FROM numbered LEFT JOIN object_alias alias ON alias.alias = names[1]"""


QUERIES = {
    "images": _images_sql,
    "objects": _objects_sql,
    "relationships": _relationships_sql,
    "attributes": _attributes_sql,
}
