"""Benchmark: Visual Genome ingest at full size, the reader against an earlier revision of it, json.load and
DuckDB's parse alone.

    python bench/vg_ingest.py [--workdir DIR] [--keep] [--source synthetic|sample] [--cores 2]
                              [--repeats 3] [--baseline-ref 029a701] [--only current ref json floor]

1. Makes full-size VG annotation files once (reused while they are kept in the work folder):
   - `synthetic` (default): the synthetic world's Visual Genome at scale "vg-full" without pictures
     (108,077 images, about 3.8M objects and 2.3M relationships);
   - `sample`: the 100 real records of the shared sample repeated with fresh image/object ids up to
     108,077 images (real-shaped records: both `name` and `names` subjects, mixed-case predicates,
     boxes past the border, the real alias files).
2. Ingests them three ways and parses them a fourth, each in its own child process pinned to `--cores` CPUs:
   - `current`: `ingest_visual_genome` of this working tree;
   - `ref`: `ingest_visual_genome` as of the git revision `--baseline-ref`, whose `emo_pipeline` is
     extracted with `git archive` into a temporary folder and put first on the child's PYTHONPATH
     (the child checks that it imported that copy);
   - `json`: a plain baseline that `json.load`s each file and loops in Python to write the same
     tables to Parquet;
   - `floor`: DuckDB's typed JSON read alone, with the reader's own column declarations and the
     files side by side as the reader reads them, but no checks, no SQL and no writing: the least
     any reader with DuckDB as its JSON parser can take on this machine.
   The parent reads each child's wall time, CPU time and peak RSS (`os.wait4`, i.e. getrusage of
   that child), runs the rounds `--repeats` times (the methods interleaved, so a busy machine slows
   all alike), prints the median of each figure, the load average beside every run, and the ratios
   to `current`.
3. Checks that `current` and `ref` wrote the same tables: per table, the rows of one missing from the
   other (DuckDB `EXCEPT ALL`, both ways) must be none.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

VG_FILES = ("image_data.json", "objects.json", "relationships.json", "attributes.json",
            "object_alias.txt", "relationship_alias.txt")
FULL_IMAGES = 108_077
COMPLETE = ".complete"  # written last, so a half-made data folder is made again


# ------------------------------------------------------------------------------------------------
# Full-size input


def make_synthetic(folder: Path) -> Path:
    from emo_pipeline.synthetic import write_world

    summary = write_world(folder, seed=0, scale="vg-full", images=False, progress=lambda line: print("  " + line))
    return summary.visual_genome


def make_from_sample(sample: Path, folder: Path, images: int = FULL_IMAGES) -> Path:
    """Repeat the sample's records with fresh ids, streaming each file out record by record."""
    vg = folder / "VG"
    vg.mkdir(parents=True, exist_ok=True)
    with open(sample / "image_data.json", encoding="utf-8") as handle:
        image_records = json.load(handle)
    # Object ids are unique per copy: copy k adds k * offset (the sample's ids stay below 10^7).
    offset = 10_000_000

    def image(record: dict, copy: int, image_id: int) -> dict:
        url = record["url"].rsplit("/", 1)[0] + f"/{image_id}.jpg"
        return {**record, "image_id": image_id, "url": url}

    def objects(record: dict, copy: int, image_id: int) -> dict:
        return {**record, "image_id": image_id, "image_url": "",
                "objects": [{**o, "object_id": o["object_id"] + copy * offset} for o in record["objects"]]}

    def entity(e: dict, copy: int) -> dict:
        return {**e, "object_id": e["object_id"] + copy * offset}

    def relationships(record: dict, copy: int, image_id: int) -> dict:
        rels = [{**r, "relationship_id": r["relationship_id"] + copy * offset,
                 "subject": entity(r["subject"], copy), "object": entity(r["object"], copy)}
                for r in record["relationships"]]
        return {"relationships": rels, "image_id": image_id}  # image_id after the list, as in the real file

    def attributes(record: dict, copy: int, image_id: int) -> dict:
        return {"image_id": image_id,
                "attributes": [{**o, "object_id": o["object_id"] + copy * offset} for o in record["attributes"]]}

    for name, rewrite in (("image_data.json", image), ("objects.json", objects),
                          ("relationships.json", relationships), ("attributes.json", attributes)):
        if name == "image_data.json":
            records = image_records
        else:
            with open(sample / name, encoding="utf-8") as handle:
                records = json.load(handle)
        with open(vg / name, "w", encoding="utf-8") as out:
            out.write("[")
            for i in range(images):
                if i:
                    out.write(", ")
                out.write(json.dumps(rewrite(records[i % len(records)], i // len(records), i + 1)))
            out.write("]")
        print(f"  {name}: {(vg / name).stat().st_size / 1e6:.0f} MB")
    for name in ("object_alias.txt", "relationship_alias.txt"):
        shutil.copyfile(sample / name, vg / name)
    return vg


def full_size_input(workdir: Path, source: str) -> Path:
    folder = workdir / source
    marker = folder / COMPLETE
    if marker.is_file():
        vg = Path(marker.read_text(encoding="utf-8").strip())
        print(f"reusing full-size input in {vg}")
        return vg
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"making full-size Visual Genome input ({source}) in {folder} ...")
    began = time.perf_counter()
    if source == "synthetic":
        vg = make_synthetic(folder)
    else:
        from emo_pipeline.core.home import PROJECT_ROOT

        shared = Path(os.environ.get("EMO_SHARED_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets"))
        sample = shared / "visual_genome_sample"
        if not (sample / "objects.json").is_file():
            sys.exit(f"the real Visual Genome sample is not at {sample} (set EMO_SHARED_DATASETS)")
        vg = make_from_sample(sample, folder)
    marker.write_text(str(vg), encoding="utf-8")
    print(f"  made in {time.perf_counter() - began:.0f} s")
    return vg


# ------------------------------------------------------------------------------------------------
# The two contenders (each runs in a child process)


def run_duckdb(root: Path, out: Path, threads: int, memory_limit: str) -> dict:
    import emo_pipeline
    from emo_pipeline.sources.visual_genome import VG_TABLES, ingest_visual_genome

    result = ingest_visual_genome(root, {t: out / f"{t}.parquet" for t in VG_TABLES},
                                  threads=threads, memory_limit=memory_limit)
    return {"counts": result.counts, "package": str(Path(emo_pipeline.__file__).resolve().parent)}


def run_floor(root: Path, threads: int, memory_limit: str) -> dict:
    """Each file's typed read (`sql.source_sql`, as the reader declares it) down to a count of its list
    entries: image_data.json first, then the others side by side as the reader schedules them."""
    import duckdb

    import emo_pipeline
    from emo_pipeline.sources.visual_genome import sql
    from emo_pipeline.sources.visual_genome.reader import read_side_by_side

    con = duckdb.connect(config={"threads": threads, "memory_limit": memory_limit})

    def entries(cursor: duckdb.DuckDBPyConnection, table: str, path: Path) -> int:
        source = sql.source_sql(sql.Fields(typed=True), table, path, "array")
        count = "count(*)" if table == "images" else f'sum(len(r."{table}"))'
        return int(cursor.sql(f"SELECT {count} FROM {source}").fetchall()[0][0] or 0)

    counts = {"images": entries(con, "images", root / "image_data.json")}
    jobs = {t: root / f"{t}.json" for t in ("objects", "relationships", "attributes") if (root / f"{t}.json").is_file()}
    counts.update(read_side_by_side(con, jobs, entries))
    con.close()
    return {"counts": counts, "package": str(Path(emo_pipeline.__file__).resolve().parent)}


_WS = re.compile(r"[ \t\n\r\f\v]+")


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip(" ").lower()


def _aliases(path: Path) -> dict[str, str]:
    mapping: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            entries = [e for e in (_norm(p) for p in line.split(",")) if e]
            for synonym in entries[1:]:
                if synonym != entries[0]:
                    mapping.setdefault(synonym, entries[0])
    resolved = {}
    for synonym, target in mapping.items():
        seen = {synonym}
        while target in mapping and target not in seen:
            seen.add(target)
            target = mapping[target]
        resolved[synonym] = target
    return resolved


def _clip(box: dict, width: int, height: int) -> tuple[int, int, int, int, bool] | None:
    x, y, w, h = int(box["x"]), int(box["y"]), int(box["w"]), int(box["h"])
    if w <= 0 or h <= 0:
        return None
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0, (x0, y0, x1, y1) != (x, y, x + w, y + h)


def run_baseline(root: Path, out: Path) -> dict[str, int]:
    """The straightforward way: json.load each file whole, loop in Python, write with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from emo_pipeline.sources.visual_genome import SCHEMAS

    types = {"BIGINT": pa.int64(), "INTEGER": pa.int32(), "VARCHAR": pa.string(),
             "VARCHAR[]": pa.list_(pa.string()), "BOOLEAN": pa.bool_()}
    counts: dict[str, int] = {}

    def write(table: str, columns: dict[str, list]) -> None:
        schema = pa.schema([(c, types[t]) for c, t in SCHEMAS[table]])
        pq.write_table(pa.table(columns, schema=schema), out / f"{table}.parquet", compression="zstd")
        counts[table] = len(next(iter(columns.values())))

    object_alias = _aliases(root / "object_alias.txt")
    predicate_alias = _aliases(root / "relationship_alias.txt")

    with open(root / "image_data.json", encoding="utf-8") as handle:
        images = json.load(handle)
    dims: dict[int, tuple[int, int]] = {}
    cols: dict[str, list] = {c: [] for c, _ in SCHEMAS["images"]}
    for rec in images:
        match = re.search(r"(VG_100K(?:_2)?)/([^/]+)$", rec.get("url") or "")
        if not match or rec["image_id"] in dims:
            continue
        dims[rec["image_id"]] = (rec["width"], rec["height"])
        for key in ("image_id", "width", "height", "url", "coco_id", "flickr_id"):
            cols[key].append(rec[key])
        cols["folder"].append(match.group(1))
        cols["image_path"].append(f"{match.group(1)}/{match.group(2)}")
    write("images", cols)
    del images

    with open(root / "objects.json", encoding="utf-8") as handle:
        records = json.load(handle)
    cols = {c: [] for c, _ in SCHEMAS["objects"]}
    for rec in records:
        if rec.get("image_id") not in dims:
            continue
        width, height = dims[rec["image_id"]]
        for obj in rec.get("objects", []):
            names = [n for n in (_norm(n) for n in obj["names"]) if n]
            box = _clip(obj, width, height)
            if not names or box is None:
                continue
            for key, value in (("image_id", rec["image_id"]), ("object_id", obj["object_id"]),
                               ("name", object_alias.get(names[0], names[0])), ("names", names),
                               ("synsets", obj.get("synsets", [])), ("x", box[0]), ("y", box[1]),
                               ("w", box[2]), ("h", box[3]), ("clipped", box[4])):
                cols[key].append(value)
    write("objects", cols)
    del records, cols

    with open(root / "relationships.json", encoding="utf-8") as handle:
        records = json.load(handle)
    cols = {c: [] for c, _ in SCHEMAS["relationships"]}
    for rec in records:
        if rec.get("image_id") not in dims:
            continue
        width, height = dims[rec["image_id"]]
        for rel in rec.get("relationships", []):
            row = {"image_id": rec["image_id"], "relationship_id": rel["relationship_id"],
                   "synsets": rel.get("synsets", [])}
            predicate = _norm(rel["predicate"])
            row["predicate"] = predicate_alias.get(predicate, predicate)
            for side in ("subject", "object"):
                entity = rel[side]
                name = _norm(entity["name"] if "name" in entity else entity["names"][0])
                box = _clip(entity, width, height)
                if not name or box is None:
                    break
                row[f"{side}_id"] = entity["object_id"]
                row[f"{side}_name"] = object_alias.get(name, name)
                for i, c in enumerate("xywh"):
                    row[f"{side}_{c}"] = box[i]
            else:
                for key, value in row.items():
                    cols[key].append(value)
    write("relationships", cols)
    del records, cols

    cols = {c: [] for c, _ in SCHEMAS["attributes"]}
    if (root / "attributes.json").is_file():
        with open(root / "attributes.json", encoding="utf-8") as handle:
            records = json.load(handle)
        for rec in records:
            if rec.get("image_id") not in dims:
                continue
            for obj in rec.get("attributes", []):
                names = [n for n in (_norm(n) for n in obj.get("names") or [obj.get("name", "")]) if n]
                if not names:
                    continue
                for attribute in obj.get("attributes") or []:
                    if _norm(attribute):
                        cols["image_id"].append(rec["image_id"])
                        cols["object_id"].append(obj["object_id"])
                        cols["name"].append(object_alias.get(names[0], names[0]))
                        cols["attribute"].append(_norm(attribute))
        del records
    write("attributes", cols)
    return counts


def child(args: argparse.Namespace) -> None:
    if args.cores and hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(available[: args.cores]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    if args.child == "json":
        report = {"counts": run_baseline(Path(args.root), out), "package": None}
    elif args.child == "floor":
        report = run_floor(Path(args.root), threads=args.cores, memory_limit=args.memory_limit)
    else:
        report = run_duckdb(Path(args.root), out, threads=args.cores, memory_limit=args.memory_limit)
    print(json.dumps({"seconds": time.perf_counter() - began, **report}))


# ------------------------------------------------------------------------------------------------
# The parent: run all, measure, compare, print

REPO = Path(__file__).resolve().parents[1]
METHODS = ("current", "ref", "json", "floor")


def extract_revision(ref: str, dest: Path) -> str:
    """`emo_pipeline` as of git revision `ref` into `dest`; returns the revision's short hash."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", f"{ref}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    archive = dest / "emo_pipeline.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), commit, "emo_pipeline"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()
    return commit


def measure(method: str, root: Path, out: Path, cores: int, memory_limit: str, ref_root: Path | None) -> dict:
    child_kind = method if method in ("json", "floor") else "duckdb"  # `ref` is `duckdb` from another tree
    command = [sys.executable, __file__, "--child", child_kind, "--root", str(root), "--out", str(out),
               "--cores", str(cores), "--memory-limit", memory_limit]
    env = dict(os.environ)
    if method == "ref":
        env["PYTHONPATH"] = os.pathsep.join([str(ref_root), *filter(None, [env.get("PYTHONPATH")])])
    load = os.getloadavg()[0]
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # the rusage of this child alone
    wall = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{method} failed with exit status {process.returncode}")
    report = json.loads(output.strip().splitlines()[-1])
    expected = {"current": REPO / "emo_pipeline", "floor": REPO / "emo_pipeline",
                "ref": (ref_root or Path()) / "emo_pipeline"}.get(method)
    if expected is not None and Path(report["package"]) != expected.resolve():
        sys.exit(f"{method} imported emo_pipeline from {report['package']}, not from {expected}")
    return {"method": method, "process_s": wall, "ingest_s": report["seconds"],
            "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "counts": report["counts"], "load": load}


def same_tables(a: Path, b: Path) -> dict[str, tuple[int, int]]:
    """Per table, (rows of a not in b, rows of b not in a), as multisets (DuckDB EXCEPT ALL)."""
    import duckdb

    from emo_pipeline.sources.visual_genome import VG_TABLES

    con = duckdb.connect(config={"memory_limit": "4GB", "preserve_insertion_order": False})
    differences = {}
    try:
        for table in VG_TABLES:
            x, y = (f"read_parquet('{folder / f'{table}.parquet'}')" for folder in (a, b))
            query = "SELECT count(*) FROM (SELECT * FROM {} EXCEPT ALL SELECT * FROM {})"
            differences[table] = tuple(con.execute(query.format(p, q)).fetchone()[0] for p, q in ((x, y), (y, x)))
    finally:
        con.close()
    return differences


# (heading, width, key in a measured row, format)
COLUMNS = (("ingest s", 10, "ingest_s", ".1f"), ("process s", 11, "process_s", ".1f"), ("CPU s", 9, "cpu_s", ".1f"),
           ("peak RSS MB", 13, "peak_rss_mb", ".0f"))


def labels(ref: str) -> dict[str, str]:
    return {"current": "ingest_visual_genome (this tree)", "ref": f"ingest_visual_genome @ {ref}",
            "json": "json.load + Python loop", "floor": "DuckDB typed read alone (floor)"}


def median_row(runs: list[dict]) -> dict:
    row = {key: statistics.median(run[key] for run in runs) for _, _, key, _ in COLUMNS}
    return {**row, "method": runs[0]["method"], "counts": runs[0]["counts"]}


def print_table(runs: dict[str, list[dict]], root: Path, size: int, ref: str, cores: int) -> None:
    name = labels(ref)
    counts = next(iter(runs.values()))[0]["counts"]
    repeats = len(next(iter(runs.values())))
    print()
    print(f"Visual Genome ingest, {counts['images']:,} images, {counts['objects']:,} objects, "
          f"{counts['relationships']:,} relationships, {counts['attributes']:,} attribute rows; "
          f"{size / 1e9:.2f} GB of JSON in {root}")
    print(f"{cores} cores each; median of {repeats} run(s); 1-minute load average at the start of each run: "
          + "; ".join(f"{m} " + ", ".join(f"{r['load']:.2f}" for r in rs) for m, rs in runs.items()))
    header = (f"{'method':<40}" + "".join(f"{h:>{w}}" for h, w, _, _ in COLUMNS)
              + f"{'objects':>11}{'relationships':>15}")
    print(header)
    print("-" * len(header))
    rows = {m: median_row(rs) for m, rs in runs.items()}
    for method, row in rows.items():
        cells = "".join(f"{row[key]:>{w}{fmt}}" for _, w, key, fmt in COLUMNS)
        print(f"{name[method]:<40}{cells}{row['counts']['objects']:>11,}{row['counts']['relationships']:>15,}")
    if "current" in rows:
        for method, label in (("ref", f"@ {ref}"), ("json", "json.load"), ("floor", "floor")):
            if method in rows:
                ratios = "".join(f"{rows[method][key] / rows['current'][key]:>{w - 1}.2f}x" for _, w, key, _ in COLUMNS)
                print(f"{'ratio ' + label + ' / this tree':<40}{ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "emo_vg_bench",
                        help="where the full-size input and the outputs go (default: %(default)s)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the full-size input and the Parquet outputs "
                             "(a later run reuses the input)")
    parser.add_argument("--source", choices=("synthetic", "sample"), default="synthetic",
                        help="full-size input: the synthetic world (default) "
                             "or the real sample repeated")
    parser.add_argument("--cores", type=int, default=2, help="CPUs each child is pinned to, and DuckDB threads")
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB memory limit (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of runs; medians are printed (default: 3)")
    parser.add_argument("--baseline-ref", default="029a701",
                        help="git revision whose reader runs as `ref` (default: %(default)s, the reader "
                             "before the concurrent read)")
    parser.add_argument("--only", nargs="+", choices=METHODS, help="run only these methods (default: all four)")
    parser.add_argument("--child", choices=("duckdb", "json", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    source = args.source
    workdir = args.workdir.resolve()
    existed = (workdir / source / COMPLETE).is_file()
    root = full_size_input(workdir, source)
    size = sum((root / name).stat().st_size for name in VG_FILES if (root / name).is_file())
    methods = [m for m in METHODS if m in (args.only or METHODS)]
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    differences = None
    with tempfile.TemporaryDirectory(prefix="vg-bench-ref-") as ref_name:
        ref_root, ref = None, args.baseline_ref
        if "ref" in methods:
            ref_root = Path(ref_name)
            ref = extract_revision(args.baseline_ref, ref_root)
            print(f"reader as of {args.baseline_ref} ({ref}) extracted to {ref_root}")
        try:
            for repeat in range(args.repeats):
                for method in methods:
                    out = workdir / "out" / method
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"run {repeat + 1}/{args.repeats}: {method} on {args.cores} core(s), "
                          f"load {os.getloadavg()[0]:.2f} ...", flush=True)
                    run = measure(method, root, out, args.cores, args.memory_limit, ref_root)
                    print(f"  {run['ingest_s']:.1f} s ingest, {run['cpu_s']:.1f} s CPU, "
                          f"{run['peak_rss_mb']:.0f} MB peak RSS", flush=True)
                    runs[method].append(run)
            if "current" in methods and "ref" in methods:
                differences = same_tables(workdir / "out" / "current", workdir / "out" / "ref")
        finally:
            if not args.keep:
                shutil.rmtree(workdir / "out", ignore_errors=True)
                if not existed:
                    shutil.rmtree(workdir / source, ignore_errors=True)
    print_table(runs, root, size, ref, args.cores)
    # The floor counts list entries, not rows written (attributes: objects, not object-attribute pairs).
    first = {m: rs[0]["counts"] for m, rs in runs.items() if m != "floor"}
    for table in ("images", "objects", "relationships", "attributes"):
        values = {m: c[table] for m, c in first.items()}
        if len(set(values.values())) > 1:
            print(f"note: {table} rows differ: " + ", ".join(f"{m} {n:,}" for m, n in values.items()))
    if differences is not None:
        if all(d == (0, 0) for d in differences.values()):
            print(f"tables of this tree and of {ref}: the same rows and values (EXCEPT ALL both ways: none)")
        else:
            print(f"tables of this tree and of {ref} DIFFER (rows only in this tree, rows only in {ref}): "
                  + ", ".join(f"{t} {d}" for t, d in differences.items() if d != (0, 0)))
            sys.exit(1)


if __name__ == "__main__":
    main()
