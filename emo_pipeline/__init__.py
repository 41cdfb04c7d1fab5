"""emo_pipeline: from images to emotions and from emotions to images, as a Dagster code location.

The package root holds the library (readers, synthetic world, store, ...), which never imports
dagster; `emo_pipeline.defs` is the Dagster layer built on top of it.
"""

from emo_pipeline.core.home import emo_home
from emo_pipeline.core.offline import apply_offline_switches

__version__ = "0.1.0"

apply_offline_switches(emo_home().ultralytics)
