"""MGRAL core: the pure algorithm and data model (no Prefect, MLflow or DVC imports)."""

__version__ = "0.1.0"
