"""latent_umap: the 2-d map of the latent space (``ww_assets.analysis.embedding``)."""

import time
from typing import Optional

import dagster as dg

from ww_assets.analysis.embedding import UMAPConfig, fit_umap, umap_frame
from ww_assets.analysis.latents import load_latents

from ww_assets.defs.automation import FOLLOW_INPUTS
from ww_assets.defs.pools import GPU_OP_TAGS, GPU_POOL
from ww_assets.defs.resources import StorageResource
from ww_assets.storage import write_parquet


class LatentUMAPConfig(dg.Config):
    """UMAP of all latent vectors (defaults: ``ww_assets.analysis.embedding.UMAPConfig``). ``backend``: auto |
    umap_learn | umap_learn_torch_knn | cuml (auto: cuML with a GPU when installed, exact GPU neighbours + umap-learn
    on a GPU, umap-learn on the CPU). ``init``: auto (spectral up to 200k points, PCA above) | spectral | pca |
    random. ``parallel``: umap-learn on all cores, not bit-reproducible."""

    n_neighbors: int = UMAPConfig.n_neighbors
    min_dist: float = UMAPConfig.min_dist
    metric: str = UMAPConfig.metric
    n_epochs: Optional[int] = UMAPConfig.n_epochs
    init: str = UMAPConfig.init
    seed: int = UMAPConfig.seed
    backend: str = UMAPConfig.backend
    parallel: bool = UMAPConfig.parallel


@dg.asset(kinds={"umap", "parquet"}, deps=["latent_vectors"], automation_condition=FOLLOW_INPUTS, pool=GPU_POOL, op_tags=GPU_OP_TAGS, description=(
    "UMAP of the 128-d latent vectors of every scored batch (scores/<batch>/latent_vectors.npy, ids from the same "
    "folder's anomaly_scores.csv). Writes analysis/latent_umap.parquet (image_id, batch, umap_x, umap_y); rows with "
    "non-finite latents or repeated ids go to latent_umap_dropped.parquet with the reason. Seeded."))
def latent_umap(context: dg.AssetExecutionContext, config: LatentUMAPConfig, storage: StorageResource):
    layout = storage.layout
    latents = load_latents(layout)
    if len(latents.dropped):
        context.log.warning(f"{len(latents.dropped)} latent rows dropped: "
                            f"{latents.dropped['reason'].value_counts().to_dict()}")
    started = time.monotonic()
    result = fit_umap(latents.latents, UMAPConfig(**config.model_dump()), log=context.log.info)
    frame = umap_frame(latents.index, result)
    write_parquet(frame, layout.analysis_file("latent_umap"))
    write_parquet(latents.dropped, layout.analysis_file("latent_umap_dropped"))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(len(frame)), "batches": int(frame["batch"].nunique()),
        "dropped_rows": len(latents.dropped), "backend": result.backend, "device": result.device,
        "init": result.init, "n_epochs": int(result.n_epochs), "seconds": round(time.monotonic() - started, 2),
        "stage_seconds": dg.MetadataValue.json({k: round(v, 2) for k, v in result.seconds.items()}),
        "path": dg.MetadataValue.path(str(layout.analysis_file("latent_umap")))})
