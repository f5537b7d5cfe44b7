"""The scores group: per-batch anomaly scores and latent vectors, and their normalisation over every batch.

The score is computed in ``ww_assets.scores.anomaly``, batches are fed to it by ``ww_assets.scores.batches``, and
the files are the published release's formats (``ww_assets.scores.release``).
"""

import dagster as dg
import numpy as np

from ww_assets.defs.automation import FOLLOW_INPUTS
from ww_assets.defs.images.partitions import image_batches
from ww_assets.defs.metadata import numeric_metadata, png_markdown, table_markdown
from ww_assets.defs.pools import GPU_OP_TAGS, GPU_POOL
from ww_assets.defs.resources import ImageSourceResource, StorageResource
from ww_assets.images.sources import ImageSourceError
from ww_assets.plotting.scores import score_histogram
from ww_assets.scores.anomaly import ScoreConfig
from ww_assets.scores.batches import distribution_summary, has_images, load_release_batch, score_batch_folder
from ww_assets.scores.normalise import HIGH_SIGMA, collect_scores, normalise_scores
from ww_assets.scores.release import SCORE_COLUMNS, is_release_batch, write_scores_folder
from ww_assets.storage import SCORE_HISTOGRAM_FILE, atomic_dir, atomic_path


class AnomalyScoreConfig(dg.Config):
    """How the anomaly score is computed (recorded in score_config.json with every batch); the defaults are
    ``ww_assets.scores.anomaly.ScoreConfig``'s.

    formula: "hsc" (the default; Storey-Fisher et al. 2021: L1 sums, anomaly = (1 - lam) * image + lam * feature),
        "local" (residuals in units of each pixel's noise; anomaly = the peak of the PSF-matched filter, so a
        compact oddity is not buried in 27,648 pixels; for a model that reconstructs) or "fanogan" (Schlegl et al. 2019: mean squared
        errors, anomaly = image + kappa * feature). ``ww_assets.scores.anomaly`` has the details.
    refine_steps: 0 = one encoder pass (fast); the HSC reference refines z with 10 Adam steps (refine_lr 0.1).
    precision: "auto" (bf16 autocast + channels-last on CUDA, fp32 on CPU), "fp32" or "bf16".
    device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    batch_size: images per forward pass. log_every: log progress every this many batches.
    """

    formula: str = ScoreConfig.formula
    lam: float = ScoreConfig.lam
    kappa: float = ScoreConfig.kappa
    refine_steps: int = ScoreConfig.refine_steps
    refine_lr: float = ScoreConfig.refine_lr
    batch_size: int = ScoreConfig.batch_size
    precision: str = "auto"
    device: str = "auto"
    log_every: int = 16

    def resolve(self):
        """(ScoreConfig, torch device) on this machine."""
        from ww_assets.model.networks import resolve_device

        device = resolve_device(self.device)
        precision = ("bf16" if device.type == "cuda" else "fp32") if self.precision == "auto" else self.precision
        cfg = ScoreConfig(formula=self.formula, lam=self.lam, kappa=self.kappa, refine_steps=self.refine_steps,
                          refine_lr=self.refine_lr, batch_size=self.batch_size, precision=precision,
                          channels_last=device.type == "cuda" and precision == "bf16")
        return cfg, device


@dg.multi_asset(
    specs=[
        dg.AssetSpec("anomaly_scores", deps=["cutouts", "wgan"], kinds={"pytorch", "parquet"}, description=(
            "Per image of one batch: image score (residual x - G(E(x))), feature score (residual of the critic's "
            "features) and their weighted sum, the anomaly score; the formula is in the run config and "
            "score_config.json. scores/<batch>/scores.parquet and, in the published release's format, "
            "anomaly_scores.csv. release-* batches are loaded from the published files, not re-scored.")),
        dg.AssetSpec("latent_vectors", deps=["cutouts", "wgan"], kinds={"pytorch", "numpy"}, description=(
            "The 128-d latent vector z of each image (the encoder's guess, or refined), "
            "scores/<batch>/latent_vectors.npy float32 (N, 128), rows in the order of anomaly_scores.csv.")),
    ],
    partitions_def=image_batches,
    pool=GPU_POOL, op_tags=GPU_OP_TAGS,
    can_subset=False,
    check_specs=[dg.AssetCheckSpec("scores_complete", asset="anomaly_scores", description=(
        "Every usable cutout has finite scores and a finite latent vector, in catalog order."))],
)
def score_batch(context: dg.AssetExecutionContext, config: AnomalyScoreConfig, storage: StorageResource,
                images: ImageSourceResource):
    batch, layout = context.partition_key, storage.layout
    run = images.release_run(batch) if is_release_batch(batch) else None
    n_quarantined, expected = 0, None
    if run is not None:
        context.log.info(f"{batch}: loading published scores {run.csv.name} + {run.npy.name} (no re-scoring)")
        table, record = load_release_batch(run, images.release_dir().name)
    else:
        if is_release_batch(batch) and not has_images(layout, batch):
            raise ImageSourceError(f"{batch} is a published-release batch, but images.release = {images.release!r} "
                                   "holds no CSV/npy pair of that name (and the batch has no cutouts)")
        score_cfg, device = config.resolve()
        context.log.info(f"{batch}: scoring on {device} ({score_cfg.precision}): {score_cfg.describe()}")

        def log(done: int, total: int, elapsed: float) -> None:
            context.log.info(f"{batch}: scored {done}/{total} images ({done / max(elapsed, 1e-9):,.0f} images/s)")

        chunk = max(config.batch_size, min(config.batch_size * max(1, config.log_every), 8192))
        table, record, n_quarantined, expected = score_batch_folder(layout, batch, score_cfg, device, chunk, log)
        if not len(table):
            context.log.warning(f"{batch}: no usable images (all {n_quarantined} quarantined); writing empty tables")
    out_dir = layout.scores_dir(batch)
    with atomic_dir(out_dir) as tmp:
        write_scores_folder(tmp, batch, table, record)
        if len(table):
            score_histogram(table.anomaly_score, tmp / SCORE_HISTOGRAM_FILE, f"Anomaly scores of batch {batch}",
                            "anomaly score (model units; larger = more anomalous)")
    n = len(table)
    meta = {"images_scored": n, "images_quarantined": n_quarantined,
            "formula": record.get("description", record.get("formula", "")), "score_family": record["score_family"],
            "device": record["device"], "precision": record.get("precision", ""), "seconds": record["seconds"],
            "output_folder": dg.MetadataValue.path(str(out_dir)),
            # numbers as numbers, so the UI charts them across materialisations ("anomaly_score/p99", ...)
            **{k: v for c in SCORE_COLUMNS for k, v in numeric_metadata(distribution_summary(getattr(table, c)),
                                                                         prefix=c).items()}}
    if record.get("images_per_second"):
        meta["images_per_second"] = float(record["images_per_second"])
    if (out_dir / SCORE_HISTOGRAM_FILE).exists():
        meta["anomaly_score_histogram"] = png_markdown(out_dir / SCORE_HISTOGRAM_FILE, alt=f"anomaly scores, {batch}")
    yield dg.MaterializeResult(asset_key="anomaly_scores", metadata=meta)
    norms = np.linalg.norm(table.latents, axis=1) if n else np.zeros(0)
    yield dg.MaterializeResult(asset_key="latent_vectors", metadata={
        "shape": f"{table.latents.shape[0]} x {table.latents.shape[1]} float32",
        **numeric_metadata(distribution_summary(norms), prefix="latent_norm"),
        "path": dg.MetadataValue.path(str(layout.latents_file(batch)))})
    finite = bool(np.isfinite(table.latents).all()) and all(np.isfinite(getattr(table, c)).all() for c in SCORE_COLUMNS)
    in_order = expected is None or np.array_equal(table.image_ids.astype(str), expected)
    yield dg.AssetCheckResult(check_name="scores_complete", asset_key="anomaly_scores", passed=finite and in_order,
                              metadata={"rows": n, "all_finite": finite, "catalog_order": in_order})


@dg.asset(deps=["anomaly_scores"], automation_condition=FOLLOW_INPUTS, kinds={"pandas", "parquet"}, description=(
    "Scores over every scored batch: sigma scores ((s - mean) / std, population std) for the image, feature and "
    "anomaly scores, and the anomaly rank (1 = most anomalous). Scores from different models, formulas or a "
    "published release are normalised separately (column score_family). scores/normalised.parquet. The HSC "
    "high-anomaly sample was feature_score_sigma > 3."))
def anomaly_scores_normalised(context: dg.AssetExecutionContext, storage: StorageResource):
    layout = storage.layout
    batches = list(context.instance.get_dynamic_partitions(image_batches.name))
    frame, missing, dropped = collect_scores(layout, batches)
    if frame.empty:
        raise RuntimeError(f"no scored image batches under {layout.scores_root} ({len(batches)} registered): "
                           "materialise anomaly_scores first")
    if missing:
        context.log.warning(f"{len(missing)} registered batch(es) have no scores yet and are left out: "
                            + ", ".join(missing[:10]))
    if dropped:
        context.log.warning(f"{dropped} image(s) appear in more than one batch of one score family; kept the first")
    out = normalise_scores(frame)
    with atomic_path(layout.normalised_scores_file) as tmp:
        out.to_parquet(tmp, index=False)
    plot = score_histogram(out["feature_score_sigma"].to_numpy(), layout.plot_file("feature_sigma_histogram"),
                           f"Feature score in sigma over {out['batch'].nunique()} batch(es)",
                           "feature score sigma ((s - mean) / std)", line=HIGH_SIGMA,
                           line_label=f"HSC high-anomaly cut ({HIGH_SIGMA:g} sigma)")
    families = out["score_family"].value_counts().to_dict()
    if len(families) > 1:
        context.log.warning(f"{len(families)} score families (models / formulas / releases), normalised apart")
    high = int((out["feature_score_sigma"] > HIGH_SIGMA).sum())
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(len(out)), "batches": int(out["batch"].nunique()),
        "batches_without_scores": len(missing), "duplicates_dropped": dropped,
        "score_families": dg.MetadataValue.json({str(k): int(v) for k, v in families.items()}),
        "feature_sigma_gt_3": high, "feature_sigma_gt_3_fraction": round(high / len(out), 5),
        "top_anomalies": table_markdown(out.sort_values("anomaly_rank")[
            ["image_id", "batch", "anomaly_score", "anomaly_score_sigma", "feature_score_sigma", "anomaly_rank"]], 10),
        "feature_sigma_histogram": png_markdown(plot, alt="feature score sigma histogram"),
        "path": dg.MetadataValue.path(str(layout.normalised_scores_file)),
    })
