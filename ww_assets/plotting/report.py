"""Every figure of the analysis, drawn from the files the analysis wrote (the ``plots`` asset's work).

Reads ``analysis/image_table.parquet``, ``consensus_vs_score.parquet``, ``interest_model.json``, the newest latent
map and the by-class table, and writes one PNG per figure under ``plots/``. Galleries show the cutouts themselves
(``ww_assets.images.store``), each captioned with the numbers a reader needs.
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
from ww_assets.storage import StorageLayout

__all__ = ["make_plots", "caption"]


def caption(row, *fields: str) -> str:
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
                                          title="Latent map coloured by machine anomaly", colorbar_label=sig_label,
                                          cmap="viridis")
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


def _galleries(layout: StorageLayout, table: pd.DataFrame, cfg: ComparisonConfig, size: int, log) -> dict:
    store = CutoutStore(layout)
    titles = {
        "machine_top": "Top machine anomalies",
        "volunteer_top": "Top volunteer picks",
        "machine_only": f"Machine says odd, volunteers do not (top {cfg.top_fraction:.0%} score, "
                        f"fraction < {cfg.high_consensus_threshold:g})",
        "volunteer_only": "Volunteers say odd, machine does not (high consensus, score below median)",
    }
    out = {}
    for name, frame in disagreements(table, cfg, n=size).items():
        imgs, found = store.stack(frame)
        caps = [caption(r, "anomaly_score_sigma", "fraction", "label") for _, r in frame.iterrows()]
        if not all(found):
            log(f"gallery {name}: {len(found) - sum(found)} cutouts missing (drawn grey)")
        out[f"gallery_{name}"] = gallery(imgs, caps, layout.plot_file(f"gallery_{name}"), title=titles[name])
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
            title="Embedded sample: volunteers and machine by injected class (95% bootstrap intervals)")
    if "label" in cmp.columns and cmp["label"].notna().any():
        kind = cmp.assign(consensus_class=cmp["kind"].fillna("unknown")) if "kind" in cmp.columns else cmp
        out["score_by_injected_kind"] = score_distributions(
            kind, layout.plot_file("score_by_injected_kind"), score_columns=SCORE_COLUMNS, score_labels=SCORE_LABELS,
            title="Machine scores by injected kind (embedded sample)")
    return out


def make_plots(layout: StorageLayout, gallery_size: int = 16, max_tags: int = 9,
               log: Callable[[str], None] = lambda m: None) -> dict[str, Path]:
    """Every figure from the analysis files; returns name -> PNG path."""
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
    out["fraction_vs_anomaly"] = fraction_vs_score(cmp, layout.plot_file("fraction_vs_anomaly"), score=sigma,
                                                   x_label=sig_label, threshold=cfg.high_consensus_threshold)
    curves = {}
    for _, r in result.iterrows():
        fpr, tpr = roc_points(cmp[r["score"]], cmp["high_consensus"])
        curves[SCORE_LABELS.get(r["score"], r["score"])] = dict(fpr=fpr, tpr=tpr, auroc=r["auroc"],
                                                              ci_low=r["auroc_ci_low"], ci_high=r["auroc_ci_high"])
    out["roc_curves"] = roc_curves(curves, layout.plot_file("roc_curves"),
                                   title=f"Machine scores finding high-consensus images (n={len(cmp)}, "
                                         f"{int(cmp['high_consensus'].sum())} high)")
    out.update(_galleries(layout, table, cfg, gallery_size, log))
    out.update(_by_class(layout, table, cmp))
    return out
