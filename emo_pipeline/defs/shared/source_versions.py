"""The data version of a source table: the reader's code version and the content fingerprint of the
folder it read. The raw group's assets record it; `emo-pipeline demo` computes it again to decide
whether a data set needs reading at all."""

from pathlib import Path

import dagster as dg

from emo_pipeline.defs.shared.publisher import code_version
from emo_pipeline.sources import emotion6 as emotion6_source
from emo_pipeline.sources import emotionroi as emotionroi_source
from emo_pipeline.sources.fingerprints import content_fingerprint
from emo_pipeline.sources.visual_genome import aliases, reader, schemas, sql, streaming

# The code that turns each data set's files into tables: a change to it reads the data set again.
READER_CODE_VERSIONS = {
    "emotion6": code_version(emotion6_source, with_profile=False),
    "emotionroi": code_version(emotionroi_source, emotion6_source, with_profile=False),
    "visual_genome": code_version(reader, streaming, sql, aliases, schemas, with_profile=False),
}


def source_data_version(data_set: str, root: Path) -> dg.DataVersion:
    """What reading `root` with the data set's reader gives: its code version and the folder's content."""
    return dg.DataVersion(f"{READER_CODE_VERSIONS[data_set]}-{content_fingerprint(root).digest[:20]}")
