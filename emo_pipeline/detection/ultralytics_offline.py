"""Ultralytics, offline: the switches and shims that keep it off the network and out of the process' state.

The package applies ultralytics' switches on import (`emo_pipeline.core.offline`: YOLO_OFFLINE,
YOLO_AUTOINSTALL=0, YOLO_CONFIG_DIR under EMO_HOME), so `ultralytics` is only imported inside the
functions of `emo_pipeline.detection`, after `import emo_pipeline`. `prepare_ultralytics` puts a font
where ultralytics looks for Arial.ttf (else it asks GitHub for one, even with plots off) and turns off
its hub sync and its own integrations (MLflow, TensorBoard, ...): the asset logs to the project's
MLflow itself. AMP is off unless asked for, because ultralytics' AMP check downloads yolo26n.pt.
`torch_process_state` puts back the torch settings ultralytics changes for the whole process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from emo_pipeline.core.atomic import atomic_output

# Ultralytics settings that would reach the network or log runs somewhere of their own.
_QUIET_SETTINGS = {
    "sync": False, "api_key": "", "clearml": False, "comet": False, "dvc": False, "mlflow": False,
    "raytune": False, "tensorboard": False, "wandb": False, "vscode_msg": False, "openvino_msg": False,
}
# Fonts ultralytics may ask for (Arial.Unicode.ttf when class names are not ASCII).
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


@contextlib.contextmanager
def torch_process_state() -> Iterator[None]:
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
    default folders for runs, weights and datasets inside `$YOLO_CONFIG_DIR` (this package always
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
