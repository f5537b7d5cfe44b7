"""Sigma scores over everything scored: ``(s - mean) / std`` and ranks, within each score family.

Scores of different models, formulas or a published release are not on one scale, so each *family*
(``score_family``: model fingerprint + formula + weights, or the release's name) is normalised on its own. The
HSC high-anomaly sample was feature sigma > 3 (MODEL.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ww_assets.scores.release import SCORE_COLUMNS, SCORE_TABLE_COLUMNS, read_scores_folder
from ww_assets.storage import StorageLayout

__all__ = ["score_family", "normalise_scores", "collect_scores", "SIGMA_SUFFIX", "HIGH_SIGMA"]

#: ``<score>_sigma`` is the score in standard deviations of its family
SIGMA_SUFFIX = "_sigma"
#: the HSC high-anomaly sample: feature sigma above this (13,477 of 942,782 objects)
HIGH_SIGMA = 3.0

def score_family(config: dict) -> str:
    """Scores are comparable (one normalisation) only within a family: same model or release, same formula."""
    if config.get("source") == "release":
        return f"release:{config.get('release_name', 'published')}"
    formula = config.get("formula", "?")
    weight = config.get("lam") if formula == "hsc" else config.get("kappa")
    return f"model:{config.get('model_fingerprint', '?')}|{formula}|w={weight}|refine={config.get('refine_steps', 0)}"



def normalise_scores(frame: pd.DataFrame, family_column: str = "score_family") -> pd.DataFrame:
    """Sigma scores ``(s - mean) / std`` (population std) and the anomaly rank (1 = most anomalous).

    Computed within each score family when ``family_column`` is present (scores from different models or
    formulas are not on one scale), over the whole frame otherwise. Missing (NaN) scores stay NaN, are left out
    of the mean and std, and rank last. Input columns: image_id, batch and the three
    scores; output adds ``<score>_sigma`` for each and ``anomaly_rank``.
    """
    out = frame.copy()
    groups = out.groupby(family_column, sort=False) if family_column in out.columns else [(None, out)]
    for col in SCORE_COLUMNS:
        out[f"{col}{SIGMA_SUFFIX}"] = np.nan
    out["anomaly_rank"] = 0
    for _, sub in groups:
        for col in SCORE_COLUMNS:
            values = sub[col].to_numpy(dtype=np.float64)
            finite = np.isfinite(values)
            std = values[finite].std() if finite.any() else 0.0
            sigma = (values - values[finite].mean()) / std if std > 0 else np.where(finite, 0.0, np.nan)
            out.loc[sub.index, f"{col}_sigma"] = sigma
        ranks = sub["anomaly_score"].rank(ascending=False, method="first", na_option="bottom").astype("int64")
        out.loc[sub.index, "anomaly_rank"] = ranks
    out["anomaly_rank"] = out["anomaly_rank"].astype("int64")
    return out



def collect_scores(layout: StorageLayout, batches: list[str]) -> tuple[pd.DataFrame, list[str], int]:
    """Every scored batch's table with its score family: (frame, batches without scores, repeats dropped).

    An image scored in two batches of one family keeps its first (by batch name) row.
    """
    frames, missing = [], []
    for batch in sorted(batches):
        if not layout.scores_file(batch).exists():
            missing.append(batch)
            continue
        frame, _latents, cfg = read_scores_folder(layout.scores_dir(batch))
        frames.append(frame.assign(score_family=cfg.get("score_family") or score_family(cfg)))
    if not frames:
        return pd.DataFrame(columns=[*SCORE_TABLE_COLUMNS, "score_family"]), missing, 0
    frame = pd.concat(frames, ignore_index=True)
    dup = frame.duplicated(subset=["score_family", "image_id"], keep="first")
    return frame.loc[~dup].reset_index(drop=True), missing, int(dup.sum())
