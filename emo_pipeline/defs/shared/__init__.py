"""Dagster pieces every stage uses: resources, asset metadata, the trained-model publisher, check
factories and the GPU pool. The stage modules of `defs/` import from here and from the library only."""
