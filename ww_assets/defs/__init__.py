"""The thin Dagster layer: one module per asset group, each exposing ``defs`` (a ``dagster.Definitions``).

``ww_assets.definitions`` merges them and adds the shared resources (``storage``, ``duckdb``).
"""
