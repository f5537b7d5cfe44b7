"""Galaxy Zoo: Weird & Wonderful as Dagster assets.

The science lives in plain modules (``ww_assets.zooniverse``, ``ww_assets.consensus.build``, ``ww_assets.images.cutouts``,
``ww_assets.model.networks``, ``ww_assets.scores.anomaly`` ...) that import neither Dagster nor each other in circles; the
Dagster layer is ``ww_assets.defs`` and ``ww_assets.definitions``. See ARCHITECTURE.md.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``ww_assets.load`` without importing pandas (or anything else) until it is used
    if name == "load":
        from ww_assets.analysis.load import load

        return load
    raise AttributeError(f"module 'ww_assets' has no attribute {name!r}")
