"""Image -> emotion: features (group `features`), the feature models, torch models and the ensemble
(group `image_models`), the stimuli-map models (group `esm`) and the score tables (group `evaluation`)."""

import dagster as dg

from emo_pipeline.defs.image_emotion import (
    ensemble,
    esm,
    evaluation,
    feature_models,
    features,
    patch_mlp,
    torch_models,
)

defs = dg.Definitions.merge(features.defs, feature_models.defs, torch_models.defs, patch_mlp.defs, esm.defs,
                            ensemble.defs, evaluation.defs)
