""""More like this": the images nearest in latent space to one subject, with what the analysis knows of them."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ww_assets.analysis.latents import load_latents
from ww_assets.analysis.similarity import more_like_this
from ww_assets.storage import StorageLayout

__all__ = ["MoreLikeThis", "resolve_query", "find_similar", "safe_name"]

INFO_COLUMNS = ("image_id", "batch", "anomaly_score_sigma", "fraction", "subject_id", "label")


@dataclass
class MoreLikeThis:
    query: str
    rows: pd.DataFrame      # the query (rank 0) and its neighbours: image_id, rank, distance, batch, scores, ...
    n_neighbours: int


def resolve_query(layout: StorageLayout, subject_id: int | None, object_id: str | None) -> str:
    """The image to look around: ``object_id``, else the image of Zooniverse subject ``subject_id``, else the top
    machine anomaly."""
    if object_id:
        return str(object_id)
    if subject_id is not None:
        path = layout.analysis_file("subject_map")
        if path.exists():
            m = pd.read_parquet(path)
            hit = m[m["subject_id"].astype("int64") == int(subject_id)]
            if len(hit):
                return str(hit["image_id"].iloc[0])
        raise KeyError(f"subject {subject_id} is not a known Zooniverse subject (looked in {path}; materialise "
                       "consensus_vs_score after pulling the subjects)")
    path = layout.analysis_file("image_table")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialise consensus_vs_score first")
    table = pd.read_parquet(path)
    return str(table.sort_values("anomaly_score", ascending=False)["image_id"].iloc[0])


def find_similar(layout: StorageLayout, query: str, k: int = 16, metric: str = "euclidean") -> MoreLikeThis:
    latents = load_latents(layout)
    hits = more_like_this([query], latents.index["image_id"], latents.latents, k=k, metric=metric)
    info_path = layout.analysis_file("image_table")
    info = pd.read_parquet(info_path) if info_path.exists() else latents.index[["image_id", "batch"]]
    keep = [c for c in INFO_COLUMNS if c in info.columns]
    rows = pd.concat([pd.DataFrame({"image_id": [query], "rank": [0], "distance": [0.0]}),
                      hits[["image_id", "rank", "distance"]]], ignore_index=True)
    rows = rows.merge(info[keep], on="image_id", how="left")
    if "batch" not in rows.columns or rows["batch"].isna().any():
        rows = rows.drop(columns="batch", errors="ignore").merge(latents.index[["image_id", "batch"]],
                                                                 on="image_id", how="left")
    return MoreLikeThis(query, rows, len(hits))


def safe_name(image_id: str) -> str:
    """A file-name-safe form of an image id."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in image_id)
