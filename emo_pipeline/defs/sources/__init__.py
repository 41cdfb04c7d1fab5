"""Group `raw`: the three source data sets read into warehouse tables (`assets.py`), with the blocking
checks that keep a bad download from reaching the models (`checks.py`)."""

import dagster as dg

from emo_pipeline.defs.sources import assets, checks

defs = dg.Definitions(assets=[assets.emotion6, assets.emotion6_split, assets.emotionroi, assets.visual_genome],
                      asset_checks=checks.CHECKS)
