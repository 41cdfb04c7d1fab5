"""The shared training loop: learns, stops early, resumes a crashed run to the same weights."""

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from emo_pipeline.core import metrics
from emo_pipeline.core.train_loop import (
    CheckpointMismatch,
    TrainConfig,
    make_scheduler,
    native_bf16,
    predict,
    seed_everything,
    train,
    training_precision,
)


def distribution_data(n: int, seed: int) -> TensorDataset:
    """Features and 7-way distributions that depend on them (softmax of a fixed linear map)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    w = torch.randn(10, 7, generator=torch.Generator().manual_seed(99))
    return TensorDataset(x, torch.softmax(x @ w * 0.7, dim=1))


def make_model(seed: int = 0) -> nn.Module:
    seed_everything(seed)
    return nn.Sequential(nn.Linear(10, 7), nn.Softmax(dim=1))


TRAIN, VAL = distribution_data(256, 1), distribution_data(64, 2)


def test_trained_model_beats_the_train_mean_baseline(tmp_path: Path):
    model = make_model()
    result = train(model, TRAIN, VAL, nn.functional.mse_loss, TrainConfig(epochs=15, lr=0.05, batch_size=32),
                   tmp_path, log=lambda _: None)
    assert result.epochs_run == 15 and result.best_epoch > 1
    truth = VAL.tensors[1].numpy()
    predicted = predict(model, VAL).numpy()
    baseline = metrics.train_mean_baseline(TRAIN.tensors[1].numpy(), len(truth))
    assert metrics.chebyshev(truth, predicted).mean() < 0.7 * metrics.chebyshev(truth, baseline).mean()


@pytest.mark.parametrize("schedule, ema_decay", [("constant", 0.0), ("onecycle", 0.9), ("cosine", 0.0)])
def test_a_crashed_run_resumes_to_the_same_weights(tmp_path: Path, schedule: str, ema_decay: float):
    config = TrainConfig(epochs=6, lr=0.05, batch_size=32, patience=10, schedule=schedule, ema_decay=ema_decay)
    uninterrupted = make_model()
    train(uninterrupted, TRAIN, VAL, nn.functional.mse_loss, config, tmp_path / "a", log=lambda _: None)

    def crash_after_third(record):
        if record.epoch == 3:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train(make_model(), TRAIN, VAL, nn.functional.mse_loss, config, tmp_path / "b",
              log=lambda _: None, on_epoch=crash_after_third)
    lines: list[str] = []
    resumed_model = make_model()
    resumed = train(resumed_model, TRAIN, VAL, nn.functional.mse_loss, config, tmp_path / "b", log=lines.append)
    assert resumed.resumed_from == 3
    assert lines[0].startswith("resuming after epoch 3")
    assert [h.epoch for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    for name, tensor in uninterrupted.state_dict().items():
        assert torch.equal(tensor, resumed_model.state_dict()[name]), name
    # The checkpoints are plain tensors and containers: they load with weights_only=True.
    torch.load(tmp_path / "b" / "last.pt", weights_only=True)


def test_early_stopping_keeps_the_best_weights(tmp_path: Path):
    lines: list[str] = []
    result = train(make_model(), TRAIN, VAL, nn.functional.mse_loss,
                   TrainConfig(epochs=20, lr=0.0, patience=2), tmp_path, log=lines.append)
    # With a zero learning rate nothing improves after the first epoch.
    assert (result.best_epoch, result.epochs_run, result.stopped_early) == (1, 3, True)
    assert lines[-1] == "early stop: no improvement for 2 epochs"


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_the_final_epoch_writes_no_checkpoint_and_its_best_weights_come_back(tmp_path: Path, ema_decay: float):
    config = TrainConfig(epochs=4, lr=0.05, batch_size=32, patience=10, ema_decay=ema_decay)
    model = make_model()
    result = train(model, TRAIN, VAL, nn.functional.mse_loss, config, tmp_path, log=lambda _: None)
    assert result.best_epoch == 4  # the final epoch improved: its weights are handed back without a file
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 3
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 3
    handed_back = nn.functional.mse_loss(predict(model, VAL), VAL.tensors[1]).item()
    assert handed_back == pytest.approx(result.best_val_loss, rel=1e-6)

    one_epoch = tmp_path / "one"
    train(make_model(), TRAIN, VAL, nn.functional.mse_loss, TrainConfig(epochs=1), one_epoch, log=lambda _: None)
    assert not list(one_epoch.iterdir())


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path: Path):
    # Two epochs: the first leaves a resume checkpoint (the final one writes none).
    train(make_model(), TRAIN, VAL, nn.functional.mse_loss, TrainConfig(epochs=2), tmp_path, log=lambda _: None)
    with pytest.raises(CheckpointMismatch, match="another configuration"):
        train(make_model(), TRAIN, VAL, nn.functional.mse_loss, TrainConfig(epochs=1, lr=0.5), tmp_path,
              log=lambda _: None)


def test_the_schedules_shape_the_learning_rate_over_every_batch(tmp_path: Path):
    steps_per_epoch = 256 // 32
    seen: dict[str, list[float]] = {}
    for schedule in ("constant", "onecycle", "cosine"):
        model = make_model()
        config = TrainConfig(epochs=5, lr=0.05, batch_size=32, patience=10, schedule=schedule)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        scheduler = make_scheduler(optimizer, config, steps_per_epoch)
        rates = []
        for _ in range(config.epochs * steps_per_epoch):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        seen[schedule] = rates
    assert set(seen["constant"]) == {0.05}
    peak = max(range(len(seen["onecycle"])), key=seen["onecycle"].__getitem__)
    assert seen["onecycle"][peak] == pytest.approx(0.05) and 0.25 < peak / len(seen["onecycle"]) < 0.35
    assert seen["onecycle"][0] < 0.05 / 20 and seen["onecycle"][-1] < 1e-5
    assert seen["cosine"][0] == 0.05 and seen["cosine"][-1] < 0.001
    assert all(a >= b for a, b in zip(seen["cosine"], seen["cosine"][1:]))


def test_the_moving_average_is_what_is_validated_and_kept(tmp_path: Path):
    model = make_model()
    config = TrainConfig(epochs=4, lr=0.05, batch_size=32, patience=10, ema_decay=0.99)
    result = train(model, TRAIN, VAL, nn.functional.mse_loss, config, tmp_path, log=lambda _: None)
    # The kept weights give the best validation loss the run recorded (those of the average).
    kept = nn.functional.mse_loss(predict(model, VAL), VAL.tensors[1]).item()
    assert kept == pytest.approx(result.best_val_loss, rel=1e-5)
    # With decay .99 over 32 steps the average still leans on the initial weights: worse than the raw model.
    raw = make_model()
    train(raw, TRAIN, VAL, nn.functional.mse_loss, TrainConfig(epochs=4, lr=0.05, batch_size=32, patience=10),
          tmp_path / "raw", log=lambda _: None)
    assert nn.functional.mse_loss(predict(raw, VAL), VAL.tensors[1]).item() < kept


def test_an_unknown_schedule_optimizer_or_precision_is_refused():
    with pytest.raises(ValueError, match="schedule 'linear': choose one of constant, onecycle, cosine"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="optimizer 'sgd': choose one of adam, adamw, adagrad"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="precision 'fp16': choose one of fp32, bf16, auto"):
        TrainConfig(precision="fp16")


def image_data(n: int, seed: int) -> TensorDataset:
    """8x8 pictures whose emotion distribution follows from their mean colour."""
    g = torch.Generator().manual_seed(seed)
    colour = torch.rand(n, 3, 1, 1, generator=g)
    x = colour + 0.2 * torch.rand(n, 3, 8, 8, generator=g)
    w = torch.randn(3, 7, generator=torch.Generator().manual_seed(99))
    return TensorDataset(x, torch.softmax(colour.flatten(1) @ w * 3.0, dim=1))


def make_cnn(seed: int = 0) -> nn.Module:
    seed_everything(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 7), nn.Softmax(dim=1))


def test_channels_last_trains_the_same_model_as_the_default_order(tmp_path: Path):
    config = TrainConfig(epochs=3, lr=0.02, batch_size=16)
    default, nhwc = make_cnn(), make_cnn()
    train(default, image_data(64, 1), image_data(32, 2), nn.functional.mse_loss, config, tmp_path / "nchw",
          log=lambda _: None)
    train(nhwc, image_data(64, 1), image_data(32, 2), nn.functional.mse_loss,
          TrainConfig(epochs=3, lr=0.02, batch_size=16, channels_last=True), tmp_path / "nhwc", log=lambda _: None)
    assert nhwc[0].weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(default.parameters(), nhwc.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bf16_training_keeps_float32_weights_and_learns(tmp_path: Path):
    train_data, val_data = image_data(256, 1), image_data(64, 2)
    model = make_cnn()
    result = train(model, train_data, val_data, nn.functional.mse_loss,
                   TrainConfig(epochs=12, lr=0.02, batch_size=32, precision="bf16", channels_last=True),
                   tmp_path, log=lambda _: None)
    assert result.precision == "bf16"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    truth = val_data.tensors[1].numpy()
    predicted = predict(model, val_data)
    assert predicted.dtype == torch.float32
    baseline = metrics.train_mean_baseline(train_data.tensors[1].numpy(), len(truth))
    assert metrics.chebyshev(truth, predicted.numpy()).mean() < 0.7 * metrics.chebyshev(truth, baseline).mean()


def test_auto_precision_is_bf16_only_where_the_device_has_bf16_units(monkeypatch):
    import emo_pipeline.core.train_loop as loop

    assert training_precision(TrainConfig(), "cpu") == "fp32"
    assert training_precision(TrainConfig(precision="bf16"), "cpu") == "bf16"
    monkeypatch.setattr(loop, "native_bf16", lambda device: False)
    assert training_precision(TrainConfig(precision="auto"), "cpu") == "fp32"
    monkeypatch.setattr(loop, "native_bf16", lambda device: True)
    assert training_precision(TrainConfig(precision="auto"), "cpu") == "bf16"


def test_native_bf16_reads_the_cpu_flags(monkeypatch, tmp_path: Path):
    import emo_pipeline.core.train_loop as loop

    cpuinfo = tmp_path / "cpuinfo"
    real_path = loop.Path
    monkeypatch.setattr(loop, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512bw\n")
    assert native_bf16("cpu") is False
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert native_bf16("cpu") is True
    cpuinfo.unlink()
    assert native_bf16("cpu") is False  # no /proc/cpuinfo (macOS, Windows): fp32
