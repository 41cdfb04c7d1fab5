"""The Dagster layer, thin: one module or folder per stage of the library, each with its own
`Definitions` (assets and checks), the jobs, schedule and sensors in `automation`, and the pieces every
stage uses in `shared`. `emo_pipeline.definitions` merges them."""
