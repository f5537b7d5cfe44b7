"""Read what the pipeline wrote, by name: ``ww_assets.load("catalogue")`` returns a pandas DataFrame.

A name is an analysis file of ``ANALYSIS_FILES`` (``catalogue``, ``image_table``, ``consensus_vs_score``,
``latent_umap``, ``similar_images``, ``next_round_picks`` ...) or an asset name (``next_volunteer_round``,
``anomaly_scores_normalised``, ``anomaly_scores`` / ``cutouts`` / ``latent_vectors`` with or without a batch, the
consensus and raw Zooniverse tables, read-only from the warehouse). The storage root is ``root``, else
``WW_DATA_ROOT`` (``data/`` by default). The Dagster IO manager (``ww_assets.defs.loading``) calls this, so
``defs.load_asset_value("catalogue")`` returns the same frame.

No Dagster here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ww_assets.storage import ANALYSIS_FILES, StorageLayout

__all__ = ["load", "loadable_names", "ASSET_FILES", "WAREHOUSE_TABLES"]

#: asset name -> the analysis file it is read from (assets whose name is not their file's)
ASSET_FILES = {"next_volunteer_round": "next_round_picks", "plots": None}
#: asset name -> warehouse table (read-only)
WAREHOUSE_TABLES = {
    "image_exposures": "consensus.image_exposures", "volunteer_consensus": "consensus.volunteer_consensus",
    "talk_consensus": "consensus.talk_consensus", "subject_consensus": "consensus.subject_consensus",
    "zooniverse_subjects": "raw.subjects", "zooniverse_classifications": "raw.classifications",
    "talk_comments": "raw.talk_comments", "talk_tags": "raw.talk_tags",
}
_PER_BATCH = ("anomaly_scores", "cutouts", "latent_vectors")
_OTHER = ("anomaly_scores_normalised", "wgan", "plots")


def loadable_names() -> list[str]:
    return sorted({*ANALYSIS_FILES, *ASSET_FILES, *WAREHOUSE_TABLES, *_PER_BATCH, *_OTHER})


def _layout(root) -> StorageLayout:
    if root is None:
        from ww_assets import settings

        root = settings.get("WW_DATA_ROOT")
    return StorageLayout(root)


def _missing(path: Path, name: str, asset: str) -> FileNotFoundError:
    return FileNotFoundError(f"{name}: {path} does not exist; materialise the {asset!r} asset first")


_WRITER = {"image_table": "consensus_vs_score", "consensus_by_class": "consensus_vs_score",
           "interest_model": "consensus_vs_score", "subject_map": "consensus_vs_score",
           "latent_umap_dropped": "latent_umap", "next_round": "next_volunteer_round",
           "next_round_picks": "next_volunteer_round", "catalogue_fits": "catalogue",
           "latent_map_page": "latent_map_page"}


def _analysis_file(layout: StorageLayout, key: str) -> Any:
    path = layout.analysis_file(key)
    writer = _WRITER.get(key, key)
    if key == "next_round":
        path = path / "manifest.csv"
    if not path.exists():
        raise _missing(path, key, writer)
    if path.is_dir():
        frames = [pd.read_parquet(p).assign(query=p.stem) for p in sorted(path.glob("*.parquet"))]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"object_id": str})
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".fits":
        from astropy.table import Table

        return Table.read(path, hdu=1).to_pandas()
    return path


def _warehouse(layout: StorageLayout, name: str, table: str) -> pd.DataFrame:
    import duckdb

    if not layout.warehouse.exists():
        raise _missing(layout.warehouse, name, name)
    con = duckdb.connect(str(layout.warehouse), read_only=True)
    try:
        return con.execute(f"select * from {table}").df()
    except duckdb.CatalogException as exc:
        raise _missing(layout.warehouse, f"{name} ({table})", name) from exc
    finally:
        con.close()


def _per_batch(layout: StorageLayout, name: str, batch: str | None):
    from ww_assets.storage import LATENTS_FILE

    if name == "latent_vectors":
        if batch is None:
            raise ValueError("latent_vectors is per batch: load('latent_vectors', batch='<batch>')")
        path = layout.scores_dir(batch) / LATENTS_FILE
        if not path.exists():
            raise _missing(path, f"latent_vectors[{batch}]", "latent_vectors")
        import numpy as np

        return np.load(path)
    file_of = layout.scores_file if name == "anomaly_scores" else layout.catalog_file
    root = layout.scores_root if name == "anomaly_scores" else layout.images_root
    batches = [batch] if batch is not None else sorted(p.name for p in root.iterdir() if p.is_dir()
                                                       and not p.name.startswith(".")) if root.is_dir() else []
    paths = [file_of(b) for b in batches]
    have = [p for p in paths if p.exists()]
    if not have:
        raise _missing(paths[0] if paths else root, name if batch is None else f"{name}[{batch}]", name)
    return pd.concat([pd.read_parquet(p) for p in have], ignore_index=True)


def load(name: str, root: str | os.PathLike[str] | None = None, *, batch: str | None = None) -> Any:
    """What the pipeline wrote under ``name`` (see the module docstring); tables as pandas DataFrames.

    ``batch``: for the per-batch assets (``anomaly_scores``, ``cutouts``: all batches concatenated when None;
    ``latent_vectors``: required, an (N, 128) array). ``interest_model`` and ``wgan`` give dicts (the model's card),
    ``plots`` a dict of figure paths. A file not written yet raises FileNotFoundError naming the asset to
    materialise; an unknown name raises KeyError listing the known ones.
    """
    layout = _layout(root)
    if name in ASSET_FILES and ASSET_FILES[name]:
        return _analysis_file(layout, ASSET_FILES[name])
    if name in ANALYSIS_FILES:
        return _analysis_file(layout, name)
    if name in WAREHOUSE_TABLES:
        return _warehouse(layout, name, WAREHOUSE_TABLES[name])
    if name in _PER_BATCH:
        return _per_batch(layout, name, batch)
    if name == "anomaly_scores_normalised":
        if not layout.normalised_scores_file.exists():
            raise _missing(layout.normalised_scores_file, name, name)
        return pd.read_parquet(layout.normalised_scores_file)
    if name == "wgan":
        card = layout.model_dir / "card.json"
        if not card.exists():
            raise _missing(card, name, name)
        return json.loads(card.read_text())
    if name == "plots":
        if not layout.plots_dir.is_dir():
            raise _missing(layout.plots_dir, name, name)
        return {p.stem: p for p in sorted(layout.plots_dir.glob("*.png"))}
    raise KeyError(f"{name!r}: nothing of that name to load; known: {loadable_names()}")
