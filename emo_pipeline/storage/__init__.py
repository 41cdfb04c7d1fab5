"""Where results live: the Parquet warehouse with its DuckDB catalog, model files with their cards, MLflow tracking."""
