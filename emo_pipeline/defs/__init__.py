"""The Dagster layer: assets, checks, resources and jobs over the library. Keep it thin."""
