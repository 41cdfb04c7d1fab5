"""The object detector of dataset A: an ultralytics YOLO model, trained offline or given by the user.

Dataset A joins Emotion6 images with the objects a detector finds in them. The paper used a COCO
YOLO model; COCO weights cannot be downloaded here, so there are two ways to get a detector:

- user weights: `load_detector(path)` loads any ultralytics detection checkpoint (`.pt`), for example
  a COCO model downloaded by hand. Its class names are whatever it was trained on (80 COCO names).
- trained here: the Visual Genome boxes of the N most frequent object names (`vocabulary`) are
  written in the YOLO dataset layout (`write_yolo_dataset`) and a model is trained from the model
  yaml shipped in the ultralytics wheel (`yolo11n.yaml` / `yolov8n.yaml`: random initialisation, no
  download) by `train_detector`. Dataset A then has the same object vocabulary as dataset B.

`detect` runs a detector over images and returns one row per detection, plus one row with NULL
object, confidence and box for every image without a detection, so every image is in the table.

Offline: the package applies ultralytics' switches on import (`emo_pipeline.core.offline`: YOLO_OFFLINE,
YOLO_AUTOINSTALL=0, YOLO_CONFIG_DIR under EMO_HOME), so `ultralytics` is only imported inside the
functions here, after `import emo_pipeline`. `prepare_ultralytics` puts a font where ultralytics looks
for Arial.ttf (else it asks GitHub for one, even with plots off) and turns off its hub sync and its
own integrations (MLflow, TensorBoard, ...): the asset logs to the project's MLflow itself. AMP is
off unless asked for, because ultralytics' AMP check downloads yolo26n.pt.

The library never imports dagster; `emo_pipeline.defs.detection` wraps it in assets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from emo_pipeline.core.atomic import atomic_output

# Model yamls shipped in the ultralytics wheel that build a random-init nano detector offline.
MODEL_YAMLS = ("yolo11n.yaml", "yolov8n.yaml")
DEFAULT_MODEL_YAML = "yolo11n.yaml"

# Columns of a detections table (see `detect`). Images without a detection have one row with NULL
# object, class_id, confidence and box.
DETECTION_COLUMNS = ("image_key", "image_path", "image_width", "image_height", "object", "class_id",
                     "confidence", "x", "y", "w", "h")

# Ultralytics settings that would reach the network or log runs somewhere of their own.
_QUIET_SETTINGS = {
    "sync": False, "api_key": "", "clearml": False, "comet": False, "dvc": False, "mlflow": False,
    "raytune": False, "tensorboard": False, "wandb": False, "vscode_msg": False, "openvino_msg": False,
}
# Fonts ultralytics may ask for (Arial.Unicode.ttf when class names are not ASCII).
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")

Log = Callable[[str], None]


def _no_log(_: str) -> None:
    pass


@contextlib.contextmanager
def _torch_process_state() -> Iterator[None]:
    """Put back the process-wide torch settings ultralytics changes, once its call is over.

    Selecting the CPU, ultralytics sets torch to `cpu_count - 1` threads (one on a 2-core machine;
    on a busy 2-core machine two threads made YOLO epochs five times slower, so its choice stands while
    it runs), and `deterministic=True` turns on deterministic algorithms for the whole process. Both
    would outlive the call and change later torch work in the same process (a Dagster step running
    in process, a test session).
    """
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_deterministic = torch.backends.cudnn.deterministic
    fill = torch.utils.deterministic.fill_uninitialized_memory
    env = {key: os.environ.get(key) for key in ("CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")}
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_deterministic
        torch.utils.deterministic.fill_uninitialized_memory = fill
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- ultralytics, offline ---------------------------------------------------------------------------
def ultralytics_config_dir() -> Path:
    """The folder ultralytics keeps its settings and fonts in: `$YOLO_CONFIG_DIR/Ultralytics`."""
    configured = os.environ.get("YOLO_CONFIG_DIR")
    if not configured:
        # `import emo_pipeline` sets it; reaching here means the switches were removed afterwards.
        raise RuntimeError("YOLO_CONFIG_DIR is not set: import emo_pipeline before using the detector")
    return Path(configured).expanduser() / "Ultralytics"


def _install_fonts(folder: Path) -> list[Path]:
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    folder.mkdir(parents=True, exist_ok=True)
    installed = []
    for name in _FONT_NAMES:
        target = folder / name
        if not target.is_file():
            with atomic_output(target) as tmp:
                shutil.copyfile(source, tmp)
        installed.append(target)
    return installed


def prepare_ultralytics() -> Path:
    """Make ultralytics safe to use offline in this process; return its config folder.

    Puts the fonts in place before ultralytics is imported (it looks for them while checking a
    dataset), then turns off its network and logging integrations in its settings file and points its
    default folders for runs, weights and datasets inside `$YOLO_CONFIG_DIR` (this module always
    passes absolute paths; the defaults only catch what ultralytics decides on its own, such as the
    weights folder it searches for `yolo26n.pt` when AMP is on). Idempotent; the settings file is
    rewritten only when a value differs, so concurrent processes rarely touch it.
    """
    folder = ultralytics_config_dir()
    _install_fonts(folder)
    for key, value in (("YOLO_OFFLINE", "1"), ("YOLO_AUTOINSTALL", "0")):
        os.environ.setdefault(key, value)
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR, patches

    # Importing ultralytics replaces PIL.Image.open, for the whole process, with a wrapper that answers
    # a file PIL cannot identify by installing a HEIF plugin; offline that install fails, so every later
    # reader in the process would see a ModuleNotFoundError instead of PIL's UnidentifiedImageError and
    # reject nothing. Marked as done, the wrapper calls PIL's own open directly.
    patches._pil_plugins_registered = True
    if Path(USER_CONFIG_DIR).resolve() != folder.resolve():
        # ultralytics was imported before YOLO_CONFIG_DIR changed: keep its fonts where it looks.
        _install_fonts(Path(USER_CONFIG_DIR))
    base = Path(USER_CONFIG_DIR).resolve().parent
    wanted = {**_QUIET_SETTINGS, "runs_dir": str(base / "runs"), "weights_dir": str(base / "weights"),
              "datasets_dir": str(base / "datasets")}
    changed = {k: v for k, v in wanted.items() if SETTINGS.get(k) != v}
    if changed:
        SETTINGS.update(changed)
    return Path(USER_CONFIG_DIR)


# -- the vocabulary and the YOLO dataset ------------------------------------------------------------
def normalise_name(name: str) -> str:
    """Lower case, stripped, runs of whitespace collapsed: how the Visual Genome reader writes names."""
    return " ".join(str(name).lower().split())


def vocabulary(objects: pd.DataFrame, n: int) -> list[str]:
    """The `n` most frequent object names (by number of boxes) of a `vg_objects` table.

    Names are normalised again (the reader already did; a hand-made table may not have) and ties are
    broken alphabetically, so the same table always gives the same list in the same order: the class
    index of a name is its position here.
    """
    if n < 1:
        raise ValueError(f"the vocabulary needs at least one name, not {n}")
    names = objects["name"].dropna().map(normalise_name)
    names = names[names != ""]
    counts = names.value_counts()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [name for name, _ in ranked[:n]]


@dataclass
class YoloDataset:
    """A dataset in the ultralytics layout: `root/images/{train,val}`, `root/labels/{train,val}`, `data.yaml`."""

    root: Path
    data_yaml: Path
    names: list[str]
    images: dict[str, int]          # split -> images
    boxes: dict[str, int]           # split -> boxes of the vocabulary
    background_images: int          # images with no box of the vocabulary (empty label files)
    missing_images: int             # rows of the images table whose file does not exist
    linked: bool                    # images are symlinks (True) or copies


def _label_lines(boxes: pd.DataFrame, width: float, height: float) -> list[str]:
    """YOLO label lines `class cx cy w h`, normalised to the image and clipped to [0, 1]."""
    if boxes.empty:
        return []
    x0 = np.clip(boxes["x"].to_numpy(float) / width, 0.0, 1.0)
    y0 = np.clip(boxes["y"].to_numpy(float) / height, 0.0, 1.0)
    x1 = np.clip((boxes["x"].to_numpy(float) + boxes["w"].to_numpy(float)) / width, 0.0, 1.0)
    y1 = np.clip((boxes["y"].to_numpy(float) + boxes["h"].to_numpy(float)) / height, 0.0, 1.0)
    keep = (x1 > x0) & (y1 > y0)
    classes = boxes["class_id"].to_numpy()
    return [f"{int(c)} {(a + b) / 2:.6f} {(c0 + d) / 2:.6f} {b - a:.6f} {d - c0:.6f}"
            for c, a, c0, b, d, k in zip(classes, x0, y0, x1, y1, keep) if k]


def _place_image(source: Path, target: Path, link: bool) -> bool:
    """Symlink the image (no copy of a 15 GB data set); copy where links are not allowed."""
    if link:
        try:
            os.symlink(source, target)
            return True
        except OSError:
            pass
    shutil.copyfile(source, target)
    return False


def split_images(image_ids: Sequence[int], val_share: float, seed: int) -> dict[int, str]:
    """Seeded train/val assignment: at least one image in each split when there are two or more."""
    if not 0.0 < val_share < 1.0:
        raise ValueError(f"val_share must be between 0 and 1, not {val_share}")
    ids = sorted(int(i) for i in image_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = min(max(1, round(val_share * len(ids))), len(ids) - 1) if len(ids) > 1 else 0
    val = {ids[i] for i in order[:n_val]}
    return {i: ("val" if i in val else "train") for i in ids}


def write_yolo_dataset(images: pd.DataFrame, objects: pd.DataFrame, names: Sequence[str], image_root: Path,
                       out_dir: Path, val_share: float = 0.2, seed: int = 0, link: bool = True,
                       log: Log = _no_log) -> YoloDataset:
    """Write Visual Genome boxes of `names` as a YOLO dataset under `out_dir`, replacing it atomically.

    `images` is a `vg_images` table (image_id, width, height, image_path relative to `image_root`),
    `objects` a `vg_objects` table (image_id, name, clipped x, y, w, h in pixels). Every image whose
    file exists goes in, with one label file each: images without a box of the vocabulary get an
    empty one and teach the model what is not an object. Files are named by image id only, so nothing
    is written outside `out_dir` whatever the tables hold. The folder is built beside `out_dir` and
    swapped in at the end: a crash leaves the previous dataset whole, and the same input writes the
    same files again.
    """
    names = [normalise_name(n) for n in names]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"class names must be distinct and non-empty: {names}")
    out_dir = Path(out_dir).resolve()
    image_root = Path(image_root).resolve()
    index = {name: i for i, name in enumerate(names)}

    table = images[["image_id", "width", "height", "image_path"]].dropna()
    table = table[(table["width"] > 0) & (table["height"] > 0)].drop_duplicates("image_id")
    sources = {int(r.image_id): image_root / str(r.image_path) for r in table.itertuples(index=False)}
    present = {i for i, path in sources.items() if path.is_file()}
    missing = len(sources) - len(present)
    if missing:
        log(f"YOLO dataset: {missing} of {len(sources)} images have no file under {image_root}; left out")
    if len(present) < 2:
        raise ValueError(f"need at least two images with files under {image_root} to train a detector, "
                         f"found {len(present)}")
    table = table[table["image_id"].astype("int64").isin(present)]

    boxes = objects[["image_id", "name", "x", "y", "w", "h"]].dropna().copy()
    boxes["name"] = boxes["name"].map(normalise_name)
    boxes = boxes[boxes["name"].isin(index) & boxes["image_id"].astype("int64").isin(present)]
    boxes["class_id"] = boxes["name"].map(index).astype(int)
    by_image = {int(k): g for k, g in boxes.groupby("image_id", sort=False)}
    assignment = split_images(list(present), val_share, seed)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    counts = {"train": 0, "val": 0}
    box_counts = {"train": 0, "val": 0}
    background = 0
    linked = link
    try:
        for split in ("train", "val"):
            (staging / "images" / split).mkdir(parents=True)
            (staging / "labels" / split).mkdir(parents=True)
        for row in table.sort_values("image_id").itertuples(index=False):
            image_id = int(row.image_id)
            split = assignment[image_id]
            source = sources[image_id]
            suffix = source.suffix.lower() if source.suffix else ".jpg"
            linked &= _place_image(source, staging / "images" / split / f"{image_id}{suffix}", link)
            own = by_image.get(image_id)
            lines = _label_lines(own, float(row.width), float(row.height)) if own is not None else []
            (staging / "labels" / split / f"{image_id}.txt").write_text(
                "".join(line + "\n" for line in lines), encoding="utf-8")
            counts[split] += 1
            box_counts[split] += len(lines)
            background += not lines
        data = {"path": str(out_dir), "train": "images/train", "val": "images/val",
                "names": dict(enumerate(names))}
        (staging / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                                           encoding="utf-8")
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"YOLO dataset at {out_dir}: {counts['train']} train / {counts['val']} val images, "
        f"{box_counts['train']} / {box_counts['val']} boxes of {len(names)} classes, {background} background images")
    return YoloDataset(root=out_dir, data_yaml=out_dir / "data.yaml", names=names, images=counts,
                       boxes=box_counts, background_images=background, missing_images=missing, linked=linked)


def _swap_in(staging: Path, final: Path) -> None:
    """Replace `final` by `staging` with renames only; the old folder is removed afterwards."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- training ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectorSettings:
    """How to train a detector from a model yaml (the ultralytics arguments this project sets).

    Defaults are ultralytics' own, except where noted; `DETECTOR_PROFILES` holds the project's choices.
    """

    model_yaml: str = DEFAULT_MODEL_YAML
    epochs: int = 100
    imgsz: int = 640
    batch: int = 16
    seed: int = 0
    workers: int = 0              # dataloader processes; 0 loads in the training process (2-core machines)
    patience: int = 100           # epochs without val improvement before stopping early
    validate_each_epoch: bool = True  # False: validate only after the last epoch (faster on a CPU)
    cache: bool = True            # decoded images kept in memory
    amp: bool = False             # True runs ultralytics' AMP check, which downloads yolo26n.pt if absent
    device: str = "cpu"           # "cpu", "0", "cuda:0", ...
    mosaic: float = 1.0           # ultralytics' default augmentation
    optimizer: str = "auto"       # "auto" picks AdamW with a small lr for short runs; "AdamW", "SGD", ...
    lr0: float = 0.01             # initial learning rate (ignored by optimizer "auto")
    warmup_epochs: float = 3.0
    close_mosaic: int = 10        # last epochs trained without mosaic


# Demo: the synthetic world's 160 px pictures on a laptop CPU in a few minutes. From random init
# with few steps, AdamW at a higher learning rate than ultralytics' "auto" choice (2e-4 for 40
# classes), a short warmup, small batches (more steps) and no mosaic learned fastest in a sweep on
# the synthetic world. Paper: the real Visual Genome at ultralytics' usual size and recipe, for a GPU.
DETECTOR_PROFILES = {
    "demo": DetectorSettings(epochs=20, imgsz=160, batch=8, validate_each_epoch=False, optimizer="AdamW",
                             lr0=0.005, warmup_epochs=0.5, mosaic=0.0, close_mosaic=0),
    "paper": DetectorSettings(epochs=100, imgsz=640, batch=32, workers=4, patience=20, cache=False),
}
DETECTOR_VOCABULARY = {"demo": 40, "paper": 150}


@dataclass
class EpochRecord:
    epoch: int
    seconds: float
    losses: dict[str, float]
    metrics: dict[str, float]


@dataclass
class TrainedDetector:
    """What training produced: weights, class names, validation metrics of the best weights, history."""

    weights: Path
    names: list[str]
    metrics: dict[str, float]              # precision, recall, mAP50, mAP50-95 of the val split
    per_class_ap50: dict[str, float]
    per_class_ap: dict[str, float]         # AP50-95
    history: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    source: str = ""


_METRIC_NAMES = {"metrics/precision(B)": "precision", "metrics/recall(B)": "recall",
                 "metrics/mAP50(B)": "mAP50", "metrics/mAP50-95(B)": "mAP50-95"}


def _clean_metrics(raw: dict) -> dict[str, float]:
    return {_METRIC_NAMES.get(k, k): float(v) for k, v in raw.items()
            if k in _METRIC_NAMES and v is not None and math.isfinite(float(v))}


def _box_metrics(det_metrics, names: list[str]) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Summary, per-class AP50 and per-class AP50-95 of an ultralytics DetMetrics object."""
    summary = _clean_metrics(det_metrics.results_dict)
    ap50, ap = {}, {}
    box = det_metrics.box
    for position, class_index in enumerate(np.asarray(getattr(det_metrics, "ap_class_index", []), dtype=int)):
        name = names[int(class_index)]
        ap50[name] = float(box.ap50[position])
        ap[name] = float(box.ap[position])
    return summary, ap50, ap


def train_detector(data_yaml: Path, settings: DetectorSettings, out_dir: Path, log: Log = _no_log) -> TrainedDetector:
    """Train a YOLO detector from `settings.model_yaml` (random init, nothing downloaded) on a YOLO dataset.

    Ultralytics writes its run under `out_dir/train` (replaced on every call); progress goes to `log`
    once per epoch. Returns the best weights by validation fitness and their validation metrics.
    """
    data_yaml = Path(data_yaml).resolve()
    out_dir = Path(out_dir).resolve()
    prepare_ultralytics()
    from ultralytics import YOLO

    names = [str(v) for _, v in sorted(yaml.safe_load(data_yaml.read_text(encoding="utf-8"))["names"].items())]
    run_dir = out_dir / "train"
    shutil.rmtree(run_dir, ignore_errors=True)  # exist_ok below would otherwise mix two runs' files
    model = YOLO(settings.model_yaml, task="detect")
    history: list[EpochRecord] = []

    trained_epochs: list[int] = []

    def on_train_epoch_end(trainer) -> None:
        trained_epochs.append(int(trainer.epoch))

    def on_fit_epoch_end(trainer) -> None:
        if not trained_epochs or int(trainer.epoch) != trained_epochs[-1]:
            # ultralytics calls this once more, one epoch on, after validating the best weights
            # (final_eval); those metrics are returned by model.train() and reported from there.
            return
        losses = {k: float(v) for k, v in trainer.label_loss_items(trainer.tloss, prefix="train").items()} \
            if trainer.tloss is not None else {}
        epoch = int(trainer.epoch) + 1
        # Without per-epoch validation ultralytics keeps zeros in trainer.metrics until the last epoch.
        validated = bool(trainer.args.val) or epoch >= int(trainer.epochs)
        record = EpochRecord(epoch=epoch, seconds=float(trainer.epoch_time or 0.0), losses=losses,
                             metrics=_clean_metrics(trainer.metrics or {}) if validated else {})
        history.append(record)
        shown = ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in {**losses, **record.metrics}.items())
        log(f"detector epoch {record.epoch}/{trainer.epochs} in {record.seconds:.1f} s: {shown}")

    model.add_callback("on_train_epoch_end", on_train_epoch_end)
    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    log(f"training {settings.model_yaml} from random init on {data_yaml} ({len(names)} classes): "
        f"{settings.epochs} epochs at {settings.imgsz} px, batch {settings.batch}, device {settings.device}")
    amp = settings.amp
    if amp:
        from ultralytics.utils import WEIGHTS_DIR

        if not (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():
            log(f"AMP asked for, but ultralytics checks AMP with {Path(WEIGHTS_DIR) / 'yolo26n.pt'}, which is "
                f"absent and would be downloaded: training in full precision instead")
            amp = False
    with _torch_process_state():
        began = time.perf_counter()
        det_metrics = model.train(
            data=str(data_yaml), epochs=settings.epochs, imgsz=settings.imgsz, batch=settings.batch,
            seed=settings.seed, deterministic=True, workers=settings.workers, device=settings.device,
            project=str(out_dir), name="train", exist_ok=True, pretrained=False, plots=False,
            val=settings.validate_each_epoch, patience=settings.patience, cache=settings.cache and "ram",
            amp=amp, mosaic=settings.mosaic, close_mosaic=settings.close_mosaic, optimizer=settings.optimizer,
            lr0=settings.lr0, warmup_epochs=settings.warmup_epochs, verbose=False,
        )
    seconds = time.perf_counter() - began
    trainer = model.trainer
    weights = Path(trainer.best if Path(trainer.best).is_file() else trainer.last)
    summary, ap50, ap = _box_metrics(det_metrics, names) if det_metrics is not None else ({}, {}, {})
    log(f"detector trained in {seconds:.0f} s ({len(history)} epochs); best weights {weights}; val "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    return TrainedDetector(weights=weights, names=names, metrics=summary, per_class_ap50=ap50, per_class_ap=ap,
                           history=history, seconds=seconds, device=str(trainer.device),
                           source=f"trained from {settings.model_yaml}, random init")


# -- user weights and inference ---------------------------------------------------------------------
@dataclass
class LoadedDetector:
    model: object                   # ultralytics.YOLO
    names: list[str]
    weights: Path
    train_imgsz: int | None         # the input size it was trained at, when the checkpoint says


def load_detector(weights_path: str | os.PathLike) -> LoadedDetector:
    """Load an ultralytics detection checkpoint from a local file (never a download).

    The file is a torch pickle: load only weights you trust. Its class names (e.g. the 80 COCO names
    of a COCO model) are the objects it can report.
    """
    path = Path(weights_path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"detector weights {path} do not exist (give the path of a local .pt file)")
    if path.suffix != ".pt":
        raise ValueError(f"detector weights must be an ultralytics .pt checkpoint, not {path.name}")
    prepare_ultralytics()
    from ultralytics import YOLO

    # An absolute path to an existing file: ultralytics loads it and never looks online.
    model = YOLO(str(path))
    if model.task != "detect":
        raise ValueError(f"{path} holds a {model.task!r} model, not an object detector")
    names = [str(v) for _, v in sorted(model.names.items())]
    train_args = (getattr(model, "ckpt", None) or {}).get("train_args") or {}
    imgsz = train_args.get("imgsz")
    return LoadedDetector(model=model, names=names, weights=path,
                          train_imgsz=int(imgsz) if isinstance(imgsz, (int, float)) else None)


def detect(model, images: Iterable[tuple[str, str | os.PathLike]], conf: float = 0.2, imgsz: int = 640,
           batch: int = 16, device: str | None = None, log: Log = _no_log, log_every: int = 500) -> pd.DataFrame:
    """Run `model` (an ultralytics YOLO or a `LoadedDetector`) over `(image_key, path)` pairs.

    Returns the columns of `DETECTION_COLUMNS`: one row per detection with confidence >= `conf`, box
    `x, y, w, h` in pixels of the original image (top-left corner, width, height; boxes clipped to
    nothing at the picture's edge are dropped); an image with no
    detection gets one row whose object, class_id, confidence and box are NULL, so every image appears:
    once per detection, or once with NULLs (`WHERE object IS NULL` lists the images without one).
    """
    if not 0.0 <= conf <= 1.0:
        raise ValueError(f"confidence threshold must be in [0, 1], not {conf}")
    if isinstance(model, LoadedDetector):
        model = model.model
    pairs = [(str(key), str(Path(path).resolve())) for key, path in images]
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("image keys must be unique")
    prepare_ultralytics()
    names = model.names
    rows: list[dict] = []
    with _torch_process_state():
        _detect_into(rows, model, names, pairs, conf, imgsz, batch, device, log, log_every)
    frame = pd.DataFrame(rows, columns=list(DETECTION_COLUMNS))
    return frame.astype({"image_key": "string", "image_path": "string", "image_width": "int32",
                         "image_height": "int32", "object": "string", "class_id": "Int32",
                         "confidence": "float64", "x": "float64", "y": "float64", "w": "float64", "h": "float64"})


def _detect_into(rows: list[dict], model, names: dict, pairs: list[tuple[str, str]], conf: float, imgsz: int,
                 batch: int, device: str | None, log: Log, log_every: int) -> None:
    done = 0
    for start in range(0, len(pairs), max(batch, 1) * 8):
        chunk = pairs[start:start + max(batch, 1) * 8]
        results = model.predict(source=[p for _, p in chunk], conf=conf, imgsz=imgsz, batch=batch, device=device,
                                verbose=False, stream=True, save=False)
        for (key, path), result in zip(chunk, results, strict=True):
            if Path(result.path).resolve() != Path(path):
                raise RuntimeError(f"detector returned results for {result.path} where {path} was expected")
            height, width = (int(v) for v in result.orig_shape)
            boxes = result.boxes
            xyxy = boxes.xyxy.cpu().numpy() if boxes is not None and len(boxes) else np.zeros((0, 4))
            scores = boxes.conf.cpu().numpy() if len(xyxy) else np.zeros(0)
            classes = boxes.cls.cpu().numpy().astype(int) if len(xyxy) else np.zeros(0, dtype=int)
            # A box predicted outside the picture is clipped to its edge and keeps no area: not an object.
            keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
            xyxy, scores, classes = xyxy[keep], scores[keep], classes[keep]
            if not len(xyxy):
                rows.append({"image_key": key, "image_path": path, "image_width": width, "image_height": height,
                             "object": None, "class_id": None, "confidence": None,
                             "x": None, "y": None, "w": None, "h": None})
            else:
                for (x0, y0, x1, y1), score, cls in sorted(zip(xyxy, scores, classes), key=lambda t: -t[1]):
                    rows.append({"image_key": key, "image_path": path, "image_width": width, "image_height": height,
                                 "object": str(names[int(cls)]), "class_id": int(cls), "confidence": float(score),
                                 "x": float(x0), "y": float(y0), "w": float(x1 - x0), "h": float(y1 - y0)})
            done += 1
            if done % log_every == 0:
                log(f"detected objects in {done}/{len(pairs)} images")


def settings_dict(settings: DetectorSettings) -> dict:
    return dataclasses.asdict(settings)
