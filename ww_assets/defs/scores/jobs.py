"""The job that reads and scores one image batch (what the ``new_image_batches`` sensor asks for)."""

import dagster as dg

score_image_batches = dg.define_asset_job(
    "score_image_batches",
    selection=dg.AssetSelection.assets("cutouts", "anomaly_scores", "latent_vectors"),
    description="Read one image batch's cutouts, then score them (anomaly_scores + latent_vectors).",
)
