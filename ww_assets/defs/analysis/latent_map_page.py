"""latent_map_page: the interactive latent-space map, one offline HTML page (``ww_assets.plotting.latent_map_page``)."""

import time

import dagster as dg

from ww_assets.defs.automation import FOLLOW_INPUTS
from ww_assets.defs.pools import GPU_OP_TAGS, GPU_POOL
from ww_assets.defs.resources import StorageResource
from ww_assets.plotting.latent_map_page import build_latent_map_page


class LatentMapPageConfig(dg.Config):
    """``thumbnail_px``: hover thumbnails' size (WebP, ~0.2-1 kB each). ``max_details``: points whose click shows
    image | reconstruction | residual map (~6 kB each; the most anomalous and the volunteers' favourites in turn).
    ``residual_maps``: draw the model's reconstruction and residual (off: the image alone). ``device``: auto
    (CUDA when present) | cpu | cuda. ``min_shown`` / ``max_tags``: as the ``plots`` asset's maps."""

    thumbnail_px: int = 48
    max_details: int = 500
    residual_maps: bool = True
    device: str = "auto"
    min_shown: int = 3
    max_tags: int = 9


@dg.asset(kinds={"bokeh", "html"}, deps=["latent_umap", "consensus_vs_score", "cutouts"],
          automation_condition=FOLLOW_INPUTS, pool=GPU_POOL, op_tags=GPU_OP_TAGS, description=(
              "The latent map as an interactive, self-contained HTML page (analysis/latent_map.html; Bokeh inlined, "
              "opens offline): every image at its UMAP position, coloured by anomaly score, volunteer fraction or "
              "top Talk hashtag (switchable); hover shows the cutout and its numbers, a click shows the image beside "
              "the model's reconstruction and residual map, with a survey-viewer link. Open the path in a browser."))
def latent_map_page(context: dg.AssetExecutionContext, config: LatentMapPageConfig, storage: StorageResource):
    from ww_assets.model.networks import resolve_device

    layout = storage.layout
    started = time.monotonic()
    page = build_latent_map_page(layout, thumb_px=config.thumbnail_px, max_details=config.max_details,
                                 residual_maps=config.residual_maps, device=resolve_device(config.device),
                                 min_shown=config.min_shown, max_tags=config.max_tags, log=context.log.info)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(page.path)), "points": page.n_points,
        "page_bytes": page.page_bytes, "page_mib": round(page.page_bytes / 2**20, 2),
        "thumbnails": page.n_thumbnails, "detail_images": page.n_details, "residual_maps": page.n_residual_maps,
        "colour_options": ", ".join(page.colour_options), "notes": dg.MetadataValue.md(
            "\n".join(f"- {n}" for n in page.notes) or "none"),
        "seconds": round(time.monotonic() - started, 2)})
