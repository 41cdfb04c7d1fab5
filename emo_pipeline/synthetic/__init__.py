"""A synthetic world in the real data sets' formats: Emotion6, EmotionROI and Visual Genome.

One scene grammar (`grammar`) plants objects with known emotion affinities in pictures; the writers
turn the same scenes into folders a user could have downloaded, so the pipeline runs end to end
without data and tests can demand that models recover what was planted::

    from emo_pipeline.synthetic import write_world
    summary = write_world(Path("data/synthetic"), seed=0, scale="demo")
"""

from emo_pipeline.synthetic.world import SCALES, WorldSummary, planted_affinities, read_planted_vg, write_world

__all__ = ["SCALES", "WorldSummary", "planted_affinities", "read_planted_vg", "write_world"]
