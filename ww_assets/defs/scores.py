"""Dagster layer for the 'scores' group: per-batch anomaly scores and latent vectors, their normalisation over
every batch, and (group 'analysis') how well the scores find the sample's injected oddities.

The score math is ``ww_assets.scores.anomaly``; the file formats are ``ww_assets.scores.release``; reading cutouts is
``ww_assets.images.cutouts``. This module only wires them to partitions, resources, config and metadata.
"""


import hashlib
import textwrap
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from ww_assets.images import cutouts as imaging
from ww_assets.scores.batches import score_cutouts
from ww_assets.scores import release
from ww_assets.defs.images import IMAGE_BATCHES, ImageSourceError, ImageSourceResource
from ww_assets.defs.metadata import png_markdown, table_markdown
from ww_assets.defs.resources import StorageResource
from ww_assets.storage import StorageLayout, atomic_dir, atomic_path


class AnomalyScoreConfig(dg.Config):
    """How the anomaly score is computed (recorded in score_config.json with every batch).

    formula: "hsc" (Storey-Fisher et al. 2021: L1 sums, anomaly = (1 - lam) * image + lam * feature) or
        "fanogan" (Schlegl et al. 2019: mean squared errors, anomaly = image + kappa * feature).
    refine_steps: 0 = one encoder pass (default, fast); the HSC reference refines z with 10 Adam steps
        (refine_lr 0.1) from the encoder's guess.
    precision: "auto" (bf16 autocast + channels-last on CUDA, fp32 on CPU), "fp32" or "bf16".
    device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    batch_size: images per forward pass. log_every: log progress every this many batches.
    """

    formula: str = "hsc"
    lam: float = 0.3
    kappa: float = 1.0
    refine_steps: int = 0
    refine_lr: float = 0.1
    batch_size: int = 1024
    precision: str = "auto"
    device: str = "auto"
    log_every: int = 16


def resolve_score_config(cfg: AnomalyScoreConfig):
    """(scoring.ScoreConfig, torch device) for this config on this machine."""
    from ww_assets.model.networks import resolve_device
    from ww_assets.scores.anomaly import ScoreConfig

    device = resolve_device(cfg.device)
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {cfg.precision!r}")
    score_cfg = ScoreConfig(formula=cfg.formula, lam=cfg.lam, kappa=cfg.kappa, refine_steps=cfg.refine_steps,
                            refine_lr=cfg.refine_lr, batch_size=cfg.batch_size, precision=precision,
                            channels_last=device.type == "cuda" and precision == "bf16")
    return score_cfg, device


def model_fingerprint(model_dir: Path) -> str:
    """A short hash of the three weight files (from card.json's SHA-256s when present)."""
    from ww_assets.model.checkpoints import find_checkpoint_files, read_card

    card = read_card(model_dir) or {}
    shas = [str((card.get("files") or {}).get(p, {}).get("sha256", "")) for p in ("generator", "discriminator",
                                                                                 "encoder")]
    if not all(shas):
        shas = []
        for part, path in sorted(find_checkpoint_files(model_dir).items()):
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            shas.append(f"{part}:{h.hexdigest()}")
    return hashlib.sha256("|".join(shas).encode()).hexdigest()[:16]


def _has_images(layout: StorageLayout, batch: str) -> bool:
    try:
        return len(imaging.load_cutouts(layout.images_dir(batch))[1]) > 0
    except imaging.ImagingError:
        return False


# --------------------------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------------------------

def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def score_histogram(values: np.ndarray, path: Path, title: str, xlabel: str, sigma_line: float | None = None) -> Path:
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    v = values[np.isfinite(values)]
    if v.size:
        ax.hist(v, bins=min(60, max(10, int(np.sqrt(v.size)))), color="C0", alpha=0.85)
        ax.axvline(float(np.median(v)), color="k", ls="--", lw=1, label=f"median {np.median(v):.4g}")
        if sigma_line is not None:
            ax.axvline(sigma_line, color="C3", ls=":", lw=1.5, label=f"{sigma_line:g}")
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("number of images (log scale)")
    ax.set_title("\n".join(textwrap.wrap(title, 72)), fontsize=9)
    return _save(fig, path)


def _summary(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=np.float64)
    if not v.size:
        return {"n": 0}
    p = np.percentile(v, [1, 50, 90, 99])
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "p01": float(p[0]), "p50": float(p[1]), "p90": float(p[2]), "p99": float(p[3]), "max": float(v.max())}


# --------------------------------------------------------------------------------------------------------------
# anomaly_scores + latent_vectors (per batch)
# --------------------------------------------------------------------------------------------------------------

@dg.multi_asset(
    specs=[
        dg.AssetSpec("anomaly_scores", group_name="scores", deps=["cutouts", "wgan"], kinds={"pytorch", "parquet"},
                     description=(
                         "Per image of one batch: image score (residual x - G(E(x))), feature score (residual of "
                         "the critic's features) and their weighted sum, the anomaly score; formula in the run "
                         "config and score_config.json. scores/<batch>/scores.parquet and, in the published "
                         "release's format, anomaly_scores.csv (image_identifier, image_score, feature_score, "
                         "anomaly_score). release-* batches are loaded from the published files, not re-scored.")),
        dg.AssetSpec("latent_vectors", group_name="scores", deps=["cutouts", "wgan"], kinds={"pytorch", "numpy"},
                     description=(
                         "The 128-d latent vector z of each image (the encoder's guess, or refined), "
                         "scores/<batch>/latent_vectors.npy float32 (N, 128), rows in the order of "
                         "anomaly_scores.csv.")),
    ],
    partitions_def=IMAGE_BATCHES,
    pool="gpu",
    can_subset=False,
    check_specs=[dg.AssetCheckSpec("scores_complete", asset="anomaly_scores",
                                   description="Every usable cutout has finite scores and a finite latent vector, "
                                               "in catalog order.")],
)
def score_batch(context: dg.AssetExecutionContext, config: AnomalyScoreConfig, storage: StorageResource,
                images: ImageSourceResource):
    batch = context.partition_key
    layout = storage.layout
    out_dir = layout.scores_dir(batch)
    run = images.release_run(batch) if release.is_release_batch(batch) else None
    if release.is_release_batch(batch) and run is None and not _has_images(layout, batch):
        raise ImageSourceError(f"{batch} is a published-release batch, but images.release = {images.release!r} "
                               "holds no CSV/npy pair of that name (and the batch has no cutouts)")
    n_quarantined = 0
    expected_ids = None
    if run is not None:
        context.log.info(f"{batch}: loading published scores {run.csv.name} + {run.npy.name} (no re-scoring)")
        table = release.read_release_run(run.csv, run.npy)
        record = {"source": "release", "release_name": images.release_dir().name, "csv": str(run.csv),
                  "npy": str(run.npy), "formula": "as published", "description": "published W&W release scores"}
        seconds, device_label, precision = 0.0, "none (loaded)", "as published"
    else:
        from ww_assets.model.checkpoints import load_wgan

        images_arr, catalog = imaging.load_cutouts(layout.images_dir(batch))
        n_quarantined = len(imaging.load_quarantine(layout.images_dir(batch)))
        expected_ids = catalog["image_id"].astype(str).to_numpy()
        score_cfg, device = resolve_score_config(config)
        if not layout.model_dir.exists():
            raise FileNotFoundError(f"no model at {layout.model_dir}: materialise `wgan` first")
        wgan = load_wgan(layout.model_dir, device=device)
        # progress is logged per chunk; chunks also bound the pinned host memory on CUDA (4 buffers)
        chunk = max(config.batch_size, min(config.batch_size * max(1, config.log_every), 8192))
        n = len(catalog)
        context.log.info(f"{batch}: scoring {n} images on {device} ({score_cfg.precision}, batch "
                         f"{score_cfg.batch_size}): {score_cfg.describe()}")

        def log(done: int, total: int, elapsed: float) -> None:
            context.log.info(f"{batch}: scored {done}/{total} images ({done / max(elapsed, 1e-9):,.0f} images/s)")

        img, feat, anom, latents, seconds = score_cutouts(wgan, images_arr, score_cfg, device, chunk, log)
        if n == 0:
            context.log.warning(f"{batch}: no usable images (all {n_quarantined} quarantined); writing empty tables")
        table = release.ScoreTable(expected_ids, img, feat, anom, latents)
        from ww_assets.model.networks import device_name

        device_label, precision = device_name(device), score_cfg.precision
        record = {"source": "model", **score_cfg.to_dict(), "model_dir": str(layout.model_dir),
                  "model_fingerprint": model_fingerprint(layout.model_dir), "device": device_label,
                  "images_per_second": round(n / seconds, 1) if seconds > 0 and n else None}
    record["score_family"] = release.score_family(record)
    with atomic_dir(out_dir) as tmp:
        release.write_scores_folder(tmp, batch, table, record)
        if len(table):
            score_histogram(table.anomaly_score, tmp / "anomaly_score_hist.png",
                            f"Anomaly scores of batch {batch} (n = {len(table)}): {record.get('description', '')}",
                            "anomaly score (model units; larger = more anomalous)")
    n = len(table)
    rate = n / seconds if seconds > 0 and n else None
    meta_scores = {
        "images_scored": dg.MetadataValue.int(n),
        "images_quarantined": dg.MetadataValue.int(n_quarantined),
        "formula": dg.MetadataValue.text(record.get("description", record.get("formula", ""))),
        "score_family": dg.MetadataValue.text(record["score_family"]),
        "device": dg.MetadataValue.text(device_label),
        "precision": dg.MetadataValue.text(precision),
        "seconds": dg.MetadataValue.float(round(seconds, 3)),
        "output_folder": dg.MetadataValue.path(str(out_dir)),
        **{f"{c}_summary": dg.MetadataValue.json(_summary(getattr(table, c))) for c in release.SCORE_COLUMNS},
    }
    if rate:
        meta_scores["images_per_second"] = dg.MetadataValue.float(round(rate, 1))
    if (out_dir / "anomaly_score_hist.png").exists():
        meta_scores["anomaly_score_histogram"] = png_markdown(out_dir / "anomaly_score_hist.png",
                                                              alt=f"anomaly score histogram, {batch}")
    norms = np.linalg.norm(table.latents, axis=1) if n else np.zeros(0)
    yield dg.MaterializeResult(asset_key="anomaly_scores", metadata=meta_scores)
    yield dg.MaterializeResult(asset_key="latent_vectors", metadata={
        "shape": dg.MetadataValue.text(f"{table.latents.shape[0]} x {table.latents.shape[1]} float32"),
        "latent_norm_summary": dg.MetadataValue.json(_summary(norms)),
        "path": dg.MetadataValue.path(str(out_dir / release.LATENTS_NPY)),
    })
    finite = bool(np.isfinite(table.latents).all()) and all(np.isfinite(getattr(table, c)).all()
                                                            for c in release.SCORE_COLUMNS)
    in_order = expected_ids is None or np.array_equal(table.image_ids.astype(str), expected_ids)
    yield dg.AssetCheckResult(check_name="scores_complete", asset_key="anomaly_scores", passed=finite and in_order,
                              metadata={"rows": n, "all_finite": finite, "catalog_order": in_order})


# --------------------------------------------------------------------------------------------------------------
# anomaly_scores_normalised (all batches)
# --------------------------------------------------------------------------------------------------------------

def collect_scores(layout: StorageLayout, batches: list[str]) -> tuple[pd.DataFrame, list[str], int]:
    """All scored batches' tables with their score family; (frame, batches without scores, duplicates dropped)."""
    frames, missing = [], []
    for batch in sorted(batches):
        folder = layout.scores_dir(batch)
        if not (folder / release.SCORES_PARQUET).exists():
            missing.append(batch)
            continue
        frame, _latents, cfg = release.read_scores_folder(folder)
        frames.append(frame.assign(score_family=cfg.get("score_family") or release.score_family(cfg)))
    if not frames:
        return pd.DataFrame(columns=[*release.SCORE_TABLE_COLUMNS, "score_family"]), missing, 0
    frame = pd.concat(frames, ignore_index=True)
    dup = frame.duplicated(subset=["score_family", "image_id"], keep="first")
    return frame.loc[~dup].reset_index(drop=True), missing, int(dup.sum())


@dg.asset(
    group_name="scores",
    deps=["anomaly_scores"],
    kinds={"pandas", "parquet"},
    description=(
        "Scores over every scored batch: sigma scores ((s - mean) / std, population std) for the image, feature "
        "and anomaly scores, and the anomaly rank (1 = most anomalous). Scores from different models, formulas "
        "or a published release are normalised separately (column score_family). scores/normalised.parquet. The "
        "HSC high-anomaly sample was feature_score_sigma > 3."
    ),
)
def anomaly_scores_normalised(context: dg.AssetExecutionContext, storage: StorageResource):
    layout = storage.layout
    batches = list(context.instance.get_dynamic_partitions(IMAGE_BATCHES.name))
    frame, missing, dropped = collect_scores(layout, batches)
    if frame.empty:
        raise RuntimeError(f"no scored image batches under {layout.root / 'scores'} "
                           f"({len(batches)} registered): materialise anomaly_scores first")
    if missing:
        context.log.warning(f"{len(missing)} registered batch(es) have no scores yet and are left out: "
                            + ", ".join(missing[:10]))
    if dropped:
        context.log.warning(f"{dropped} image(s) appear in more than one batch of one score family; kept the first")
    out = release.normalise_scores(frame)
    path = layout.root / "scores" / release.NORMALISED_FILE
    with atomic_path(path) as tmp:
        out.to_parquet(tmp, index=False)
    plot = score_histogram(out["feature_score_sigma"].to_numpy(), layout.root / "scores" / "feature_sigma_hist.png",
                           f"Feature score in sigma over {len(out)} images, {out['batch'].nunique()} batch(es)",
                           "feature score sigma ((s - mean) / std)", sigma_line=3.0)
    families = out["score_family"].value_counts().to_dict()
    if len(families) > 1:
        context.log.warning(f"{len(families)} score families (models / formulas / releases), normalised apart")
    high = int((out["feature_score_sigma"] > 3).sum())
    return dg.MaterializeResult(metadata={
        "rows": dg.MetadataValue.int(len(out)),
        "batches": dg.MetadataValue.int(int(out["batch"].nunique())),
        "batches_without_scores": dg.MetadataValue.int(len(missing)),
        "duplicates_dropped": dg.MetadataValue.int(dropped),
        "score_families": dg.MetadataValue.json({str(k): int(v) for k, v in families.items()}),
        "feature_sigma_gt_3": dg.MetadataValue.int(high),
        "feature_sigma_gt_3_fraction": dg.MetadataValue.float(round(high / len(out), 5)),
        "top_anomalies": table_markdown(out.sort_values("anomaly_rank")[
            ["image_id", "batch", "anomaly_score", "anomaly_score_sigma", "feature_score_sigma", "anomaly_rank"]], 10),
        "feature_sigma_histogram": png_markdown(plot, alt="feature score sigma histogram"),
        "path": dg.MetadataValue.path(str(path)),
    })


# --------------------------------------------------------------------------------------------------------------
# detection_quality (analysis): the only place the truth table is read
# --------------------------------------------------------------------------------------------------------------

def _detection_plot(metrics: pd.DataFrame, path: Path, title: str) -> Path:
    fig = _figure(9.5, 4.6)
    ax = fig.add_subplot()
    targets = list(dict.fromkeys(metrics["target"]))
    scores = list(dict.fromkeys(metrics["score"]))
    width = 0.8 / max(1, len(scores))
    x = np.arange(len(targets))
    for k, score in enumerate(scores):
        sub = metrics[metrics["score"] == score].set_index("target").reindex(targets)
        ax.bar(x + (k - (len(scores) - 1) / 2) * width, sub["auroc"], width, label=score.replace("_", " "))
    ax.axhline(0.5, color="0.4", ls="--", lw=1, label="chance")
    ax.axhline(0.9, color="C3", ls=":", lw=1, label="target 0.9")
    labels = [f"{t}\n(n={int(metrics[metrics['target'] == t]['n_pos'].iloc[0])})" for t in targets]
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("AUROC (target images vs normal images)")
    ax.set_xlabel("target: all injected, astrophysical, artifacts, then each injected class (number of images)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)


@dg.asset(
    group_name="analysis",
    deps=["anomaly_scores_normalised"],
    kinds={"scikitlearn", "parquet"},
    description=(
        "How well the machine's scores find the embedded sample's injected oddities: AUROC and average precision "
        "of the image, feature and anomaly scores for all injected images, astrophysical oddities, artifacts and "
        "each injected class (negatives: the normal images). Reads the sample's truth.csv, which nothing that "
        "scores ever reads; "
        "with real images (no truth) it records that there is nothing to evaluate. analysis/detection_quality.parquet."
    ),
)
def detection_quality(context: dg.AssetExecutionContext, storage: StorageResource, images: ImageSourceResource):
    layout = storage.layout
    truth_path = layout.sample_dir / "truth.csv"
    if images.source.strip().lower() != "sample" or not truth_path.exists():
        context.log.info("no truth table for these images (only the embedded sample has one): nothing to evaluate")
        return dg.MaterializeResult(metadata={"truth": dg.MetadataValue.text("none: real images have no truth table")})
    scores = pd.read_parquet(layout.root / "scores" / release.NORMALISED_FILE)
    truth = pd.read_csv(truth_path, dtype={"object_id": str})
    metrics = release.detection_metrics(scores, truth)
    out = layout.analysis_dir / "detection_quality.parquet"
    with atomic_path(out) as tmp:
        metrics.to_parquet(tmp, index=False)
    overall = metrics[metrics["target"] == "all_injected"].set_index("score")
    plot = _detection_plot(metrics, layout.plots_dir / "detection_quality.png",
                           f"Injected oddities found by each score ({int(overall['n_pos'].iloc[0])} injected, "
                           f"{int(overall['n_neg'].iloc[0])} normal images)")
    return dg.MaterializeResult(metadata={
        **{f"auroc_{s}": dg.MetadataValue.float(round(float(overall.loc[s, 'auroc']), 4)) for s in overall.index},
        **{f"ap_{s}": dg.MetadataValue.float(round(float(overall.loc[s, 'average_precision']), 4))
           for s in overall.index},
        "injected_images": dg.MetadataValue.int(int(overall["n_pos"].iloc[0])),
        "normal_images": dg.MetadataValue.int(int(overall["n_neg"].iloc[0])),
        "metrics": table_markdown(metrics.round(4), max_rows=60),
        "auroc_by_class": png_markdown(plot, alt="AUROC by injected class"),
        "path": dg.MetadataValue.path(str(out)),
    })


defs = dg.Definitions(assets=[score_batch, anomaly_scores_normalised, detection_quality])
