"""What a scene composer needs to know about objects, learned from datasets A and B in DuckDB.

- Co-occurrence: for each pair of objects, the images that hold both and their pointwise mutual
  information, PMI(a, b) = ln(P(a, b) / (P(a) P(b))) over the images with objects. Only the
  `vocabulary` objects found in the most images are paired, which bounds the self-join at Visual
  Genome's size (30 objects per image make about 450 pairs each).
- Relations (dataset B): how often each predicate links a subject to an object, and its share among
  that pair's predicates.
- Boxes (dataset B): a deterministic sample of each object's boxes, normalised to the image's size
  (x, y, w, h in [0, 1]), from which the layout draws.

Each function can be restricted to a set of images (`keys`), so that a composer and the model that
judges it can learn from disjoint halves.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pandas as pd

from emo_pipeline.objects.emotion_to_objects import OBJECT_TABLES


def _objects_relation(con: duckdb.DuckDBPyConnection, dataset: str, keys: Sequence | None) -> tuple[str, str]:
    """(relation, key column) of a data set's object rows, restricted to `keys` when given."""
    table, key = OBJECT_TABLES[dataset]
    if keys is None:
        return table, key
    con.register("_scene_keys", pd.DataFrame({key: list(keys)}))
    return f"(SELECT * FROM {table} WHERE {key} IN (SELECT {key} FROM _scene_keys))", key


def cooccurrence(con: duckdb.DuckDBPyConnection, dataset: str, vocabulary: int = 1000,
                 keys: Sequence | None = None) -> pd.DataFrame:
    """object_a < object_b, together (images with both), images_a, images_b, pmi."""
    objects, key = _objects_relation(con, dataset, keys)
    return con.execute(f"""
        WITH present AS (SELECT DISTINCT {key} AS key, object FROM {objects} WHERE object IS NOT NULL),
        total AS (SELECT count(DISTINCT key) AS images FROM present),
        single AS (SELECT object, count(*) AS images FROM present GROUP BY object),
        top AS (SELECT object FROM single ORDER BY images DESC, object LIMIT {int(vocabulary)}),
        kept AS (SELECT * FROM present WHERE object IN (SELECT object FROM top)),
        pairs AS (SELECT a.object AS object_a, b.object AS object_b, count(*) AS together
                  FROM kept a JOIN kept b ON a.key = b.key AND a.object < b.object GROUP BY ALL)
        SELECT p.object_a, p.object_b, p.together, sa.images AS images_a, sb.images AS images_b,
               ln(p.together * t.images / (sa.images * sb.images)) AS pmi
        FROM pairs p JOIN single sa ON sa.object = p.object_a JOIN single sb ON sb.object = p.object_b, total t
        ORDER BY p.object_a, p.object_b""").fetchdf()


def relations(con: duckdb.DuckDBPyConnection, keys: Sequence | None = None) -> pd.DataFrame:
    """subject, object, predicate, relationships, share (of that subject-object pair's relationships)."""
    where = ""
    if keys is not None:
        con.register("_scene_keys", pd.DataFrame({"image_id": list(keys)}))
        where = "WHERE image_id IN (SELECT image_id FROM _scene_keys)"
    return con.execute(f"""
        SELECT subject, object, predicate, count(*) AS relationships,
               count(*) / sum(count(*)) OVER (PARTITION BY subject, object) AS share
        FROM dataset_b_relationships {where}
        GROUP BY subject, object, predicate ORDER BY subject, object, relationships DESC, predicate""").fetchdf()


def box_samples(con: duckdb.DuckDBPyConnection, per_object: int = 200) -> pd.DataFrame:
    """object, x, y, w, h: up to `per_object` boxes of each object, normalised to its image's size.

    The sample is the same on every run (ordered by a hash of the ids), so layouts are reproducible.
    """
    return con.execute(f"""
        SELECT o.object, least(greatest(o.x / b.width, 0), 1) AS x, least(greatest(o.y / b.height, 0), 1) AS y,
               least(greatest(o.w / b.width, 0), 1) AS w, least(greatest(o.h / b.height, 0), 1) AS h
        FROM dataset_b_objects o JOIN dataset_b b USING (image_id)
        WHERE b.width > 0 AND b.height > 0 AND o.w > 0 AND o.h > 0
        QUALIFY row_number() OVER (PARTITION BY o.object ORDER BY hash(o.image_id, o.object_id)) <= {int(per_object)}
        ORDER BY o.object, o.image_id, o.object_id""").fetchdf()


def box_statistics(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per object over all its boxes in dataset B: count, mean and spread of the centre (fractions of the
    image), and the 10th / 50th / 90th percentiles of its area share and aspect ratio (w / h)."""
    return con.execute("""
        WITH boxes AS (
            SELECT o.object, (o.x + o.w / 2) / b.width AS cx, (o.y + o.h / 2) / b.height AS cy,
                   o.w * o.h / (b.width * b.height) AS area, o.w / o.h AS aspect
            FROM dataset_b_objects o JOIN dataset_b b USING (image_id)
            WHERE b.width > 0 AND b.height > 0 AND o.w > 0 AND o.h > 0)
        SELECT object, count(*) AS boxes, avg(cx) AS cx_mean, stddev_samp(cx) AS cx_std,
               avg(cy) AS cy_mean, stddev_samp(cy) AS cy_std,
               quantile_cont(area, 0.1) AS area_p10, median(area) AS area_median, quantile_cont(area, 0.9) AS area_p90,
               quantile_cont(aspect, 0.1) AS aspect_p10, median(aspect) AS aspect_median,
               quantile_cont(aspect, 0.9) AS aspect_p90
        FROM boxes GROUP BY object ORDER BY boxes DESC, object""").fetchdf()
