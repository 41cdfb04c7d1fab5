"""One home per setting: a model family's Dagster config is derived from its library dataclass."""

from dataclasses import dataclass, field, fields

import dagster as dg
import pytest

from emo_pipeline.core.profiles import (
    CLASSIFIERS,
    EMOTION_MODELS,
    dataset_b_images,
    emotion_model_config,
    emotion_objects_mlp_config,
    esm_model_config,
    esm_resnet_config,
    feature_config,
)
from emo_pipeline.core.train_loop import TrainConfig
from emo_pipeline.defs.image_emotion.esm import ESMModelOverrides, ESMResNetOverrides
from emo_pipeline.defs.image_emotion.features import FeatureTableConfig
from emo_pipeline.defs.image_emotion.torch_models import EmotionModelOverrides
from emo_pipeline.defs.shared.settings import apply_overrides, overrides_config
from emo_pipeline.image_emotion.esm import ESMConfig
from emo_pipeline.image_emotion.features import FAMILIES, PAPER_FAMILIES
from emo_pipeline.image_emotion.training import EmotionModelConfig, recipe_summary
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
    assert set(EmotionModelOverrides.model_fields) == ({f.name for f in fields(EmotionModelConfig)}
                                                       - {"model", "training"}) | training_fields
    assert "recipe" in EmotionModelOverrides.model_fields


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


# --- recipes: `paper` (the paper's procedure) and `improved` (this project's additions) -------------------

PAPER_RECIPE = {"augment": False, "output_bias": "default", "output_weight_scale": 1.0, "clip_grid": (0.0,)}
IMPROVED_RECIPE = {"augment": True, "output_bias": "train_mean", "output_weight_scale": 0.0,
                   "clip_grid": (0.0, 0.005, 0.01, 0.02, 0.03, 0.05)}


def _recipe_settings(settings) -> dict:
    return {name: getattr(settings, name) for name in PAPER_RECIPE}


def test_the_paper_profile_trains_every_image_model_with_the_papers_recipe(monkeypatch):
    monkeypatch.setenv("EMO_PROFILE", "paper")
    for name in EMOTION_MODELS["paper"]:
        settings = emotion_model_config(name)  # EMO_PROFILE picks the profile
        assert settings.recipe == "paper" and _recipe_settings(settings) == PAPER_RECIPE, name
        assert settings.pretrained == "auto" and recipe_summary(settings) == "paper", name
    # The learning rates the paper states (§3.1): Adam 1e-3 for the small CNN, 1e-4 for AlexNet.
    assert emotion_model_config("small_cnn_classifier").training.lr == 1e-3
    assert emotion_model_config("small_cnn_classifier").training.batch_size == 16
    assert emotion_model_config("alexnet").training.lr == 1e-4
    assert {emotion_model_config(n).loss for n in EMOTION_MODELS["paper"] if n not in CLASSIFIERS} == {"mse"}
    fcn = esm_model_config("esm_fcn8s_64")
    assert (fcn.recipe, fcn.mirror, fcn.output_bias) == ("paper", False, "default")
    assert esm_resnet_config().recipe == "paper" and _recipe_settings(esm_resnet_config()) == PAPER_RECIPE
    assert dataset_b_images() == 2000


def test_the_demo_profile_uses_the_improved_recipe(monkeypatch):
    monkeypatch.setenv("EMO_PROFILE", "demo")
    for name in EMOTION_MODELS["demo"]:
        assert _recipe_settings(emotion_model_config(name)) == IMPROVED_RECIPE, name
    assert (esm_model_config("esm_fcn8s_32").mirror, esm_model_config("esm_fcn8s_32").output_bias) == \
        (True, "train_mean")
    assert _recipe_settings(esm_resnet_config()) == IMPROVED_RECIPE
    assert dataset_b_images() == 0  # every image


@pytest.mark.parametrize("overrides, settings_of", [
    (EmotionModelOverrides, lambda profile: EMOTION_MODELS[profile]["resnet18"]),
    (ESMResNetOverrides, esm_resnet_config),
])
def test_a_recipe_override_switches_every_setting_it_bundles(overrides, settings_of):
    to_paper = apply_overrides(settings_of("demo"), overrides(recipe="paper"))
    assert to_paper.recipe == "paper" and _recipe_settings(to_paper) == PAPER_RECIPE
    assert to_paper.training == settings_of("demo").training  # the rest of the profile stays
    to_improved = apply_overrides(settings_of("paper"), overrides(recipe="improved"))
    assert _recipe_settings(to_improved) == IMPROVED_RECIPE
    # A setting given beside the recipe wins over it, and the summary says so.
    mixed = apply_overrides(settings_of("demo"), overrides(recipe="paper", augment=True, clip_grid=[0.0, 0.01]))
    assert (mixed.augment, mixed.clip_grid, mixed.output_bias) == (True, (0.0, 0.01), "default")
    assert recipe_summary(mixed) == "paper, except augment=True, clip_grid=(0.0, 0.01)"


def test_the_fcn_recipe_override():
    demo = esm_model_config("esm_fcn8s_64", "demo")
    paper = apply_overrides(demo, ESMModelOverrides(recipe="paper"))
    assert (paper.recipe, paper.mirror, paper.output_bias, paper.trunk_width) == ("paper", False, "default", 16)
    assert ESMConfig(recipe="paper", mirror=True).mirror is True


def test_an_unknown_recipe_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"EmotionModelConfig.recipe: 'fancy' is not a recipe; choose one of "
                                         r"paper, improved"):
        apply_overrides(EMOTION_MODELS["demo"]["small_cnn"], EmotionModelOverrides(recipe="fancy"))
    with pytest.raises(ValueError, match="ESMConfig.recipe"):
        ESMConfig(recipe="fancy")


def test_a_crop_share_outside_the_picture_is_refused_through_the_overrides():
    compact = EMOTION_MODELS["demo"]["compact_cnn"]
    assert apply_overrides(compact, EmotionModelOverrides(crop_scale=0.8)).crop_scale == 0.8
    with pytest.raises(ValueError, match=r"crop_scale must lie in \[0, 1\], not 1.5"):
        apply_overrides(compact, EmotionModelOverrides(crop_scale=1.5))


def test_a_recipe_run_config_reaches_the_settings_through_dagster():
    seen = {}

    @dg.asset
    def model(config: EmotionModelOverrides) -> None:
        seen["settings"] = apply_overrides(EMOTION_MODELS["demo"]["small_cnn"], config)

    result = dg.materialize([model], run_config={"ops": {"model": {"config": {"recipe": "paper", "epochs": 3}}}})
    assert result.success
    assert _recipe_settings(seen["settings"]) == PAPER_RECIPE and seen["settings"].training.epochs == 3


def test_the_paper_profile_computes_the_papers_feature_families_and_the_demo_every_family():
    assert feature_config("paper").families == PAPER_FAMILIES == ("glcm", "ciecam02")
    assert feature_config("demo").families == FAMILIES
    # `families` is one more setting of FeatureConfig: the launchpad lists it, a run may narrow it.
    narrowed = apply_overrides(feature_config("demo"), FeatureTableConfig(families=["glcm", "lbp"], hog_size=32))
    assert narrowed.families == ("glcm", "lbp") and narrowed.hog_size == 32
    assert narrowed.glcm_size == feature_config("demo").glcm_size
    with pytest.raises(ValueError, match="families"):
        apply_overrides(feature_config("demo"), FeatureTableConfig(families=["colour"]))
