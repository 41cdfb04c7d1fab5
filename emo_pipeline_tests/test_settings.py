"""One home per setting: a model family's Dagster config is derived from its library dataclass."""

from dataclasses import dataclass, field

import dagster as dg
import pytest

from emo_pipeline.core.profiles import EMOTION_MODELS, emotion_objects_mlp_config
from emo_pipeline.core.train_loop import TrainConfig
from emo_pipeline.defs.image_emotion.torch_models import EmotionModelOverrides
from emo_pipeline.defs.shared.settings import apply_overrides, overrides_config
from emo_pipeline.image_emotion.training import EmotionModelConfig
from emo_pipeline.objects.emotion_to_objects import MLPConfig


@dataclass(frozen=True)
class Family:
    size: int = 32
    grid: tuple[float, ...] = (0.0, 0.1)
    training: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3))


def test_every_setting_of_the_dataclass_is_a_config_field_unset_by_default():
    config = overrides_config(Family, "FamilyOverrides")
    training_fields = set(TrainConfig.__dataclass_fields__)
    assert set(config.model_fields) == {"size", "grid"} | training_fields
    assert all(value is None for value in config().model_dump().values())
    # The image models' launchpad lists every field of EmotionModelConfig but the architecture itself.
    assert set(EmotionModelOverrides.model_fields) == (set(EmotionModelConfig.__dataclass_fields__)
                                                       - {"model", "training"}) | training_fields


def test_a_run_changes_only_what_it_sets_nested_training_settings_included():
    config = overrides_config(Family, "FamilyOverrides")(size=64, grid=[0.2], lr=0.5)
    settings = apply_overrides(Family(), config)
    assert settings == Family(size=64, grid=(0.2,), training=TrainConfig(epochs=3, lr=0.5))
    # The MLP keeps the profile's Adagrad settings when a run only shortens it.
    mlp = apply_overrides(emotion_objects_mlp_config("paper"),
                          overrides_config(MLPConfig, "MLPOverrides")(epochs=2))
    assert (mlp.training.epochs, mlp.training.optimizer, mlp.training.lr, mlp.training.lr_decay) == \
        (2, "adagrad", 0.005, 0.01)


def test_an_override_is_checked_by_the_dataclass_and_typed_by_dagster():
    with pytest.raises(ValueError, match="unknown loss"):
        apply_overrides(EMOTION_MODELS["demo"]["small_cnn"], EmotionModelOverrides(loss="hinge"))

    @dg.asset
    def model(config: EmotionModelOverrides) -> None:
        pass

    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.materialize([model], run_config={"ops": {"model": {"config": {"epochs": "many"}}}})
