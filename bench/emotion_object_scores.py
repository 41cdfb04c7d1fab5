"""Benchmark: the emotion -> objects score baseline at full dataset B size, DuckDB against pandas.

    python bench/emotion_object_scores.py [--workdir DIR] [--keep] [--repeats 5] [--sample 200000]

1. Makes synthetic dataset B tables once (reused while kept in the work folder): `dataset_b.parquet`
   (108,077 images, seeded Dirichlet distributions) and `dataset_b_objects.parquet` (about 3.8M object
   rows, negative-binomial counts per image with mean 35, Zipf-like names from 3,000 words, the image's
   distribution copied onto each row).
2. Times, in one run and `--repeats` times each: the project's `score_objects` over a view on
   the Parquet file; a vectorised pandas merge + groupby (reading the Parquet files included); a plain
   Python row loop over a random sample of rows, scaled linearly to the full row count.
3. Checks that the results agree, then prints median and min times, the ratios and the goals.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emo_pipeline.core.emotions import EMOTIONS
from emo_pipeline.objects.emotion_to_objects import score_objects, score_sql

IMAGES = 108_077
MEAN_OBJECTS = 35
VOCABULARY = 3_000
E = list(EMOTIONS)
COLUMNS = ["emotion", "object", "occurrences", "score", "final"]


def make_input(folder: Path, seed: int = 0) -> None:
    """Write both tables; row groups of 122,880 rows, as DuckDB's COPY writes the project's tables."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, IMAGES + 1, dtype=np.int64)
    dist = rng.dirichlet(np.full(len(E), 0.6), size=IMAGES)
    counts = rng.negative_binomial(4, 4 / (4 + MEAN_OBJECTS), size=IMAGES)
    rows = int(counts.sum())
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = pa.array([syllables[k // 70] + syllables[k % 70] for k in range(VOCABULARY)])  # unique below 4,900
    zipf = 1.0 / (np.arange(VOCABULARY) + 2.7)
    names = pc.take(words, rng.choice(VOCABULARY, size=rows, p=zipf / zipf.sum()).astype(np.int32))
    owner = np.repeat(np.arange(IMAGES), counts)
    boxes = {c: rng.integers(0, 500, size=rows, dtype=np.int32) for c in ("x", "y", "w", "h")}
    images = pa.table({"image_id": ids, **{e: dist[:, j] for j, e in enumerate(E)}})
    objects = pa.table({"image_id": ids[owner], "object_id": np.arange(1, rows + 1, dtype=np.int64),
                        "object": names, **boxes, **{e: dist[owner, j] for j, e in enumerate(E)}})
    for name, table in (("dataset_b_objects", objects), ("dataset_b", images)):
        # Written aside and renamed, so an interrupted run leaves no half file to be reused.
        pq.write_table(table, folder / f"{name}.tmp", row_group_size=122_880)
        os.replace(folder / f"{name}.tmp", folder / f"{name}.parquet")


def run_project(folder: Path) -> pd.DataFrame:
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"CREATE VIEW dataset_b_objects AS "
                    f"SELECT * FROM read_parquet('{folder / 'dataset_b_objects.parquet'}')")
        return score_objects(con, "b")
    finally:
        con.close()


def run_pandas(folder: Path, compute_times: list[float]) -> pd.DataFrame:
    # Names read as a dictionary become a categorical: the fast way to group by them in pandas.
    objects = pq.read_table(folder / "dataset_b_objects.parquet", columns=["image_id", "object"],
                            read_dictionary=["object"]).to_pandas()
    images = pd.read_parquet(folder / "dataset_b.parquet", columns=["image_id", *E])
    began = time.perf_counter()
    merged = objects.merge(images, on="image_id", how="inner")
    grouped = merged.groupby("object", observed=True)
    wide = grouped[E].sum()
    final = wide.sub(wide.mean(axis=1), axis=0)
    stats = pd.DataFrame({"occurrences": grouped.size()})
    long = (wide.rename_axis(columns="emotion").stack().rename("score").to_frame()
            .join(final.rename_axis(columns="emotion").stack().rename("final")).reset_index()
            .join(stats, on="object"))
    long["object"] = long["object"].astype(str)
    compute_times.append(time.perf_counter() - began)
    return long[COLUMNS]


def run_loop(rows: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Per-object sums by a Python loop; returns the result and the time of the row pass alone."""
    began = time.perf_counter()
    acc: dict[str, list] = {}
    for _image_id, name, *values in rows.itertuples(index=False, name=None):
        entry = acc.get(name)
        if entry is None:
            entry = acc[name] = [0, [0.0] * len(E)]
        entry[0] += 1
        sums = entry[1]
        for j, v in enumerate(values):
            sums[j] += v
    row_pass = time.perf_counter() - began
    out = []
    for name, (n, sums) in acc.items():
        mean = sum(sums) / len(sums)
        out.extend((e, name, n, s, s - mean) for e, s in zip(E, sums))
    return pd.DataFrame(out, columns=COLUMNS), row_pass


def check(label: str, got: pd.DataFrame, want: pd.DataFrame) -> None:
    both = want.merge(got, on=["emotion", "object"], how="outer", suffixes=("_want", "_got"), indicator=True)
    unmatched = int((both["_merge"] != "both").sum())
    if unmatched:
        raise SystemExit(f"MISMATCH {label}: {unmatched} (emotion, object) pairs in only one result")
    if not (both["occurrences_want"] == both["occurrences_got"]).all():
        raise SystemExit(f"MISMATCH {label}: column occurrences differs")
    for col in ("score", "final"):
        # final is a difference, so relative to the object's score scale rather than to itself.
        error = (both[f"{col}_got"] - both[f"{col}_want"]).abs() / both["score_want"].abs().clip(lower=1e-12)
        if error.max() > 1e-6:
            raise SystemExit(f"MISMATCH {label}: {col} relative error {error.max():.2e} > 1e-6")
    print(f"check {label}: {len(both):,} (emotion, object) rows agree")


def bench(folder: Path, repeats: int, sample_size: int) -> None:
    meta = pq.read_metadata(folder / "dataset_b_objects.parquet")
    rows, images = meta.num_rows, pq.read_metadata(folder / "dataset_b.parquet").num_rows
    with duckdb.connect(":memory:") as con:
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"cpus: {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), duckdb {duckdb.__version__} "
          f"threads {threads}, pandas {pd.__version__}")
    print(f"images: {images:,}  object rows: {rows:,}  row groups: {meta.num_row_groups}")

    table = pq.read_table(folder / "dataset_b_objects.parquet", columns=["image_id", "object", *E])
    picked = np.sort(np.random.default_rng(1).choice(rows, size=min(sample_size, rows), replace=False))
    sample = table.take(picked).to_pandas()
    del table

    times: dict[str, list[float]] = {"project": [], "pandas": [], "loop": []}
    compute: list[float] = []
    for _ in range(repeats):
        began = time.perf_counter()
        project = run_project(folder)
        times["project"].append(time.perf_counter() - began)
        began = time.perf_counter()
        frame = run_pandas(folder, compute)
        times["pandas"].append(time.perf_counter() - began)
        began = time.perf_counter()
        looped, row_pass = run_loop(sample)
        times["loop"].append(time.perf_counter() - began + row_pass * (rows / len(sample) - 1))

    check("pandas vs project", frame, project)
    con = duckdb.connect(":memory:")
    con.register("_sample", sample)
    check(f"loop vs project SQL on the {len(sample):,}-row sample", looped,
          con.execute(score_sql("_sample", "image_id")).fetchdf())
    con.close()

    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"\n{'method':<34}{'median s':>10}{'min s':>10}{'x project':>11}")
    labels = {"project": "project (duckdb, from parquet)", "pandas": "pandas merge+groupby (with read)",
              "loop": f"row loop (scaled from {len(sample):,})"}
    for key, label in labels.items():
        print(f"{label:<34}{med[key]:>10.3f}{min(times[key]):>10.3f}{med[key] / med['project']:>11.2f}")
    print(f"{'  pandas compute only (no read)':<34}{np.median(compute):>10.3f}{min(compute):>10.3f}")
    print("  (row loop: row pass scaled linearly to all rows; reading Parquet not counted)\n")
    pandas, loop = med["pandas"] / med["project"], med["loop"] / med["project"]
    for goal, ok in ((f"project under 1 s: {med['project']:.3f} s", med["project"] < 1),
                     (f"pandas / project >= 2x: {pandas:.2f}x", pandas >= 2),
                     (f"loop / project >= 15x: {loop:.2f}x", loop >= 15)):
        print(f"goal {goal:<40} {'met' if ok else 'NOT MET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="folder for the generated input (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder afterwards")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sample", type=int, default=200_000, help="rows for the row loop")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="emotion_object_scores_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if not all((workdir / f).is_file() for f in ("dataset_b.parquet", "dataset_b_objects.parquet")):
            began = time.perf_counter()
            make_input(workdir)
            print(f"made input in {workdir} in {time.perf_counter() - began:.1f} s")
        else:
            print(f"reusing input in {workdir}")
        bench(workdir, args.repeats, args.sample)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
