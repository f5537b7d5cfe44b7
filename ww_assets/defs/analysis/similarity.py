"""similar_images (every image's nearest neighbours) and more_like_this (one subject's, on request)."""

import time
from typing import Optional

import dagster as dg
import numpy as np

from ww_assets.analysis.latents import load_latents
from ww_assets.analysis.more_like_this import find_similar, resolve_query, safe_name
from ww_assets.analysis.similarity import knn, neighbour_table
from ww_assets.defs.automation import FOLLOW_INPUTS
from ww_assets.defs.metadata import png_markdown, table_markdown
from ww_assets.defs.pools import GPU_OP_TAGS, GPU_POOL
from ww_assets.defs.resources import StorageResource
from ww_assets.images.store import CutoutStore
from ww_assets.plotting.galleries import gallery
from ww_assets.plotting.report import caption
from ww_assets.storage import write_parquet


class SimilarImagesConfig(dg.Config):
    """``k`` nearest neighbours per image in latent space (exact). ``near_duplicate_distance``: pairs closer than
    this are counted as near-duplicates in the metadata. ``backend``: auto | sklearn | torch."""

    k: int = 10
    metric: str = "euclidean"
    backend: str = "auto"
    near_duplicate_distance: float = 0.05


@dg.asset(kinds={"pytorch", "parquet"}, deps=["latent_vectors"], automation_condition=FOLLOW_INPUTS, pool=GPU_POOL, op_tags=GPU_OP_TAGS,
          check_specs=[dg.AssetCheckSpec("neighbours_complete", asset="similar_images", description=(
              "Every image has k neighbours, none of them itself, distances ascending."))],
          description=("The k nearest neighbours of every image in latent space (exact search; GPU when present). "
                       "Writes analysis/similar_images.parquet: image_id, rank (1..k), neighbour_id, distance."))
def similar_images(context: dg.AssetExecutionContext, config: SimilarImagesConfig, storage: StorageResource):
    layout = storage.layout
    latents = load_latents(layout)
    n = len(latents.index)
    k = min(config.k, n - 1)
    started = time.monotonic()
    res = knn(latents.latents, k, metric=config.metric, backend=config.backend)
    table = neighbour_table(latents.index["image_id"], res)
    write_parquet(table, layout.analysis_file("similar_images"))
    near = table[(table["rank"] == 1) & (table["distance"] < config.near_duplicate_distance)]
    yield dg.MaterializeResult(metadata={
        "images": n, "k": k, "backend": f"{res.backend} on {res.device}",
        "seconds": round(time.monotonic() - started, 2),
        "median_nearest_distance": float(np.median(res.distances[:, 0])),
        "images_with_near_duplicate": len(near), "preview": table_markdown(table.head(3 * k))})
    self_hits = int((res.indices == np.arange(n)[:, None]).sum())
    ascending = bool((np.diff(res.distances, axis=1) >= -1e-6).all())
    yield dg.AssetCheckResult(check_name="neighbours_complete",
                              passed=bool(self_hits == 0 and ascending and res.indices.shape == (n, k)),
                              metadata={"self_neighbours": self_hits, "ascending": ascending})


class MoreLikeThisConfig(dg.Config):
    """Ask for images like one subject: give ``subject_id`` (Zooniverse) or ``object_id`` (survey id); with
    neither, the top machine anomaly is used. ``k`` neighbours are returned as a gallery."""

    subject_id: Optional[int] = None
    object_id: Optional[str] = None
    k: int = 16
    metric: str = "euclidean"


@dg.asset(kinds={"matplotlib", "parquet"}, deps=["latent_vectors", "consensus_vs_score", "cutouts"], description=(
    "'More like this': the k images nearest in latent space to one subject (config subject_id or object_id), as a "
    "gallery (plots/more_like_this/<image_id>.png) and a table (analysis/more_like_this/<image_id>.parquet). "
    "Launch it from the Launchpad (job more_like_this_job) with the subject you are curious about."))
def more_like_this(context: dg.AssetExecutionContext, config: MoreLikeThisConfig, storage: StorageResource):
    layout = storage.layout
    found = find_similar(layout, resolve_query(layout, config.subject_id, config.object_id), config.k, config.metric)
    imgs, present = CutoutStore(layout).stack(found.rows)
    captions = [("QUERY " if r["rank"] == 0 else f"#{r['rank']} ")
                + caption(r, "distance", "anomaly_score_sigma", "fraction", "label") for _, r in found.rows.iterrows()]
    name = safe_name(found.query)
    png = gallery(imgs, captions, layout.plots_dir / "more_like_this" / f"{name}.png", ncols=6,
                  title=f"More like {found.query}: nearest {found.n_neighbours} images in latent space "
                        f"({config.metric} distance)")
    write_parquet(found.rows, layout.analysis_file("more_like_this") / f"{name}.parquet")
    return dg.MaterializeResult(metadata={
        "query_image_id": found.query, "neighbours": found.n_neighbours,
        "missing_cutouts": int(len(present) - sum(present)),
        "gallery": png_markdown(png, alt=f"more like {found.query}"), "table": table_markdown(found.rows)})


more_like_this_job = dg.define_asset_job(
    "more_like_this_job", selection=["more_like_this"],
    description="Find images like one subject: set subject_id or object_id in the more_like_this config.")
