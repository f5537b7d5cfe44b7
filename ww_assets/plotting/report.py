"""Every figure of the analysis, drawn from the files the analysis wrote (the ``plots`` asset's work).

Reads ``analysis/image_table.parquet``, ``consensus_vs_score.parquet``, ``interest_model.json``, the newest latent
map and the by-class table, and writes one PNG per figure under ``plots/``. Galleries show the cutouts themselves
(``ww_assets.images.store``), each captioned with the numbers a reader needs: the id, RA/Dec (from the cutout
catalogs), the machine's sigma score and the volunteers' count out of how many saw it, with its 95% Wilson
interval. Volunteer picks are ranked by the interval's lower end (an image 3 of 3 volunteers chose is less sure
than one 30 of 40 chose), not by the raw fraction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ww_assets.analysis.comparison import (
    SCORE_COLUMNS,
    SCORE_LABELS,
    ComparisonConfig,
    comparable,
    consensus_class,
    disagreements,
    roc_points,
)
from ww_assets.images.store import CutoutStore
from ww_assets.plotting.distributions import class_summary, fraction_vs_score, roc_curves, score_distributions
from ww_assets.plotting.galleries import gallery
from ww_assets.plotting.maps import interest_map, umap_categorical, umap_continuous
from ww_assets.plotting.sky import format_radec, positions, survey_viewer_url
from ww_assets.storage import StorageLayout

__all__ = ["GALLERY_TABLE_COLUMNS", "caption", "gallery_table", "make_plots"]

#: what ``make_plots(galleries=...)`` gives per gallery: the rows shown, with their positions and viewer links
GALLERY_TABLE_COLUMNS = ["image_id", "batch", "ra", "dec", "anomaly_score_sigma", "selected", "shown", "fraction",
                         "ci_low", "ci_high", "viewer_url"]


def _finite(v) -> bool:
    try:
        return v is not None and bool(np.isfinite(float(v)))
    except (TypeError, ValueError):
        return False


def caption(row, *fields: str) -> str:
    """Image id; RA/Dec when the row has them; machine sigma, volunteer count out of how many saw it (with its 95%
    Wilson interval when the row has ``ci_low``/``ci_high``), latent distance; the injected label (sample) if any."""
    numbers, interval, label = [], None, None
    for f in fields:
        v = row.get(f)
        if f != "label" and not _finite(v):
            continue
        if f == "anomaly_score_sigma":
            numbers.append(f"anom {v:+.1f}\u03c3")
        elif f == "fraction":
            k, n = row.get("selected"), row.get("shown")
            numbers.append(f"vol {int(k)}/{int(n)} = {v:.2f}" if _finite(k) and _finite(n) and n > 0
                           else f"vol {v:.2f}")
            if _finite(row.get("ci_low")) and _finite(row.get("ci_high")):
                interval = f"95% [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
        elif f == "distance":
            numbers.append(f"d {v:.2f}")
        elif f == "label" and v is not None and not (isinstance(v, float) and np.isnan(v)):
            label = str(v)
    radec = format_radec(row.get("ra"), row.get("dec"))
    lines = [str(row["image_id"]), radec, "  ".join(numbers), interval, label]
    return "\n".join(line for line in lines if line)


def gallery_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a gallery as a table (``GALLERY_TABLE_COLUMNS``): id, position, scores, volunteer counts and
    the survey-viewer link of each image."""
    out = frame.copy()
    for col in GALLERY_TABLE_COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
    out["viewer_url"] = [survey_viewer_url(r, d) for r, d in zip(out["ra"], out["dec"])]
    return out[GALLERY_TABLE_COLUMNS].reset_index(drop=True)


def _need(path: Path, asset: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialise {asset} first")
    return path


def _read(layout: StorageLayout) -> tuple[pd.DataFrame, pd.DataFrame, ComparisonConfig]:
    table = pd.read_parquet(_need(layout.analysis_file("image_table"), "consensus_vs_score"))
    result = pd.read_parquet(_need(layout.analysis_file("consensus_vs_score"), "consensus_vs_score"))
    info_path = layout.analysis_file("interest_model")
    ccfg = (json.loads(info_path.read_text()) if info_path.exists() else {}).get("config", {})
    cfg = ComparisonConfig(high_consensus_threshold=float(result["threshold"].iloc[0]),
                           min_shown=int(ccfg.get("min_shown", ComparisonConfig.min_shown)),
                           top_fraction=float(result["top_fraction"].iloc[0]))
    umap_path = layout.analysis_file("latent_umap")
    if umap_path.exists():  # the newest map, even if latent_umap ran again after consensus_vs_score
        u = pd.read_parquet(umap_path)
        cols = [c for c in u.columns if c.startswith("umap_")]
        table = table.drop(columns=[c for c in table.columns if c.startswith("umap_")]).merge(
            u[["image_id", *cols]].astype({"image_id": str}), on="image_id", how="left")
    table["consensus_class"] = consensus_class(table, cfg.high_consensus_threshold, cfg.min_shown)
    return table, result, cfg


def _maps(layout: StorageLayout, table: pd.DataFrame, cfg: ComparisonConfig, sigma: str, sig_label: str,
          max_tags: int) -> dict[str, Path]:
    out: dict[str, Path] = {}
    m = table[table["umap_x"].notna()]
    xy = m[["umap_x", "umap_y"]].to_numpy(float)
    out["umap_anomaly"] = umap_continuous(xy, m[sigma].to_numpy(float), layout.plot_file("umap_anomaly"),
                                          title="Latent map coloured by machine anomaly",
                                          colorbar_label=sig_label + ", 1st-99th percentile", cmap="viridis")
    shown = (m["shown"] >= cfg.min_shown).to_numpy()
    out["umap_volunteer_fraction"] = umap_continuous(
        xy[shown], m["fraction"].to_numpy(float)[shown], layout.plot_file("umap_volunteer_fraction"),
        title=f"Latent map coloured by volunteer fraction (grey: shown < {cfg.min_shown} times)",
        colorbar_label="volunteer fraction (selected / shown)", cmap="plasma", background_xy=xy[~shown],
        limits=(0.0, max(0.05, float(np.nanpercentile(m["fraction"], 99))) if shown.any() else 1.0))
    out["umap_top_tag"] = umap_categorical(xy, m["top_tag"].tolist(), layout.plot_file("umap_top_tag"),
                                           title="Latent map coloured by top Talk hashtag",
                                           legend_title="top hashtag (images)", max_categories=max_tags,
                                           none_label="no hashtag")
    if "predicted_interest" in m.columns and m["predicted_interest"].notna().any():
        hi = (m["consensus_class"] == "high consensus").to_numpy()
        out["interest_map"] = interest_map(xy, m["predicted_interest"].to_numpy(float),
                                           layout.plot_file("interest_map"), shown_xy=xy, shown_high=hi)
    if "label" in m.columns and m["label"].notna().any():
        out["umap_injected_class"] = umap_categorical(
            xy, m["label"].where(m["label"] != "normal").tolist(), layout.plot_file("umap_injected_class"),
            title="Latent map coloured by injected class (embedded sample)", legend_title="injected class",
            max_categories=10, none_label="normal")
    return out


def _gallery_sets(table: pd.DataFrame, cfg: ComparisonConfig) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Every candidate of each gallery, best first (the galleries show the first ``size``), and their titles.

    Machine sets by score (``disagreements``); the volunteer sets by the lower end of the fraction's 95% Wilson
    interval, then the fraction, then how many saw the image."""
    sets = disagreements(table, cfg, n=len(table))
    wilson = ["ci_low", "fraction", "shown"] if "ci_low" in table.columns else ["fraction", "shown"]
    for name in ("volunteer_top", "volunteer_only"):
        sets[name] = sets[name].sort_values(wilson, ascending=False, kind="stable")
    ranked = "ranked by the lower end of the 95% interval on the fraction"
    titles = {
        "machine_top": "Top machine anomalies",
        "volunteer_top": f"Top volunteer picks, {ranked}",
        "machine_only": f"Machine says odd, volunteers do not (top {cfg.top_fraction:.0%} score, "
                        f"fraction < {cfg.high_consensus_threshold:g})",
        "volunteer_only": f"Volunteers say odd, machine does not (fraction \u2265 {cfg.high_consensus_threshold:g}, "
                          f"score below the median), {ranked}",
    }
    return sets, titles


def _galleries(layout: StorageLayout, table: pd.DataFrame, cfg: ComparisonConfig, size: int, log,
               tables: dict | None) -> dict:
    store = CutoutStore(layout)
    sets, titles = _gallery_sets(table, cfg)
    out = {}
    for name, full in sets.items():
        frame = positions(layout, full.head(size))
        imgs, found = store.stack(frame)
        caps = [caption(r, "anomaly_score_sigma", "fraction", "label") for _, r in frame.iterrows()]
        if not all(found):
            log(f"gallery {name}: {len(found) - sum(found)} cutouts missing (drawn grey)")
        out[f"gallery_{name}"] = gallery(imgs, caps, layout.plot_file(f"gallery_{name}"), title=titles[name],
                                         n_total=len(full))
        if tables is not None:
            tables[f"gallery_{name}"] = gallery_table(frame)
    return out


def _by_class(layout: StorageLayout, table: pd.DataFrame, cmp: pd.DataFrame) -> dict[str, Path]:
    out: dict[str, Path] = {}
    path = layout.analysis_file("consensus_by_class")
    if not path.exists():
        return out
    lab = pd.read_parquet(path)
    lab = lab[lab["grouping"] == "label"]
    if len(lab) and "kind" in table.columns:
        order = {"normal": 0, "oddity": 1, "artifact": 2}
        kind_of = table.dropna(subset=["label"]).drop_duplicates("label").set_index("label")["kind"]
        lab = lab.assign(_o=lab["class"].map(kind_of).map(order).fillna(3)).sort_values(["_o", "class"])
    if len(lab):
        out["by_injected_class"] = class_summary(
            lab, layout.plot_file("by_injected_class"),
            title="Embedded sample: volunteers and machine by injected class (means with 95% bootstrap intervals)")
    if "label" in cmp.columns and cmp["label"].notna().any():
        kind = cmp.assign(consensus_class=cmp["kind"].fillna("unknown")) if "kind" in cmp.columns else cmp
        out["score_by_injected_kind"] = score_distributions(
            kind, layout.plot_file("score_by_injected_kind"), score_columns=SCORE_COLUMNS, score_labels=SCORE_LABELS,
            title="Machine scores by injected kind (embedded sample)")
    return out


def make_plots(layout: StorageLayout, gallery_size: int = 16, max_tags: int = 9,
               log: Callable[[str], None] = lambda m: None, galleries: dict | None = None) -> dict[str, Path]:
    """Every figure from the analysis files; returns name -> PNG path. ``galleries``, when given, is filled with
    each gallery's rows (``gallery_table``: positions and survey-viewer links)."""
    table, result, cfg = _read(layout)
    sigma = "anomaly_score_sigma" if "anomaly_score_sigma" in table.columns else "anomaly_score"
    sig_label = "anomaly score (\u03c3 above the mean)" if sigma == "anomaly_score_sigma" else "anomaly score"
    out: dict[str, Path] = {}
    if {"umap_x", "umap_y"} <= set(table.columns) and table["umap_x"].notna().any():
        out.update(_maps(layout, table, cfg, sigma, sig_label, max_tags))
    out["score_distributions"] = score_distributions(
        table, layout.plot_file("score_distributions"), score_columns=SCORE_COLUMNS, score_labels=SCORE_LABELS,
        title=f"Machine scores by volunteer consensus (high: fraction \u2265 {cfg.high_consensus_threshold:g})")
    cmp = comparable(table, cfg)
    row = result.set_index("score").loc["anomaly_score"] if "anomaly_score" in set(result["score"]) else None
    rho = None if row is None else {"rho": float(row["spearman_rho"]), "ci_low": float(row["spearman_ci_low"]),
                                    "ci_high": float(row["spearman_ci_high"]),
                                    "ci_level": float(row.get("ci_level", 0.95))}
    out["fraction_vs_anomaly"] = fraction_vs_score(
        cmp, layout.plot_file("fraction_vs_anomaly"), score=sigma, x_label=sig_label,
        threshold=cfg.high_consensus_threshold, spearman=rho,
        title=f"Volunteer fraction vs machine anomaly score (images shown \u2265 {cfg.min_shown} times)")
    curves = {}
    for _, r in result.iterrows():
        fpr, tpr = roc_points(cmp[r["score"]], cmp["high_consensus"])
        curves[SCORE_LABELS.get(r["score"], r["score"])] = dict(fpr=fpr, tpr=tpr, auroc=r["auroc"],
                                                              ci_low=r["auroc_ci_low"], ci_high=r["auroc_ci_high"])
    out["roc_curves"] = roc_curves(curves, layout.plot_file("roc_curves"),
                                   title=f"Machine scores finding high-consensus images (n={len(cmp)}, "
                                         f"{int(cmp['high_consensus'].sum())} high)")
    out.update(_galleries(layout, table, cfg, gallery_size, log, galleries))
    out.update(_by_class(layout, table, cmp))
    return out
