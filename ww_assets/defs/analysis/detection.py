"""detection_quality: how well the machine's scores find the embedded sample's injected oddities."""

import dagster as dg
import pandas as pd

from ww_assets.defs.automation import FOLLOW_INPUTS
from ww_assets.defs.metadata import png_markdown, table_markdown
from ww_assets.defs.resources import ImageSourceResource, StorageResource
from ww_assets.plotting.scores import detection_quality as detection_plot
from ww_assets.scores.evaluation import detection_metrics, read_truth
from ww_assets.storage import write_parquet


@dg.asset(deps=["anomaly_scores_normalised"], automation_condition=FOLLOW_INPUTS, kinds={"scikitlearn", "parquet"}, description=(
    "How well the machine's scores find the embedded sample's injected oddities: AUROC and average precision of the "
    "image, feature and anomaly scores for all injected images, astrophysical oddities, artifacts and each injected "
    "class (negatives: the normal images). Reads the sample's truth.csv, which nothing that scores ever reads; with "
    "real images (no truth) it records that there is nothing to evaluate. analysis/detection_quality.parquet."))
def detection_quality(context: dg.AssetExecutionContext, storage: StorageResource, images: ImageSourceResource):
    layout = storage.layout
    truth = read_truth(layout.truth_file) if images.is_sample else None
    if truth is None:
        context.log.info("no truth table for these images (only the embedded sample has one): nothing to evaluate")
        return dg.MaterializeResult(metadata={"truth": "none: real images have no truth table"})
    metrics = detection_metrics(pd.read_parquet(layout.normalised_scores_file), truth)
    write_parquet(metrics, layout.analysis_file("detection_quality"))
    overall = metrics[metrics["target"] == "all_injected"].set_index("score")
    plot = detection_plot(metrics, layout.plot_file("detection_quality"),
                          f"Injected oddities found by each score ({int(overall['n_pos'].iloc[0])} injected, "
                          f"{int(overall['n_neg'].iloc[0])} normal images)")
    return dg.MaterializeResult(metadata={
        **{f"auroc_{s}": round(float(overall.loc[s, "auroc"]), 4) for s in overall.index},
        **{f"ap_{s}": round(float(overall.loc[s, "average_precision"]), 4) for s in overall.index},
        "injected_images": int(overall["n_pos"].iloc[0]), "normal_images": int(overall["n_neg"].iloc[0]),
        "metrics": table_markdown(metrics.round(4), max_rows=60),
        "auroc_by_class": png_markdown(plot, alt="AUROC by injected class"),
        "path": dg.MetadataValue.path(str(layout.analysis_file("detection_quality")))})
