"""One training loop for every torch model: seeded, early stopping, a checkpoint per epoch, resumable.

- Seeded: the model's initial weights (seed set before the caller builds it, see `seed_everything`)
  and the order of the training batches (a dedicated generator) follow from one seed.
- Checkpoints: after every epoch but the final one (nothing is left to resume after it) `last.pt` holds
  the model, optimizer, generator state, torch's global random state (dropout draws from it), history
  and early-stopping state; `best.pt` holds the weights of the best validation epoch so far. Both are
  written under a temporary name and renamed, and loaded with `weights_only=True` (plain tensors and
  containers, never pickled code).
- Resume: a rerun with the same configuration continues after the last finished epoch and gives the
  same weights as a run that was never interrupted. A checkpoint of another configuration is refused
  rather than silently mixed in.
- Early stopping on the validation loss with `patience`; the best weights are restored at the end.
- Optional, per batch: a one-cycle or cosine learning-rate schedule (`schedule`) and an exponential
  moving average of the weights (`ema_decay`), which is then what is validated and kept; both are
  checkpointed with the run.
- Speed: the training passes in bfloat16 autocast (`precision`) and image batches in channels-last
  order (`channels_last`). The weights, their updates, validation and predictions stay float32.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from emo_pipeline.core.atomic import atomic_output

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SCHEDULES = ("constant", "onecycle", "cosine")
OPTIMIZERS = ("adam", "adamw", "adagrad")
PRECISIONS = ("fp32", "bf16", "auto")  # auto: bf16 where the device computes it natively (`native_bf16`)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    seed: int = 0
    num_workers: int = 0
    optimizer: str = "adam"   # adam | adamw | adagrad
    lr_decay: float = 0.0     # adagrad's learning-rate decay
    schedule: str = "constant"  # constant | onecycle | cosine: the learning rate over the batches of `epochs`
    ema_decay: float = 0.0    # > 0: validate and keep an exponential moving average of the weights
    # bf16: the training passes' forward in bfloat16 autocast, about twice as fast for convolutions on
    # CPUs with AVX-512 bf16 and on recent GPUs; elsewhere emulated, and slower than fp32.
    precision: str = "fp32"
    channels_last: bool = False  # image batches and conv weights in NHWC order, which oneDNN's convolutions prefer

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), not {self.ema_decay}")

    def fingerprint(self, model: nn.Module) -> str:
        """Identifies a run: the configuration plus the model's architecture."""
        text = json.dumps(asdict(self), sort_keys=True) + repr(model)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    seconds: float


@dataclass
class TrainResult:
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    resumed_from: int  # last finished epoch found in a checkpoint, 0 for a fresh run
    stopped_early: bool
    history: list[EpochRecord] = field(default_factory=list)
    precision: str = "fp32"  # what the training passes ran in: fp32 or bf16


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU with bf16 units, or an x86 CPU whose
    /proc/cpuinfo lists AVX-512 bf16 or AMX bf16 (anything else: False)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    try:
        flags = set(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def training_precision(config: TrainConfig, device: torch.device | str) -> str:
    """The precision `config.precision` means on `device`: fp32 or bf16."""
    if config.precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return config.precision


class CheckpointMismatch(RuntimeError):
    """The checkpoint folder holds a run of another configuration or model."""


def seed_everything(seed: int) -> None:
    """Seed torch before building a model, so that its initial weights follow from the seed."""
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":  # decoupled weight decay
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # adagrad: TrainConfig refused any name outside OPTIMIZERS when it was built.
    return torch.optim.Adagrad(model.parameters(), lr=config.lr, lr_decay=config.lr_decay,
                               weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning rate per batch: one-cycle (warm up over the first 30% of the steps to `lr`, then
    anneal), cosine from `lr` to 0, or None for a constant rate. Planned over every epoch of the
    configuration: a run that stops early stops partway along it."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return None


def _global_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """torch's global random state, which dropout and other random layers draw from."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_global_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _save(obj: dict, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _run_epoch(model: nn.Module, loader: DataLoader, loss_fn: LossFn, device: torch.device,
               optimizer: torch.optim.Optimizer | None, augment: BatchTransform | None = None,
               generator: torch.Generator | None = None,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
               average: torch.optim.swa_utils.AveragedModel | None = None,
               bf16: bool = False, channels_last: bool = False) -> float:
    training = optimizer is not None
    model.train(training)
    total, count = 0.0, 0
    with torch.set_grad_enabled(training):
        for inputs, targets in loader:
            if training and augment is not None:
                inputs = augment(inputs, generator)
            inputs, targets = inputs.to(device), targets.to(device)
            if channels_last and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                outputs = model(inputs)
            loss = loss_fn(outputs.float(), targets)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                if average is not None:
                    average.update_parameters(model)
            total += float(loss.detach()) * len(inputs)
            count += len(inputs)
    return total / max(count, 1)


def train(
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset,
    loss_fn: LossFn,
    config: TrainConfig,
    checkpoint_dir: Path,
    *,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    augment: BatchTransform | None = None,
) -> TrainResult:
    """Train `model` in place (Adam, or Adagrad when configured), keeping checkpoints in `checkpoint_dir`;
    returns what happened.

    `augment` transforms each training batch of inputs with the loop's generator (seeded and
    checkpointed with the run, so a resumed run draws the same augmentations).
    """
    device = torch.device(device)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    precision = training_precision(config, device)
    if precision != "fp32":
        log(f"training passes in {precision} autocast ({config.precision})")
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
    fingerprint = config.fingerprint(model)

    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(train_data, batch_size=config.batch_size, shuffle=True, generator=generator,
                              num_workers=config.num_workers)
    val_loader = DataLoader(val_data, batch_size=config.batch_size, num_workers=config.num_workers)

    scheduler = make_scheduler(optimizer, config, len(train_loader))
    # With ema_decay the averaged weights are validated, kept as the best and handed back.
    average = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
        if config.ema_decay > 0 else None)
    evaluated = average.module if average is not None else model

    history: list[EpochRecord] = []
    best_val, best_epoch, start = math.inf, 0, 1
    if last_path.is_file():
        state = torch.load(last_path, map_location=device, weights_only=True)
        if state["fingerprint"] != fingerprint:
            raise CheckpointMismatch(
                f"{last_path} belongs to another configuration or model ({state['fingerprint']} != {fingerprint}); "
                "delete the folder to start afresh")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if average is not None:
            average.load_state_dict(state["average"])
        generator.set_state(state["generator"].cpu())  # map_location may have moved it to the device
        if "rng" in state:  # absent from checkpoints written before it was saved
            _set_global_rng_state(state["rng"], device)
        history = [EpochRecord(**record) for record in state["history"]]
        best_val, best_epoch, start = state["best_val"], state["best_epoch"], state["epoch"] + 1
        log(f"resuming after epoch {state['epoch']} (best val loss {best_val:.5f} at epoch {best_epoch})")
    resumed_from = start - 1

    # A run that had already stopped early stays stopped when it is rerun. Only a checkpoint written by an
    # earlier version of this loop, which also saved the final epoch, can hold such a run.
    stopped_early = best_epoch > 0 and start - 1 - best_epoch >= config.patience
    # The loop ends only after a final epoch, whose checkpoints are not written: when it improved, the
    # best weights are those in `evaluated`.
    last_epoch_improved = False
    for epoch in range(start, config.epochs + 1):
        if stopped_early:
            break
        began = time.perf_counter()
        train_loss = _run_epoch(model, train_loader, loss_fn, device, optimizer, augment, generator, scheduler,
                                average, bf16=precision == "bf16", channels_last=config.channels_last)
        val_loss = _run_epoch(evaluated, val_loader, loss_fn, device, None, channels_last=config.channels_last)
        record = EpochRecord(epoch, train_loss, val_loss, time.perf_counter() - began)
        history.append(record)
        improved = val_loss < best_val
        if improved:
            best_val, best_epoch = val_loss, epoch
        stopped_early = epoch - best_epoch >= config.patience
        final = stopped_early or epoch == config.epochs
        last_epoch_improved = improved
        # After the final epoch there is nothing left to resume: its checkpoints (the weights and, in
        # last.pt, the optimizer's state besides: 1.7 GB for VGG-19) would only be written to be dropped.
        if not final:
            if improved:
                _save({"model": evaluated.state_dict(), "epoch": epoch, "val_loss": val_loss}, best_path)
            _save({"fingerprint": fingerprint, "epoch": epoch, "model": model.state_dict(),
                   "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                   "rng": _global_rng_state(device),
                   **({"scheduler": scheduler.state_dict()} if scheduler is not None else {}),
                   **({"average": average.state_dict()} if average is not None else {}),
                   "history": [asdict(h) for h in history], "best_val": best_val, "best_epoch": best_epoch},
                  last_path)
        log(f"epoch {epoch}/{config.epochs}: train loss {train_loss:.5f}, val loss {val_loss:.5f}"
            f"{' (best)' if improved else ''}, {record.seconds:.1f} s")
        if on_epoch is not None:
            on_epoch(record)
        if stopped_early:
            log(f"early stop: no improvement for {config.patience} epochs")
            break

    if last_epoch_improved:
        if evaluated is not model:
            model.load_state_dict(evaluated.state_dict())
    elif best_path.is_file():
        model.load_state_dict(torch.load(best_path, map_location=device, weights_only=True)["model"])
    return TrainResult(best_epoch=best_epoch, best_val_loss=best_val, epochs_run=len(history),
                       resumed_from=resumed_from, stopped_early=stopped_early, history=history, precision=precision)


@torch.inference_mode()
def predict(model: nn.Module, data: Dataset, *, batch_size: int = 64, device: torch.device | str = "cpu",
            num_workers: int = 0) -> torch.Tensor:
    """The model's outputs for every item of `data`, in order, on the CPU."""
    model.eval().to(device)
    loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers)
    return torch.cat([model(inputs.to(device)).float().cpu() for inputs, _ in loader])
