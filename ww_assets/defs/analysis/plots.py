"""plots: every figure of the analysis (``ww_assets.plotting.report``)."""

import time

import dagster as dg

from ww_assets.defs.automation import FOLLOW_INPUTS
from ww_assets.defs.metadata import png_markdown
from ww_assets.defs.resources import StorageResource
from ww_assets.plotting.report import make_plots


class PlotsConfig(dg.Config):
    """``gallery_size`` images per gallery; ``max_tags`` hashtags coloured on the map (the rest pooled)."""

    gallery_size: int = 16
    max_tags: int = 9


@dg.asset(kinds={"matplotlib"}, deps=["consensus_vs_score", "latent_umap", "cutouts"], automation_condition=FOLLOW_INPUTS, description=(
    "Every figure, as PNG under plots/ and shown here: the latent map coloured by anomaly score, by volunteer "
    "fraction, by top Talk hashtag (and by injected class on the sample); score distributions by consensus class; "
    "volunteer fraction vs anomaly score with binned means; ROC curves; the interest model over the map; galleries "
    "of top machine anomalies, top volunteer picks and both kinds of disagreement."))
def plots(context: dg.AssetExecutionContext, config: PlotsConfig, storage: StorageResource):
    started = time.monotonic()
    out = make_plots(storage.layout, config.gallery_size, config.max_tags, log=context.log.warning)
    metadata = {"figures": len(out), "folder": dg.MetadataValue.path(str(storage.layout.plots_dir)),
                "seconds": round(time.monotonic() - started, 2)}
    for name, path in out.items():
        metadata[name] = png_markdown(path, alt=name)
    return dg.MaterializeResult(metadata=metadata)
