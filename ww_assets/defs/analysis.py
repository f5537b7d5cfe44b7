"""Dagster layer for the 'analysis' group: the latent map, similarity search, the human-vs-machine comparison,
the figures, and the next volunteer round.

Every asset reads the files the upstream groups wrote under the storage root (never in-memory inputs), so they
run under the multiprocess executor; only ``consensus_vs_score`` opens the DuckDB warehouse (read-only, in the
``duckdb`` pool so it never meets a writer) and leaves a per-image table, ``analysis/image_table.parquet``, that
the figures, "more like this" and the next round read.
"""


import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import dagster as dg
import numpy as np
import pandas as pd

from ww_assets.analysis import comparison
from ww_assets.analysis import embedding
from ww_assets.analysis import next_round
from ww_assets.plotting import figures as plotting
from ww_assets.analysis import similarity
from ww_assets.defs.metadata import png_markdown, table_markdown
from ww_assets.defs.resources import StorageResource
from ww_assets.storage import StorageLayout, atomic_path

GROUP = "analysis"
SCORE_COLUMNS = list(comparison.SCORE_COLUMNS)

# files under <root>/analysis
UMAP_FILE = "latent_umap.parquet"
UMAP_DROPPED_FILE = "latent_umap_dropped.parquet"
SIMILAR_FILE = "similar_images.parquet"
IMAGE_TABLE_FILE = "image_table.parquet"
COMPARISON_FILE = "consensus_vs_score.parquet"
BY_CLASS_FILE = "consensus_by_class.parquet"
MODEL_FILE = "interest_model.json"
SUBJECT_MAP_FILE = "subject_map.parquet"
NEXT_ROUND_DIR = "next_round"
NEXT_ROUND_PICKS = "next_round_picks.parquet"
MORE_LIKE_THIS_DIR = "more_like_this"


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def _write_json(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))


def _need(path: Path, asset: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialise {asset} first")
    return path


# --------------------------------------------------------------------------------------------------------------
# Reading upstream outputs
# --------------------------------------------------------------------------------------------------------------


def read_scores(layout: StorageLayout, score_family: str | None = None, log=None) -> pd.DataFrame:
    """Scores of all batches: ``scores/normalised.parquet`` when present, else the per-batch ``scores.parquet``
    files with sigma scores computed here over all of them.

    Scores of different models/formulas (``score_family``) are not on one scale and the same image may appear
    once per family: one family is compared at a time, ``score_family`` or else the one covering most images.
    """
    normalised = layout.root / "scores" / "normalised.parquet"
    if normalised.exists():
        frame = pd.read_parquet(normalised)
        if "score_family" in frame.columns and frame["score_family"].nunique() > 1:
            counts = frame["score_family"].value_counts()
            family = score_family or str(counts.index[0])
            if family not in counts.index:
                raise ValueError(f"score_family {family!r} not in {normalised} (families: {list(counts.index)})")
            if log:
                log(f"{len(counts)} score families in {normalised}; comparing {family!r} ({counts[family]} images)")
            frame = frame[frame["score_family"] == family].reset_index(drop=True)
    else:
        parts = [pd.read_parquet(layout.scores_dir(b) / "scores.parquet") for b in embedding.score_batches(layout)
                 if (layout.scores_dir(b) / "scores.parquet").exists()]
        if not parts:
            raise FileNotFoundError(f"no scores under {layout.root / 'scores'}: materialise anomaly_scores first")
        frame = pd.concat(parts, ignore_index=True)
    frame["image_id"] = frame["image_id"].astype(str)
    for col in SCORE_COLUMNS:
        sig = f"{col}_sigma"
        if sig not in frame.columns:
            v = frame[col].astype(float)
            frame[sig] = (v - v.mean()) / (v.std(ddof=0) or 1.0)
    return frame


def read_warehouse(layout: StorageLayout) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """``consensus.subject_consensus`` and (subject_id, object_id) from ``raw.subjects``, read-only."""
    import duckdb

    if not layout.warehouse.exists():
        return None, None
    wanted = ["subject_id", "image_id", "object_id", "ra", "dec", "image_ref", "shown", "selected", "fraction",
              "ci_low", "ci_high", "comments", "commenters", "top_tag", "top_tag_share"]
    try:
        con = duckdb.connect(str(layout.warehouse), read_only=True)
    except duckdb.IOException as exc:
        raise RuntimeError(f"cannot open {layout.warehouse} read-only: {exc}. Another process holds it for writing "
                           "(assets that touch the warehouse belong in the 'duckdb' pool)") from exc
    try:
        cols = con.execute("select table_schema, table_name, column_name from information_schema.columns").df()

        def columns(schema, table):
            return set(cols[(cols.table_schema == schema) & (cols.table_name == table)]["column_name"])

        consensus = subjects = None
        have = columns("consensus", "subject_consensus")
        if have:
            sel = ", ".join(f'"{c}"' for c in wanted if c in have)
            consensus = con.execute(f"select {sel} from consensus.subject_consensus").df()
        have = columns("raw", "subjects")
        if {"subject_id", "object_id"} <= have:
            subjects = con.execute("select distinct subject_id, cast(object_id as varchar) as image_id "
                                   "from raw.subjects where object_id is not null").df()
        return consensus, subjects
    finally:
        con.close()


def read_truth(layout: StorageLayout) -> pd.DataFrame | None:
    path = layout.sample_dir / "truth.csv"
    if not path.exists():
        return None
    t = pd.read_csv(path, dtype={"object_id": str})
    for col in ("is_odd", "is_artifact"):
        if col in t.columns and t[col].dtype == object:
            t[col] = t[col].astype(str).str.lower().eq("true")
    if {"is_odd", "is_artifact"} <= set(t.columns):
        t["kind"] = np.where(t["is_artifact"], "artifact", np.where(t["is_odd"], "oddity", "normal"))
    return t


class CutoutReader:
    """Cutouts by (batch, image_id) from ``images/<batch>/cutouts.npy`` + ``catalog.parquet`` (memory-mapped)."""

    def __init__(self, layout: StorageLayout):
        self.layout = layout
        self._batches: dict[str, tuple[np.ndarray, dict[str, int]] | None] = {}

    def _batch(self, batch: str):
        if batch not in self._batches:
            folder = self.layout.images_dir(batch)
            npy, cat = folder / "cutouts.npy", folder / "catalog.parquet"
            if npy.exists() and cat.exists():
                catalog = pd.read_parquet(cat, columns=["image_id", "row"])
                rows = dict(zip(catalog["image_id"].astype(str), catalog["row"].astype(int)))
                self._batches[batch] = (np.load(npy, mmap_mode="r"), rows)
            else:
                self._batches[batch] = None
        return self._batches[batch]

    def get(self, batch: str, image_id: str) -> np.ndarray | None:
        b = self._batch(str(batch))
        if b is None or str(image_id) not in b[1]:
            return None
        return np.asarray(b[0][b[1][str(image_id)]])

    def require(self, batch: str, image_id: str) -> np.ndarray:
        img = self.get(batch, image_id)
        if img is None:
            raise FileNotFoundError(f"no cutout for image {image_id} of batch {batch} under "
                                    f"{self.layout.images_dir(str(batch))} (materialise cutouts for that batch)")
        return img

    def stack(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[bool]]:
        """Images of the frame's rows (grey placeholders where a cutout is missing) and which ones were found."""
        imgs, found = [], []
        for b, i in zip(frame["batch"], frame["image_id"]):
            img = self.get(b, i)
            found.append(img is not None)
            imgs.append(img if img is not None else np.full((3, 96, 96), 128, np.uint8))
        return (np.stack(imgs) if imgs else np.zeros((0, 3, 96, 96), np.uint8)), found


def _caption(row, *fields: str) -> str:
    """Image id, then machine sigma / volunteer fraction / distance, then the injected label (sample) if any."""
    numbers, label = [], None
    for f in fields:
        v = row.get(f)
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            continue
        if f == "anomaly_score_sigma":
            numbers.append(f"anom {v:+.1f}\u03c3")
        elif f == "fraction":
            numbers.append(f"vol {v:.2f}")
        elif f == "distance":
            numbers.append(f"d {v:.2f}")
        elif f == "label":
            label = str(v)
    return "\n".join([str(row["image_id"]), " ".join(numbers)] + ([label] if label else []))


# --------------------------------------------------------------------------------------------------------------
# latent_umap
# --------------------------------------------------------------------------------------------------------------


class LatentUMAPConfig(dg.Config):
    """UMAP of all latent vectors. ``backend``: auto | umap_learn | umap_learn_torch_knn | torch | cuml
    (auto: cuML or torch on a GPU, umap-learn on the CPU). ``init``: auto (spectral up to 200k points, PCA above) |
    spectral | pca | random. ``parallel``: umap-learn on all cores, not bit-reproducible."""

    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "euclidean"
    n_epochs: Optional[int] = None
    init: str = "auto"
    seed: int = 20211
    backend: str = "auto"
    parallel: bool = False


@dg.asset(
    group_name=GROUP,
    kinds={"umap", "parquet"},
    deps=["latent_vectors"],
    pool="gpu",
    description=(
        "UMAP of the 128-d latent vectors of every scored batch, read from scores/<batch>/latent_vectors.npy with "
        "ids from the same folder's anomaly_scores.csv. Writes analysis/latent_umap.parquet (image_id, batch, "
        "umap_x, umap_y); rows with non-finite latents or repeated ids go to latent_umap_dropped.parquet with "
        "the reason. Seeded; GPU (torch) when present, umap-learn on the CPU."
    ),
)
def latent_umap(context: dg.AssetExecutionContext, config: LatentUMAPConfig, storage: StorageResource):
    layout = storage.layout
    latents = embedding.load_latents(layout)
    if len(latents.dropped):
        context.log.warning(f"{len(latents.dropped)} latent rows dropped: "
                            f"{latents.dropped['reason'].value_counts().to_dict()}")
    cfg = embedding.UMAPConfig(n_neighbors=config.n_neighbors, min_dist=config.min_dist, metric=config.metric,
                               n_epochs=config.n_epochs, init=config.init, seed=config.seed, backend=config.backend,
                               parallel=config.parallel)
    started = time.monotonic()
    result = embedding.fit_umap(latents.latents, cfg, log=context.log.info)
    frame = embedding.umap_frame(latents.index, result)
    _write_parquet(frame, layout.analysis_dir / UMAP_FILE)
    _write_parquet(latents.dropped, layout.analysis_dir / UMAP_DROPPED_FILE)
    return dg.MaterializeResult(metadata={
        "images": dg.MetadataValue.int(len(frame)),
        "batches": dg.MetadataValue.int(int(frame["batch"].nunique())),
        "dropped_rows": dg.MetadataValue.int(len(latents.dropped)),
        "backend": dg.MetadataValue.text(result.backend),
        "device": dg.MetadataValue.text(result.device),
        "init": dg.MetadataValue.text(result.init),
        "n_epochs": dg.MetadataValue.int(result.n_epochs),
        "seconds": dg.MetadataValue.float(round(time.monotonic() - started, 2)),
        "stage_seconds": dg.MetadataValue.json({k: round(v, 2) for k, v in result.seconds.items()}),
        "path": dg.MetadataValue.path(str(layout.analysis_dir / UMAP_FILE)),
    })


# --------------------------------------------------------------------------------------------------------------
# similar_images and "more like this"
# --------------------------------------------------------------------------------------------------------------


class SimilarImagesConfig(dg.Config):
    """``k`` nearest neighbours per image in latent space (exact). ``near_duplicate_distance``: pairs closer than
    this are counted as near-duplicates in the metadata. ``backend``: auto | sklearn | torch."""

    k: int = 10
    metric: str = "euclidean"
    backend: str = "auto"
    near_duplicate_distance: float = 0.05


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch", "parquet"},
    deps=["latent_vectors"],
    pool="gpu",
    check_specs=[dg.AssetCheckSpec("neighbours_complete", asset="similar_images",
                                   description="Every image has k neighbours, none of them itself, distances "
                                               "ascending.")],
    description=(
        "The k nearest neighbours of every image in latent space (exact search; GPU when present). Writes "
        "analysis/similar_images.parquet: image_id, rank (1..k), neighbour_id, distance."
    ),
)
def similar_images(context: dg.AssetExecutionContext, config: SimilarImagesConfig, storage: StorageResource):
    layout = storage.layout
    latents = embedding.load_latents(layout)
    n = len(latents.index)
    k = min(config.k, n - 1)
    started = time.monotonic()
    res = similarity.knn(latents.latents, k, metric=config.metric, backend=config.backend)
    table = similarity.neighbour_table(latents.index["image_id"], res)
    _write_parquet(table, layout.analysis_dir / SIMILAR_FILE)
    near = table[(table["rank"] == 1) & (table["distance"] < config.near_duplicate_distance)]
    yield dg.MaterializeResult(metadata={
        "images": dg.MetadataValue.int(n),
        "k": dg.MetadataValue.int(k),
        "backend": dg.MetadataValue.text(f"{res.backend} on {res.device}"),
        "seconds": dg.MetadataValue.float(round(time.monotonic() - started, 2)),
        "median_nearest_distance": dg.MetadataValue.float(float(np.median(res.distances[:, 0]))),
        "images_with_near_duplicate": dg.MetadataValue.int(len(near)),
        "preview": table_markdown(table.head(3 * k)),
    })
    self_hits = int((res.indices == np.arange(n)[:, None]).sum())
    ascending = bool((np.diff(res.distances, axis=1) >= -1e-6).all())
    yield dg.AssetCheckResult(check_name="neighbours_complete", passed=bool(self_hits == 0 and ascending
                                                                             and res.indices.shape == (n, k)),
                              metadata={"self_neighbours": self_hits, "ascending": ascending})


class MoreLikeThisConfig(dg.Config):
    """Ask for images like one subject: give ``subject_id`` (Zooniverse) or ``object_id`` (survey id); with
    neither, the top machine anomaly is used. ``k`` neighbours are returned as a gallery."""

    subject_id: Optional[int] = None
    object_id: Optional[str] = None
    k: int = 16
    metric: str = "euclidean"


def resolve_query(layout: StorageLayout, subject_id: int | None, object_id: str | None) -> str:
    if object_id:
        return str(object_id)
    if subject_id is not None:
        path = layout.analysis_dir / SUBJECT_MAP_FILE
        if path.exists():
            m = pd.read_parquet(path)
            hit = m[m["subject_id"].astype("int64") == int(subject_id)]
            if len(hit):
                return str(hit["image_id"].iloc[0])
        raise KeyError(f"subject {subject_id} is not a known Zooniverse subject (looked in {path}; materialise "
                       "consensus_vs_score after pulling the subjects)")
    table = pd.read_parquet(_need(layout.analysis_dir / IMAGE_TABLE_FILE, "consensus_vs_score"))
    return str(table.sort_values("anomaly_score", ascending=False)["image_id"].iloc[0])


@dg.asset(
    group_name=GROUP,
    kinds={"matplotlib", "parquet"},
    deps=["latent_vectors", "consensus_vs_score", "cutouts"],
    description=(
        "'More like this': the k images nearest in latent space to one subject (config subject_id or object_id), "
        "as a gallery (plots/more_like_this/<image_id>.png) and a table (analysis/more_like_this/<image_id>."
        "parquet). Launch it from the Launchpad (job more_like_this_job) with the subject you are curious about."
    ),
)
def more_like_this(context: dg.AssetExecutionContext, config: MoreLikeThisConfig, storage: StorageResource):
    layout = storage.layout
    query = resolve_query(layout, config.subject_id, config.object_id)
    latents = embedding.load_latents(layout)
    hits = similarity.more_like_this([query], latents.index["image_id"], latents.latents, k=config.k,
                                     metric=config.metric)
    info_path = layout.analysis_dir / IMAGE_TABLE_FILE
    info = pd.read_parquet(info_path) if info_path.exists() else latents.index[["image_id", "batch"]]
    wanted = ("image_id", "batch", "anomaly_score_sigma", "fraction", "subject_id", "label")
    keep = [c for c in wanted if c in info.columns]
    rows = pd.concat([pd.DataFrame({"image_id": [query], "rank": [0], "distance": [0.0]}),
                      hits[["image_id", "rank", "distance"]]], ignore_index=True)
    rows = rows.merge(info[keep], on="image_id", how="left")
    if "batch" not in rows.columns or rows["batch"].isna().any():
        rows = rows.drop(columns="batch", errors="ignore").merge(latents.index[["image_id", "batch"]],
                                                                 on="image_id", how="left")
    imgs, found = CutoutReader(layout).stack(rows)
    fields = ("distance", "anomaly_score_sigma", "fraction", "label")
    captions = [("QUERY " if r["rank"] == 0 else f"#{r['rank']} ") + _caption(r, *fields) for _, r in rows.iterrows()]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in query)
    png = plotting.gallery(imgs, captions, layout.plots_dir / MORE_LIKE_THIS_DIR / f"{safe}.png",
                           title=f"More like {query}: nearest {len(hits)} images in latent space "
                                 f"({config.metric} distance)", ncols=6)
    _write_parquet(rows, layout.analysis_dir / MORE_LIKE_THIS_DIR / f"{safe}.parquet")
    return dg.MaterializeResult(metadata={
        "query_image_id": dg.MetadataValue.text(query),
        "neighbours": dg.MetadataValue.int(len(hits)),
        "missing_cutouts": dg.MetadataValue.int(int(len(found) - sum(found))),
        "gallery": png_markdown(png, alt=f"more like {query}"),
        "table": table_markdown(rows),
    })


more_like_this_job = dg.define_asset_job(
    "more_like_this_job", selection=["more_like_this"],
    description="Find images like one subject: set subject_id or object_id in the more_like_this config.",
)


# --------------------------------------------------------------------------------------------------------------
# consensus_vs_score
# --------------------------------------------------------------------------------------------------------------


class ConsensusVsScoreConfig(dg.Config):
    """The comparison's settings: images shown fewer than ``min_shown`` times are left out; an image is
    'high consensus' when its volunteer fraction is at least ``high_consensus_threshold``; intervals from
    ``n_boot`` bootstrap replicates at ``ci_level``; the interest model ('logistic' or 'tree') is cross-validated
    in ``cv_folds`` folds. ``score_family``: which model's scores to compare when several were normalised
    (default: the one covering most images)."""

    high_consensus_threshold: float = 0.25
    min_shown: int = 3
    top_fraction: float = 0.05
    n_boot: int = 1000
    ci_level: float = 0.95
    seed: int = 20211
    cv_folds: int = 5
    model: str = "logistic"
    tree_depth: int = 3
    score_family: Optional[str] = None

    def to_comparison(self) -> comparison.ComparisonConfig:
        return comparison.ComparisonConfig(
            high_consensus_threshold=self.high_consensus_threshold, min_shown=self.min_shown,
            top_fraction=self.top_fraction, n_boot=self.n_boot, ci_level=self.ci_level, seed=self.seed,
            cv_folds=self.cv_folds, model=self.model, tree_depth=self.tree_depth)


def _recovery_check(by_kind: pd.DataFrame | None) -> dg.AssetCheckResult:
    name = "simulated_volunteers_recovered"
    if by_kind is None or not {"normal", "oddity", "artifact"} <= set(by_kind["class"]):
        return dg.AssetCheckResult(check_name=name, passed=True,
                                   metadata={"skipped": "no injected classes (not the embedded sample)"})
    k = by_kind.set_index("class")
    odd_above = bool(k.loc["oddity", "fraction_ci_low"] > k.loc["normal", "fraction_ci_high"])
    art_below = bool(k.loc["artifact", "fraction_ci_high"] < k.loc["oddity", "fraction_ci_low"])
    art_machine = bool(k.loc["artifact", "score_sigma_ci_low"] > k.loc["normal", "score_sigma_ci_high"])
    return dg.AssetCheckResult(
        check_name=name, passed=odd_above and art_below and art_machine,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"oddities_more_selected_than_normal": odd_above,
                  "artifacts_less_selected_than_oddities": art_below,
                  "artifacts_score_higher_than_normal": art_machine,
                  "by_kind": table_markdown(by_kind.round(3))})


@dg.asset(
    group_name=GROUP,
    kinds={"duckdb", "scikitlearn", "parquet"},
    deps=["anomaly_scores_normalised", "subject_consensus", "latent_umap"],
    pool="duckdb",
    check_specs=[
        dg.AssetCheckSpec("comparison_table_complete", asset="consensus_vs_score",
                          description="One row per score with finite estimates inside their intervals."),
        dg.AssetCheckSpec("simulated_volunteers_recovered", asset="consensus_vs_score",
                          description="On the embedded sample: injected oddities are selected more than normal "
                                      "galaxies, artifacts less than oddities, and artifacts score higher than "
                                      "normal galaxies with the machine (95% intervals apart)."),
    ],
    description=(
        "The paper's comparison of volunteer consensus and machine scores. For image, feature and anomaly score: "
        "Spearman correlation with the volunteer fraction, AUROC for high-consensus images, and the share of "
        "high-consensus images in the score's top 5%, each with a bootstrap 95% interval; and a cross-validated "
        "logistic model of volunteer interest from the scores and the latent-map position (with a depth-3 "
        "decision tree beside it). Writes analysis/consensus_vs_score.parquet, interest_model.json, "
        "image_table.parquet (one row per scored image, what later assets read) and, on the sample, "
        "consensus_by_class.parquet."
    ),
)
def consensus_vs_score(context: dg.AssetExecutionContext, config: ConsensusVsScoreConfig,
                       storage: StorageResource):
    layout = storage.layout
    cfg = config.to_comparison()
    cfg.validate()
    scores = read_scores(layout, config.score_family, log=context.log.warning)
    consensus, subjects = read_warehouse(layout)
    if consensus is None:
        raise FileNotFoundError(f"no consensus.subject_consensus in {layout.warehouse}: materialise "
                                "subject_consensus first")
    umap_path = layout.analysis_dir / UMAP_FILE
    umap = pd.read_parquet(umap_path) if umap_path.exists() else None
    truth = read_truth(layout)
    table = comparison.build_image_table(scores, consensus, umap,
                                         subjects["image_id"] if subjects is not None else None, truth)
    if truth is not None and ("label" not in table.columns or table["label"].notna().sum() == 0):
        # A truth table that matches none of the scored images (real data beside an old sample): ignore it.
        table = table.drop(columns=[c for c in ("label", "kind", "is_odd", "is_artifact") if c in table.columns])
        truth = None
    context.log.info(f"{len(table)} scored images, {int(table['has_subject'].sum())} are subjects, "
                     f"{int((table['shown'] >= cfg.min_shown).sum())} shown at least {cfg.min_shown} times")
    result = comparison.compare_scores(table, cfg)

    model_info: dict = {"fitted": False}
    table["predicted_interest"] = np.nan
    table["interest_oof"] = np.nan
    try:
        model = comparison.fit_interest_model(table, cfg)
        table["predicted_interest"] = model.predict(table)
        table.loc[model.oof.index, "interest_oof"] = model.oof
        model_info = {"fitted": True, "model": model.model_name, "features": model.features,
                      "summary": model.summary.to_dict(orient="records"),
                      "coefficients": model.coefficients.to_dict(orient="records"), "tree_rules": model.tree_rules}
    except ValueError as exc:
        context.log.warning(f"interest model not fitted: {exc}; the next round ranks by anomaly score")
        model_info["reason"] = str(exc)
    model_info["config"] = cfg.__dict__ | {"score_columns": list(cfg.score_columns),
                                           "latent_features": list(cfg.latent_features)}

    id_col = "image_id" if "image_id" in consensus.columns else "object_id"
    subject_map = pd.concat([
        consensus[["subject_id", id_col]].rename(columns={id_col: "image_id"}),
        subjects if subjects is not None else pd.DataFrame(columns=["subject_id", "image_id"])],
        ignore_index=True).dropna()
    if len(subject_map):
        subject_map = subject_map.astype({"subject_id": "int64", "image_id": str}).drop_duplicates()
    else:
        subject_map = pd.DataFrame({"subject_id": pd.Series(dtype="int64"), "image_id": pd.Series(dtype=str)})

    a = layout.analysis_dir
    by_kind = None
    if truth is not None and "label" in table.columns:
        by_label = comparison.by_class_table(table, cfg, class_col="label")
        by_kind = comparison.by_class_table(table, cfg, class_col="kind")
        _write_parquet(pd.concat([by_kind.assign(grouping="kind"), by_label.assign(grouping="label")],
                                 ignore_index=True), a / BY_CLASS_FILE)
    _write_parquet(table, a / IMAGE_TABLE_FILE)
    _write_parquet(result, a / COMPARISON_FILE)
    _write_parquet(subject_map, a / SUBJECT_MAP_FILE)
    _write_json(model_info, a / MODEL_FILE)

    shown = result["n_images"].iloc[0]
    metadata = {
        "images_scored": dg.MetadataValue.int(len(table)),
        "images_compared": dg.MetadataValue.int(int(shown)),
        "high_consensus_images": dg.MetadataValue.int(int(result["n_high_consensus"].iloc[0])),
        "comparison": table_markdown(result[["score", "spearman_rho", "spearman_ci_low", "spearman_ci_high",
                                             "auroc", "auroc_ci_low", "auroc_ci_high", "top_high_share",
                                             "base_rate"]].round(3)),
        "path": dg.MetadataValue.path(str(a / COMPARISON_FILE)),
    }
    for _, r in result.iterrows():
        metadata[f"auroc_{r['score']}"] = dg.MetadataValue.float(round(float(r["auroc"]), 4))
    if model_info["fitted"]:
        metadata["interest_model_cv"] = table_markdown(model.summary.round(3))
        metadata["interest_model_coefficients"] = table_markdown(model.coefficients.round(3))
        metadata["interest_model_rules"] = dg.MetadataValue.md(f"```\n{model.tree_rules}\n```")
    if by_kind is not None:
        metadata["by_injected_kind"] = table_markdown(by_kind.round(3))
    yield dg.MaterializeResult(metadata=metadata)

    est_in = all(r[f"{p}_ci_low"] - 1e-9 <= r[e] <= r[f"{p}_ci_high"] + 1e-9
                 for _, r in result.iterrows() for p, e in (("spearman", "spearman_rho"), ("auroc", "auroc")))
    finite = bool(np.isfinite(result[["spearman_rho", "spearman_ci_low", "spearman_ci_high", "auroc",
                                      "auroc_ci_low", "auroc_ci_high"]].to_numpy(float)).all())
    yield dg.AssetCheckResult(check_name="comparison_table_complete",
                              passed=bool(len(result) == len(SCORE_COLUMNS) and finite and est_in),
                              metadata={"rows": len(result), "finite": finite, "estimates_inside_intervals": est_in})
    yield _recovery_check(by_kind)


# --------------------------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------------------------


class PlotsConfig(dg.Config):
    """``gallery_size`` images per gallery; ``max_tags`` hashtags coloured on the map (the rest pooled)."""

    gallery_size: int = 16
    max_tags: int = 9


def make_plots(layout: StorageLayout, gallery_size: int = 16, max_tags: int = 9, log=None) -> dict[str, Path]:
    """Every figure from the analysis files; returns name -> PNG path. Plain function (tests call it directly)."""
    log = log or (lambda m: None)
    a, p = layout.analysis_dir, layout.plots_dir
    table = pd.read_parquet(_need(a / IMAGE_TABLE_FILE, "consensus_vs_score"))
    result = pd.read_parquet(_need(a / COMPARISON_FILE, "consensus_vs_score"))
    info = json.loads((a / MODEL_FILE).read_text()) if (a / MODEL_FILE).exists() else {}
    ccfg = info.get("config", {})
    cfg = comparison.ComparisonConfig(high_consensus_threshold=float(result["threshold"].iloc[0]),
                                      min_shown=int(ccfg.get("min_shown", 3)),
                                      top_fraction=float(result["top_fraction"].iloc[0]))
    if (a / UMAP_FILE).exists():  # the newest map, even if latent_umap was re-run after consensus_vs_score
        u = pd.read_parquet(a / UMAP_FILE)
        table = table.drop(columns=[c for c in table.columns if c.startswith("umap_")]).merge(
            u[["image_id", *[c for c in u.columns if c.startswith("umap_")]]].astype({"image_id": str}),
            on="image_id", how="left")
    table["consensus_class"] = plotting.consensus_class(table, cfg.high_consensus_threshold, cfg.min_shown)
    out: dict[str, Path] = {}
    has_map = {"umap_x", "umap_y"} <= set(table.columns) and table["umap_x"].notna().any()
    sigma = "anomaly_score_sigma" if "anomaly_score_sigma" in table.columns else "anomaly_score"
    sig_label = "anomaly score (\u03c3 above the mean)" if sigma == "anomaly_score_sigma" else "anomaly score"
    if has_map:
        m = table[table["umap_x"].notna()]
        xy = m[["umap_x", "umap_y"]].to_numpy(float)
        out["umap_anomaly"] = plotting.umap_continuous(
            xy, m[sigma].to_numpy(float), p / "umap_anomaly.png", title="Latent map coloured by machine anomaly",
            colorbar_label=sig_label, cmap="viridis")
        shown = (m["shown"] >= cfg.min_shown).to_numpy()
        out["umap_volunteer_fraction"] = plotting.umap_continuous(
            xy[shown], m["fraction"].to_numpy(float)[shown], p / "umap_volunteer_fraction.png",
            title=f"Latent map coloured by volunteer fraction (grey: shown < {cfg.min_shown} times)",
            colorbar_label="volunteer fraction (selected / shown)", cmap="plasma", background_xy=xy[~shown],
            limits=(0.0, max(0.05, float(np.nanpercentile(m["fraction"], 99))) if shown.any() else 1.0))
        out["umap_top_tag"] = plotting.umap_categorical(
            xy, m["top_tag"].tolist(), p / "umap_top_tag.png", title="Latent map coloured by top Talk hashtag",
            legend_title="top hashtag (images)", max_categories=max_tags, none_label="no hashtag")
        if "predicted_interest" in m.columns and m["predicted_interest"].notna().any():
            hi = (m["consensus_class"] == "high consensus").to_numpy()
            out["interest_map"] = plotting.interest_map(xy, m["predicted_interest"].to_numpy(float),
                                                        p / "interest_map.png", shown_xy=xy, shown_high=hi)
        if "label" in m.columns and m["label"].notna().any():
            out["umap_injected_class"] = plotting.umap_categorical(
                xy, m["label"].where(m["label"] != "normal").tolist(), p / "umap_injected_class.png",
                title="Latent map coloured by injected class (embedded sample)", legend_title="injected class",
                max_categories=10, none_label="normal")
    out["score_distributions"] = plotting.score_distributions(
        table, p / "score_distributions.png", score_columns=SCORE_COLUMNS, score_labels=comparison.SCORE_LABELS,
        title=f"Machine scores by volunteer consensus (high: fraction \u2265 {cfg.high_consensus_threshold:g})")
    cmp = comparison.comparable(table, cfg)
    out["fraction_vs_anomaly"] = plotting.fraction_vs_score(
        cmp, p / "fraction_vs_anomaly.png", score=sigma, x_label=sig_label,
        threshold=cfg.high_consensus_threshold)
    curves = {}
    for _, r in result.iterrows():
        fpr, tpr = comparison.roc_points(cmp[r["score"]], cmp["high_consensus"])
        curves[comparison.SCORE_LABELS.get(r["score"], r["score"])] = dict(
            fpr=fpr, tpr=tpr, auroc=r["auroc"], ci_low=r["auroc_ci_low"], ci_high=r["auroc_ci_high"])
    out["roc_curves"] = plotting.roc_curves(
        curves, p / "roc_curves.png",
        title=f"Machine scores finding high-consensus images (n={len(cmp)}, {int(cmp['high_consensus'].sum())} "
              "high)")
    reader = CutoutReader(layout)
    sets = comparison.disagreements(table, cfg, n=gallery_size)
    titles = {
        "machine_top": "Top machine anomalies",
        "volunteer_top": "Top volunteer picks",
        "machine_only": f"Machine says odd, volunteers do not (top {cfg.top_fraction:.0%} score, "
                        f"fraction < {cfg.high_consensus_threshold:g})",
        "volunteer_only": "Volunteers say odd, machine does not (high consensus, score below median)",
    }
    for name, frame in sets.items():
        imgs, found = reader.stack(frame)
        fields = ("anomaly_score_sigma", "fraction", "label")
        caps = [_caption(r, *fields) for _, r in frame.iterrows()]
        if not all(found):
            log(f"gallery {name}: {len(found) - sum(found)} cutouts missing (drawn grey)")
        out[f"gallery_{name}"] = plotting.gallery(imgs, caps, p / f"gallery_{name}.png", title=titles[name])
    if (a / BY_CLASS_FILE).exists():
        bc = pd.read_parquet(a / BY_CLASS_FILE)
        lab = bc[bc["grouping"] == "label"]
        if len(lab) and "kind" in table.columns:
            order = {"normal": 0, "oddity": 1, "artifact": 2}
            kind_of = table.dropna(subset=["label"]).drop_duplicates("label").set_index("label")["kind"]
            lab = lab.assign(_o=lab["class"].map(kind_of).map(order).fillna(3)).sort_values(["_o", "class"])
        if len(lab):
            out["by_injected_class"] = plotting.class_summary(
                lab, p / "by_injected_class.png",
                title="Embedded sample: volunteers and machine by injected class (95% bootstrap intervals)")
        if "label" in cmp.columns and cmp["label"].notna().any():
            kind = cmp.assign(consensus_class=cmp["kind"].fillna("unknown")) if "kind" in cmp.columns else cmp
            out["score_by_injected_kind"] = plotting.score_distributions(
                kind, p / "score_by_injected_kind.png", score_columns=SCORE_COLUMNS,
                score_labels=comparison.SCORE_LABELS, title="Machine scores by injected kind (embedded sample)")
    return out


@dg.asset(
    group_name=GROUP,
    kinds={"matplotlib"},
    deps=["consensus_vs_score", "latent_umap", "cutouts"],
    description=(
        "Every figure, as PNG under plots/ and embedded here: the latent map coloured by anomaly score, by "
        "volunteer fraction, by top Talk hashtag (and by injected class on the sample); score distributions by "
        "consensus class; volunteer fraction vs anomaly score with binned means; ROC curves; the interest model "
        "over the map; galleries of top machine anomalies, top volunteer picks and both kinds of disagreement."
    ),
)
def plots(context: dg.AssetExecutionContext, config: PlotsConfig, storage: StorageResource):
    started = time.monotonic()
    out = make_plots(storage.layout, config.gallery_size, config.max_tags, log=context.log.warning)
    metadata = {"figures": dg.MetadataValue.int(len(out)),
                "folder": dg.MetadataValue.path(str(storage.layout.plots_dir)),
                "seconds": dg.MetadataValue.float(round(time.monotonic() - started, 2))}
    for name, path in out.items():
        metadata[name] = png_markdown(path, alt=name)
    return dg.MaterializeResult(metadata=metadata)


# --------------------------------------------------------------------------------------------------------------
# next_volunteer_round
# --------------------------------------------------------------------------------------------------------------


class NextRoundConfig(dg.Config):
    """How many images to send, the share drawn at random (exploration), PNG upscaling, and the live upload:
    with ``upload`` true, ``project_id`` and ``subject_set_name`` are needed and the credentials come from
    PANOPTES_USERNAME / PANOPTES_PASSWORD (or PANOPTES_CLIENT_ID / _SECRET); PANOPTES_ENDPOINT picks the server."""

    n_subjects: int = 200
    exploration: float = 0.1
    seed: int = 20211
    image_scale: int = 1
    round_name: Optional[str] = None
    upload: bool = False
    project_id: Optional[int] = None
    subject_set_name: Optional[str] = None


def build_next_round(layout: StorageLayout, cfg: NextRoundConfig, log=None) -> dict:
    """Rank, write the manifest folder, validate it and (when configured) upload it. Plain function for tests."""
    log = log or (lambda m: None)
    a = layout.analysis_dir
    table = pd.read_parquet(_need(a / IMAGE_TABLE_FILE, "consensus_vs_score"))
    reader = CutoutReader(layout)
    # Images whose cutouts exist (release batches carry no images and cannot be shown).
    have = np.array([reader.get(b, i) is not None for b, i in zip(table["batch"], table["image_id"])], bool) \
        if len(table) else np.zeros(0, bool)
    if (~have).any():
        log(f"{int((~have).sum())} scored images have no cutout and cannot be offered")
    pool = table[have & ~table["has_subject"].astype(bool)]
    if pool.empty:
        raise ValueError("every scored image with a cutout is already a Zooniverse subject: nothing to send")
    picks = next_round.rank_candidates(pool, cfg.n_subjects, exploration=cfg.exploration, seed=cfg.seed)
    cat = []
    for b in picks["batch"].unique():
        path = layout.images_dir(str(b)) / "catalog.parquet"
        if path.exists():
            c = pd.read_parquet(path)
            cols = [x for x in ("image_id", "ra", "dec") if x in c.columns]
            cat.append(c[cols].astype({"image_id": str}))
    if cat:
        picks = picks.drop(columns=[c for c in ("ra", "dec") if c in picks.columns]).merge(
            pd.concat(cat).drop_duplicates("image_id"), on="image_id", how="left")
    round_name = cfg.round_name or f"ww-next-round-{datetime.now(timezone.utc):%Y%m%d}"
    manifest = next_round.write_manifest(picks, reader.require, a / NEXT_ROUND_DIR, round_name=round_name,
                                         image_scale=cfg.image_scale)
    _write_parquet(picks, a / NEXT_ROUND_PICKS)
    problems = next_round.validate_manifest(manifest)
    if problems:
        raise ValueError(f"manifest {manifest} failed validation: {problems[:5]}")
    out = {"picks": picks, "manifest": manifest, "round_name": round_name, "upload": None}
    if cfg.upload:
        if cfg.project_id is None or not cfg.subject_set_name:
            raise ValueError("upload=True needs project_id and subject_set_name in the config")
        next_round.connect_from_env()
        out["upload"] = next_round.upload_manifest(manifest, project_id=cfg.project_id,
                                                   subject_set_name=cfg.subject_set_name, log=log)
    return out


@dg.asset(
    group_name=GROUP,
    kinds={"zooniverse", "csv"},
    deps=["consensus_vs_score", "cutouts"],
    description=(
        "The next volunteer round: images not yet Zooniverse subjects, ranked by the interest model's predicted "
        "volunteer interest (anomaly score when no model could be fitted), with a random 'exploration' share. "
        "Writes analysis/next_round/ (manifest.csv + one PNG per subject, the Zooniverse uploader's manifest "
        "format; machine fields are '#'-hidden from volunteers) and, when upload is set, creates the subject set "
        "and uploads it through panoptes-client."
    ),
)
def next_volunteer_round(context: dg.AssetExecutionContext, config: NextRoundConfig, storage: StorageResource):
    layout = storage.layout
    out = build_next_round(layout, config, log=context.log.info)
    picks = out["picks"]
    reader = CutoutReader(layout)
    top = picks.head(16)
    imgs, _ = reader.stack(top)
    preview = plotting.gallery(imgs, [f"#{r['rank']} {r['selection']}\n{r['image_id']}" for _, r in top.iterrows()],
                               layout.plots_dir / "next_round_preview.png",
                               title=f"Next volunteer round: first {len(top)} of {len(picks)} picks")
    metadata = {
        "subjects": dg.MetadataValue.int(len(picks)),
        "exploit": dg.MetadataValue.int(int((picks["selection"] == "exploit").sum())),
        "explore": dg.MetadataValue.int(int((picks["selection"] == "explore").sum())),
        "ranking_basis": dg.MetadataValue.text(str(picks["ranking_basis"].iloc[0])),
        "round_name": dg.MetadataValue.text(out["round_name"]),
        "manifest": dg.MetadataValue.path(str(out["manifest"])),
        "preview": png_markdown(preview, alt="next round preview"),
        "uploaded": dg.MetadataValue.bool(out["upload"] is not None),
    }
    if out["upload"] is not None:
        up = out["upload"]
        metadata.update({"subject_set_id": dg.MetadataValue.text(up.subject_set_id),
                         "subjects_created": dg.MetadataValue.int(up.created),
                         "subjects_already_there": dg.MetadataValue.int(up.skipped_existing)})
    return dg.MaterializeResult(metadata=metadata)


defs = dg.Definitions(
    assets=[latent_umap, similar_images, more_like_this, consensus_vs_score, plots, next_volunteer_round],
    jobs=[more_like_this_job],
)
