"""emo_pipeline: from images to emotions and from emotions to images, as a Dagster code location.

The library is one package per stage of the pipeline (`sources`, `image_emotion`, `detection`,
`datasets`, `objects`, `scenes`, with `storage`, `synthetic`, `models` and `core` beside them) and
never imports dagster; `emo_pipeline.defs` is the Dagster layer built on top of it, one module or
folder per stage, merged in `emo_pipeline.definitions`.
"""

from emo_pipeline.core.home import emo_home
from emo_pipeline.core.offline import apply_offline_switches

__version__ = "0.1.0"

apply_offline_switches(emo_home().ultralytics)
