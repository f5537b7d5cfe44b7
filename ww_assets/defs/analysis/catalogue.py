"""catalogue: one row per scored image, as FITS and Parquet (``ww_assets.analysis.catalogue``)."""

import dagster as dg

from ww_assets.analysis.catalogue import CATALOGUE_COLUMNS, build_catalogue, write_catalogue
from ww_assets.analysis.tables import read_warehouse
from ww_assets.defs.automation import FOLLOW_INPUTS
from ww_assets.defs.metadata import table_metadata, table_schema
from ww_assets.defs.pools import DUCKDB_POOL
from ww_assets.defs.resources import StorageResource


def _subject_positions(layout):
    consensus, _ = read_warehouse(layout)
    if consensus is None or not {"image_id", "ra", "dec"} <= set(consensus.columns):
        return None
    return consensus[["image_id", "ra", "dec"]]


@dg.asset(
    automation_condition=FOLLOW_INPUTS,
    kinds={"fits", "parquet"},
    deps=["consensus_vs_score", "latent_umap", "similar_images", "cutouts", "anomaly_scores", "subject_consensus"],
    pool=DUCKDB_POOL,
    description=(
        "The catalogue: one row per scored image with object_id, ra, dec (float64 deg, ICRS), subject_id, batch; "
        "image, feature and anomaly scores, their sigma scores and ranks; shown, selected, the volunteer fraction and "
        "its Wilson interval; Talk comments and top hashtag; predicted interest; UMAP position; the nearest "
        "neighbours in latent space. Positions from the image batch's catalog.parquet, else the Zooniverse "
        "subject's metadata (read-only from the warehouse). Written as analysis/catalogue.parquet and "
        "analysis/catalogue.fits (units, column descriptions, frame, score formula and model in the header); "
        "`ww_assets.load('catalogue')` reads it."),
)
def catalogue(context: dg.AssetExecutionContext, storage: StorageResource):
    layout = storage.layout
    cat = build_catalogue(layout, subject_positions=_subject_positions(layout), log=context.log.warning)
    parquet_path, fits_path = write_catalogue(cat, layout)
    frame = cat.frame
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "dagster/column_schema": table_schema(frame, {k: v[2] for k, v in CATALOGUE_COLUMNS.items()}),
        "score_formula": cat.meta.get("SCOREFRM", ""), "score_family": cat.meta.get("SCOREFAM", ""),
        "model_fingerprint": cat.meta.get("MODELFP", ""), "frame": "ICRS (ra, dec float64 deg)",
        "images_with_position": int((frame["position_source"] != "none").sum()),
        "subjects": int(frame["subject_id"].notna().sum()),
        "preview": table_metadata(frame[["object_id", "ra", "dec", "anomaly_score_sigma", "fraction",
                                         "fraction_ci_low", "fraction_ci_high", "top_tag"]], max_rows=10, digits=6),
        "path": dg.MetadataValue.path(str(parquet_path)), "fits": dg.MetadataValue.path(str(fits_path)),
    })
