"""The `emo-pipeline` command: inspect data sets, write the synthetic world, run the demo's graph, query the
warehouse, predict, rank the objects an emotion calls for, compose a scene for it, fetch ImageNet weights,
evaluate the distribution models on several split seeds."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from emo_pipeline.core.emotions import EMOTIONS
from emo_pipeline.core.rejection import DatasetReport, NotADatasetError

if TYPE_CHECKING:
    import numpy as np

    from emo_pipeline.storage.warehouse import Warehouse

PROG = "emo-pipeline"


class UserError(Exception):
    """Something the user gave (a path, a query, a model name, a weight) that the command refuses: `main`
    prints it as one line on stderr, `emo-pipeline <command>: <message>`, and returns 2."""


@contextmanager
def refusing(*errors: type[Exception], context: str = "") -> Iterator[None]:
    """Turn the library's errors of these types, raised inside the block, into a UserError."""
    try:
        yield
    except errors as exc:
        raise UserError(f"{context}{exc}") from exc


def refuse(prog: str, message: str) -> int:
    """The one way every command refuses: one line on stderr, no traceback, exit status 2."""
    print(f"{prog}: {message}", file=sys.stderr)
    return 2


class Parser(argparse.ArgumentParser):
    """argparse's own refusals (no command, an unknown choice, a value of the wrong type, a missing
    argument) in the same one line, without the usage block; they exit 2 from inside argparse, as
    `--help` exits 0."""

    def error(self, message: str) -> NoReturn:
        sys.exit(refuse(self.prog, f"error: {message} (see {self.prog} --help)"))


def _inspectors() -> dict[str, Callable[[Path], DatasetReport]]:
    from emo_pipeline.sources.emotion6 import inspect_emotion6
    from emo_pipeline.sources.emotionroi import inspect_emotionroi
    from emo_pipeline.sources.visual_genome import inspect_visual_genome

    return {"emotion6": inspect_emotion6, "emotionroi": inspect_emotionroi, "vg": inspect_visual_genome}


def file_size(size: int) -> str:
    """A byte count as people read it: 512 B, 3.4 MB, 1.2 GB (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def reading_plan(dataset: str, root: Path) -> list[str]:
    """What `inspect` is about to read in `root`, announced before a read that can take minutes.

    Empty when the folder lacks the files the reader starts from: the reader's own refusal then says so.
    """
    if dataset == "emotion6":
        from emo_pipeline.sources.emotion6 import GROUND_TRUTH, count_data_lines

        truth = root / GROUND_TRUTH
        if not (truth.is_file() and (root / "images").is_dir()):
            return []
        return [f"reading Emotion6 at {root}: {GROUND_TRUTH} ({file_size(truth.stat().st_size)}, "
                f"{count_data_lines(root):,} records) and the image each record names under images/, "
                f"every one decoded"]
    if dataset == "emotionroi":
        from emo_pipeline.sources.emotionroi import SPLIT_FILES, count_source_images

        if not ((root / "images").is_dir() and (root / "ground_truth").is_dir()):
            return []
        return [f"reading EmotionROI at {root}: {count_source_images(root):,} images under images/ and their "
                f"maps under ground_truth/, every one decoded, and {', '.join(SPLIT_FILES.values())}"]
    from emo_pipeline.sources.visual_genome import (
        ATTRIBUTE_FILE,
        IMAGE_FILE,
        OBJECT_ALIAS_FILE,
        OBJECT_FILE,
        RELATIONSHIP_ALIAS_FILE,
        RELATIONSHIP_FILE,
    )

    if not all((root / name).is_file() for name in (IMAGE_FILE, OBJECT_FILE)):
        return []
    lines = [f"reading Visual Genome at {root} (every record, into a temporary copy of its tables):"]
    for name in (IMAGE_FILE, OBJECT_FILE, RELATIONSHIP_FILE, ATTRIBUTE_FILE, OBJECT_ALIAS_FILE,
                 RELATIONSHIP_ALIAS_FILE):
        path = root / name
        lines.append(f"  {name:<24} {file_size(path.stat().st_size) if path.is_file() else 'absent':>10}")
    return lines


def cmd_inspect(args: argparse.Namespace) -> int:
    # ~ expanded, made absolute and normalised lexically: messages show the folder as the user named it.
    root = Path(os.path.abspath(os.path.expanduser(args.path)))
    # To stderr, so that --json output stays one JSON object.
    for line in reading_plan(args.dataset, root):
        print(line, file=sys.stderr, flush=True)
    with refusing(NotADatasetError, context=f"not a {args.dataset} folder: "):
        report = _inspectors()[args.dataset](root)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    print(f"{report.dataset}: {report.rows} valid images, {len(report.rejected)} rejected records")
    for table, count in report.tables.items():
        print(f"  {table:<16} {count:>10,} rows")
    shown = report.rejected if args.all else report.rejected[:50]
    for rejection in shown:
        print(f"  rejected  {rejection}")
    if len(shown) < len(report.rejected):
        print(f"  ... {len(report.rejected) - len(shown)} more (use --all or --json)")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from emo_pipeline.synthetic import write_world

    # write_world reports each data set as it is written, and the total at the end. OSError: --out under
    # a file, not writable, disk full.
    with refusing(OSError, context=f"cannot write the world to {args.out}: "):
        write_world(Path(args.out), seed=args.seed, scale=args.scale, images=not args.no_images,
                    progress=lambda line: print(line, flush=True))
    return 0


def cmd_detector_pretrain(args: argparse.Namespace) -> int:
    """Train the detector weights the demo starts from (emo_pipeline.detection.pretrained), one line per
    epoch; the weights and their record (<out>.json) are written at the end."""
    import dataclasses

    from emo_pipeline.detection.pretrained import (
        PRETRAINING_SEED,
        PRETRAINING_SETTINGS,
        pretrain_detector,
        provenance_path,
    )

    settings = dataclasses.replace(PRETRAINING_SETTINGS, epochs=args.epochs or PRETRAINING_SETTINGS.epochs)
    with refusing(OSError, context=f"cannot write the detector to {args.out}: "):
        record = pretrain_detector(Path(args.out), seed=PRETRAINING_SEED if args.seed is None else args.seed,
                                   settings=settings,
                                   work=Path(args.work) if args.work else None,
                                   log=lambda line: print(line, flush=True))
    metrics = ", ".join(f"{name} {value:.3f}" for name, value in record["val_metrics"].items())
    print(f"wrote {args.out} (sha256 {record['sha256']}) and {provenance_path(Path(args.out))} in "
          f"{record['seconds']:.0f} s; validation: {metrics}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from emo_pipeline.defs.automation.demo import DemoError, run_demo

    with refusing(DemoError):
        return run_demo(job=args.job, select=args.select)


def open_warehouse(args: argparse.Namespace) -> Warehouse:
    """The warehouse named by --warehouse / --tables, else by EMO_HOME / EMO_TABLES."""
    from emo_pipeline.core.home import emo_home
    from emo_pipeline.storage.warehouse import Warehouse

    home = emo_home()
    root, tables = getattr(args, "warehouse", None), getattr(args, "tables", None) or home.tables
    try:
        return Warehouse(Path(root) if root else home.warehouse, tables)
    except ImportError as exc:  # fsspec names the package a URL's store needs
        raise ValueError(f"tables at {tables}: {exc}") from exc


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    from emo_pipeline.storage.warehouse import ReadOnlyViolation

    try:
        with refusing(ReadOnlyViolation, OSError, ValueError):  # OSError: also an unreachable object store
            warehouse = open_warehouse(args)
            if args.refresh:
                warehouse.refresh_views()
            result = warehouse.query(args.query)
    except duckdb.Error as exc:
        raise UserError(f"{type(exc).__name__}: {exc}") from exc
    if args.format == "csv":
        result.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(result.to_json(orient="records", date_format="iso"))
    else:
        print(result.to_string(index=False) if len(result) else f"(0 rows; columns: {', '.join(result.columns)})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from emo_pipeline.image_emotion.predict import default_model, predict_images, validation_scores

    models_dir = models_folder(args)
    with refusing(OSError, ValueError):  # OSError: also ModelNotFound
        model = args.model or default_model(models_dir, validation_scores(open_warehouse(args)))
        prediction = predict_images(args.images, model, models_dir)
    for path, why in prediction.failed.items():
        print(f"{PROG} predict: skipped {path}: {why}", file=sys.stderr)
    if args.json:
        print(json.dumps(prediction.to_json(), indent=2))
    elif prediction.paths:
        print(f"model: {model}")
        print(prediction.frame().round(3).to_string(index=False))
    return 1 if prediction.failed else 0


def add_emotion_flags(parser: argparse.ArgumentParser) -> None:
    """--anger ... --neutral: the weights of a target distribution, one float option per emotion."""
    group = parser.add_argument_group("target distribution (missing emotions are 0, the rest renormalised)")
    for emotion in EMOTIONS:
        group.add_argument(f"--{emotion}", type=float, metavar="W", help=f"the weight of {emotion}")
    parser.set_defaults(takes_distribution=True)


def unrecognized(args: argparse.Namespace, extras: Sequence[str]) -> UserError:
    """The refusal of arguments no option of the command takes: on a command with emotion flags, an
    unknown `--<name>` is named as an unknown emotion, with the 7 it accepts."""
    if not getattr(args, "takes_distribution", False):
        return UserError(f"error: unrecognized arguments: {' '.join(extras)} (see {PROG} {args.command} --help)")
    names: list[str] = []
    takes_value = False
    for flag in extras:
        if flag.startswith("--"):
            names.append(flag[2:].split("=", 1)[0])
            takes_value = "=" not in flag
        elif takes_value:
            takes_value = False  # the value of that unknown flag
        else:
            return UserError(f"unexpected argument {flag!r}: give weights as --<emotion> W, e.g. --joy 0.7")
    return UserError(f"unknown emotion(s) {', '.join(map(repr, sorted(set(names))))}: "
                     f"choose from {', '.join(EMOTIONS)}")


def emotion_request(args: argparse.Namespace) -> np.ndarray:
    """The normalised 7-way distribution of the emotion flags, and -k checked (the `objects` and `scene`
    commands); UserError names a bad weight."""
    from emo_pipeline.objects.emotion_to_objects import distribution_vector

    with refusing(ValueError):
        distribution = distribution_vector({e: getattr(args, e) for e in EMOTIONS if getattr(args, e) is not None})
    if args.k < 1:
        raise UserError(f"-k must be at least 1, got {args.k}")
    return distribution


def models_folder(args: argparse.Namespace) -> Path:
    from emo_pipeline.core.home import emo_home

    return Path(args.models) if args.models else emo_home().models


def cmd_objects(args: argparse.Namespace) -> int:
    from emo_pipeline.objects.emotion_to_objects import rank_with_mlp, rank_with_scores

    distribution = emotion_request(args)
    with refusing(OSError, ValueError):  # OSError: also ModelNotFound
        if args.model == "mlp":
            ranked = rank_with_mlp(models_folder(args), distribution, args.k, args.dataset)
        else:
            ranked = rank_with_scores(open_warehouse(args), distribution, args.k, args.dataset)
    target = {e: round(float(v), 4) for e, v in zip(EMOTIONS, distribution) if v > 0}
    if args.json:
        print(json.dumps({"dataset": args.dataset, "model": args.model, "distribution": target,
                          "objects": ranked[["rank", "object", "score"]].to_dict(orient="records")}, indent=2))
    else:
        print(f"dataset {args.dataset.upper()}, {args.model}; target "
              + ", ".join(f"{e} {v:g}" for e, v in target.items()))
        print(ranked[["rank", "object", "score"]].round(4).to_string(index=False))
    return 0


def cmd_scene(args: argparse.Namespace) -> int:
    from emo_pipeline.core.home import emo_home
    from emo_pipeline.objects.objects_to_emotion import object_critic, object_model_name
    from emo_pipeline.objects.word_vectors import load_glove
    from emo_pipeline.scenes.composer import ComposerConfig, compose_scene, load_statistics, write_scene
    from emo_pipeline.storage.model_store import load_torch_model

    distribution = emotion_request(args)
    with refusing(OSError, ValueError):  # OSError: also ModelNotFound
        try:
            stats = load_statistics(open_warehouse(args), "b")
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{exc}; materialize the `objects` and `scenes` groups first") from exc
        model, _ = load_torch_model(models_folder(args), object_model_name("fc", "b"))  # the critic
        critic = object_critic(model, "fc", load_glove(emo_home().word_vectors))
        scene = compose_scene(stats, distribution, ComposerConfig(k=args.k), args.seed, critic)
        paths = write_scene(scene, stats, Path(args.out), args.name)
    graph = scene.to_json(stats)
    if args.json:
        print(json.dumps({**graph, "files": {k: str(v) for k, v in paths.items()}}, indent=2))
        return 0
    print("target    " + ", ".join(f"{e} {v:.2f}" for e, v in zip(EMOTIONS, scene.target) if v > 0))
    print("critic    " + ", ".join(f"{e} {v:.2f}" for e, v in zip(EMOTIONS, scene.predicted)) +
          f"  (KL {scene.kl:.3f}, best of {scene.candidates} candidate sets)")
    for item in graph["objects"]:
        print(f"  {item['class_id']:>4}  {item['name']:<16} box {item['box']}")
    for relation in scene.relations:
        print(f"  {scene.objects[relation[0]]} {relation[1]} {scene.objects[relation[2]]}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    """`weights list`: where torchvision's cache file of each architecture is and whether it is there.
    `weights fetch`: download the missing ones (one line each: where it went); a failure is one line on
    stderr naming the file to place by hand and where, the rest are still tried, and the status is 2."""
    from emo_pipeline.models.backbones import ARCHITECTURES, WeightsDownloadFailed, cache_path, fetch_weights

    if args.action == "list":
        for arch in ARCHITECTURES:
            path = cache_path(arch)
            state = f"present, {file_size(path.stat().st_size)}" if path.is_file() else "absent"
            print(f"{arch:<10} {state:<18} {path}")
        return 0
    names = list(ARCHITECTURES) if "all" in args.archs else list(dict.fromkeys(args.archs))
    unknown = [name for name in names if name not in ARCHITECTURES]
    if unknown:
        raise UserError(f"unknown architecture(s) {', '.join(map(repr, unknown))}: choose from "
                        f"{', '.join(ARCHITECTURES)}, or all")
    failed = 0
    for arch in names:
        try:
            path, downloaded = fetch_weights(arch, progress=sys.stderr.isatty())
        except WeightsDownloadFailed as exc:
            refuse(f"{PROG} weights", str(exc))
            failed += 1
            continue
        how = "downloaded" if downloaded else "already in the cache"
        print(f"{arch:<10} {path}  ({how}, {file_size(path.stat().st_size)})", flush=True)
    return 2 if failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Fit the chosen models on each split seed of an Emotion6 folder; a line per fit, then the mean and
    standard deviation of every test metric per model beside the train mean, written to two CSV files."""
    import time

    from emo_pipeline.core.atomic import write_text_atomic
    from emo_pipeline.core.home import emo_home
    from emo_pipeline.core.profiles import EMOTION_MODELS, active_profile, feature_config
    from emo_pipeline.image_emotion.features import feature_table
    from emo_pipeline.image_emotion.multi_split import FEATURE_MODELS, check_models, evaluate_splits, summary_text
    from emo_pipeline.sources.emotion6 import read_emotion6

    began = time.perf_counter()
    profile = args.profile or active_profile()
    if profile not in EMOTION_MODELS:
        raise UserError(f"unknown profile {profile!r}: choose {' or '.join(EMOTION_MODELS)}")
    torch_models = EMOTION_MODELS[profile]
    with refusing(ValueError):
        models = check_models(args.models, torch_models)
    if not args.emotion6:
        raise UserError("name an Emotion6 folder: --emotion6 DIR or EMO_EMOTION6_DIR")
    root = Path(os.path.abspath(os.path.expanduser(args.emotion6)))
    with refusing(NotADatasetError, context="not an Emotion6 folder: "):
        data = read_emotion6(root)
    labels = data.labels
    print(f"Emotion6 at {root}: {len(labels)} images ({len(data.rejected)} rejected records); profile {profile}; "
          f"split seeds {' '.join(map(str, args.splits))}; models {', '.join(models)}", flush=True)
    features = None
    if any(m in FEATURE_MODELS for m in models):
        config = feature_config(profile)
        step = time.perf_counter()
        table = feature_table(zip(labels["image_key"], labels["image_path"]), config, workers=args.workers)
        features = table.features
        print(f"features: {len(features)} images x {features.shape[1] - 1} columns ({', '.join(config.families)}) "
              f"in {time.perf_counter() - step:.0f} s", flush=True)
    result = evaluate_splits(labels, args.splits, models, features=features, torch_models=torch_models,
                             log=lambda line: print(line, flush=True))
    print(f"\ntest split, mean +- standard deviation over split seeds {' '.join(map(str, args.splits))}:")
    print(summary_text(result.summary))
    for seed, members in result.members.items():
        print(f"ensemble of seed {seed}: {members}")
    stem = f"splits_{'_'.join(map(str, args.splits))}"
    out = Path(args.out).expanduser() if args.out else emo_home().evaluation / stem
    per_split = write_text_atomic(result.per_split.to_csv(index=False), out.with_name(out.name + "_per_split.csv"))
    summary = write_text_atomic(result.summary.to_csv(index=False), out.with_name(out.name + "_summary.csv"))
    print(f"\nwrote {per_split} and {summary} in {time.perf_counter() - began:.0f} s")
    return 0


def add_warehouse_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse", help="folder of the catalog (default: $EMO_HOME/warehouse)")
    parser.add_argument("--tables", help="folder or fsspec URL of the Parquet tables, e.g. s3://bucket/emo/tables "
                                         "(default: $EMO_TABLES, else <warehouse>/tables)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="read a data set folder and report counts and rejected records")
    inspect.add_argument("dataset", choices=["emotion6", "emotionroi", "vg"])
    inspect.add_argument("path", help="the data set folder, in its download layout (~ and relative paths work)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument("--all", action="store_true", help="list every rejected record")
    inspect.set_defaults(run=cmd_inspect)

    synth = commands.add_parser("synth", help="write the synthetic Emotion6 / EmotionROI / Visual Genome world")
    synth.add_argument("--out", required=True, help="folder to write Emotion6/, EmotionROI/ and VG/ into")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--scale", choices=["demo", "vg-full", "detector-pretraining"], default="demo")
    synth.add_argument("--no-images", action="store_true",
                       help="skip the Visual Genome pictures (annotations only); Emotion6 and EmotionROI keep theirs")
    synth.set_defaults(run=cmd_synth)

    pretrain = commands.add_parser(
        "detector-pretrain", help="train the detector weights the demo ships with, on a synthetic world of their own",
        description="e.g. emo-pipeline detector-pretrain --out emo_pipeline/detection/weights/yolo11n_synthetic.pt")
    pretrain.add_argument("--out", required=True, help="the .pt to write; its record goes beside it (.json)")
    pretrain.add_argument("--seed", type=int, help="the synthetic world's seed (default: the shipped weights', 1)")
    pretrain.add_argument("--epochs", type=int, help="default: the shipped weights' epochs")
    pretrain.add_argument("--work", help="keep the world, YOLO dataset and run folder here (default: removed)")
    pretrain.set_defaults(run=cmd_detector_pretrain)

    demo = commands.add_parser("demo", help="materialize what is stale or missing in the demo's graph, a line per step",
                               description="Runs against the instance in $DAGSTER_HOME (`make demo` sets it up); "
                                           "the full Dagster event log goes to $EMO_HOME/logs/.")
    demo.add_argument("--job", default="demo_job", help="the job whose assets to bring up to date (default demo_job; "
                                                        "paper_models_job trains the paper's large image models)")
    demo.add_argument("--select", help="only these of the job's assets, in Dagster's selection syntax "
                                       "(e.g. 'group:raw', 'key:svm_model+')")
    demo.set_defaults(run=cmd_demo)

    sql = commands.add_parser("sql", help="run a read-only SQL query over the warehouse views")
    sql.add_argument("query")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    add_warehouse_flags(sql)
    sql.add_argument("--refresh", action="store_true",
                     help="rebuild the catalog's views from the tables first (tables written on another machine)")
    sql.set_defaults(run=cmd_sql)

    predict = commands.add_parser("predict", help="the emotion distribution of image files, from a materialized model")
    predict.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    predict.add_argument("--model", help="model name (default: the best by validation Chebyshev, else the ensemble)")
    predict.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    predict.add_argument("--models", help="models folder (default: $EMO_HOME/models)")
    predict.set_defaults(run=cmd_predict)

    objects = commands.add_parser("objects", help="the objects an emotion distribution calls for, best first",
                                  description="e.g. emo-pipeline objects --joy 0.7 --surprise 0.3 -k 15")
    add_emotion_flags(objects)
    objects.add_argument("-k", type=int, default=15, help="how many objects (default 15)")
    objects.add_argument("--dataset", choices=["a", "b"], default="b", help="learned from dataset A or B (default b)")
    objects.add_argument("--model", choices=["baseline", "mlp"], default="baseline",
                         help="the score baseline (SQL over emotion_object_scores) or the MLP (default baseline)")
    objects.add_argument("--json", action="store_true", help="print one JSON object")
    add_warehouse_flags(objects)
    objects.add_argument("--models", help="models folder (default: $EMO_HOME/models)")
    objects.set_defaults(run=cmd_objects)

    scene = commands.add_parser("scene", help="compose a scene (objects, layout, label map) for a distribution",
                                description="e.g. emo-pipeline scene --joy 0.8 --surprise 0.2 -k 8 --out scenes/")
    add_emotion_flags(scene)
    scene.add_argument("-k", type=int, default=8, help="how many objects (default 8)")
    scene.add_argument("--seed", type=int, default=0, help="the same seed gives the same scene")
    scene.add_argument("--out", required=True, help="folder for <name>.json, <name>_labels.png, <name>_legend.png")
    scene.add_argument("--name", default="scene", help="file name stem (default scene)")
    scene.add_argument("--json", action="store_true", help="print the scene graph as JSON")
    add_warehouse_flags(scene)
    scene.add_argument("--models", help="models folder (default: $EMO_HOME/models)")
    scene.set_defaults(run=cmd_scene)

    weights = commands.add_parser("weights", help="torchvision's ImageNet weights: where they go, fetch them",
                                  description="The cache is $TORCH_HOME/hub/checkpoints (default "
                                              "~/.cache/torch/hub/checkpoints); training looks there.")
    actions = weights.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="each architecture's cache file and whether it is there")
    fetch = actions.add_parser("fetch", help="download the weights into the cache ahead of a run",
                               description="e.g. emo-pipeline weights fetch resnet101 vgg19_bn")
    fetch.add_argument("archs", nargs="+", metavar="ARCH",
                       help="alexnet, vgg16, vgg19_bn, resnet18, resnet101, or all")
    weights.set_defaults(run=cmd_weights)

    from emo_pipeline.image_emotion.multi_split import DEFAULT_MODELS  # light: the fits import what they need

    evaluate = commands.add_parser(
        "evaluate", help="fit the distribution models on several split seeds; mean and spread of each test metric")
    evaluate.add_argument("--emotion6", default=os.environ.get("EMO_EMOTION6_DIR"),
                          help="the Emotion6 folder (default: $EMO_EMOTION6_DIR)")
    evaluate.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                          help="split seeds (default: 0 1 2)")
    evaluate.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="MODEL",
                          help="feature_ridge, feature_gbm, feature_mlp, patch_mlp, a torch model of the profile, "
                               f"ensemble (default: {' '.join(DEFAULT_MODELS)})")
    evaluate.add_argument("--profile", help="settings of the models: paper or demo (default: $EMO_PROFILE)")
    evaluate.add_argument("--workers", type=int, help="feature processes (default: every core)")
    evaluate.add_argument("--out", help="stem of the two CSV files (default: $EMO_HOME/evaluation/splits_<seeds>)")
    evaluate.set_defaults(run=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status. Every user-facing error, from any command, is handled here."""
    parser = build_parser()
    # parse_args, but the refusal of what no option takes is worded here: it names unknown emotions.
    args, extras = parser.parse_known_args(argv)
    try:
        if extras:
            raise unrecognized(args, extras)
        return args.run(args)
    except UserError as exc:
        return refuse(f"{PROG} {args.command}", str(exc))


if __name__ == "__main__":
    sys.exit(main())
