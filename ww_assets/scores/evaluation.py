"""How well the scores find known oddities: AUROC and average precision against a truth table.

Only the embedded sample (and benchmark samples) have a truth table (``truth.csv``: the injected label of each
image); nothing that scores ever reads it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ww_assets.scores.release import SCORE_COLUMNS

__all__ = ["read_truth", "detection_metrics"]


def read_truth(path) -> pd.DataFrame | None:
    """The sample's truth table (``truth.csv``) as ``image_id`` (text), ``label``, ``is_odd`` and ``is_artifact``
    (booleans) and ``kind`` (normal / oddity / artifact); None when the file does not exist. The one reader of
    truth files: the comparison, the detection metrics and the benchmarks all use it."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return None
    t = pd.read_csv(path, dtype={"object_id": str, "image_id": str})
    t = t.rename(columns={"object_id": "image_id"})
    t["image_id"] = t["image_id"].astype(str)
    t["is_odd"] = _truthy(t["is_odd"]) if "is_odd" in t.columns else False
    t["is_artifact"] = _truthy(t["is_artifact"]) if "is_artifact" in t.columns else False
    t["kind"] = np.where(t["is_artifact"], "artifact", np.where(t["is_odd"], "oddity", "normal"))
    return t

def _truthy(values: pd.Series) -> np.ndarray:
    """Booleans from a column that may hold booleans or their text ("True", "1", "yes")."""
    if values.dtype == bool:
        return values.to_numpy()
    return values.astype(str).str.strip().str.lower().isin(["1", "true", "t", "yes"]).to_numpy()



def detection_metrics(scores: pd.DataFrame, truth: pd.DataFrame,
                      score_columns: tuple[str, ...] = tuple(SCORE_COLUMNS)) -> pd.DataFrame:
    """AUROC and average precision of each score for the injected oddities, overall and per injected class.

    ``scores``: image_id + score columns. ``truth``: ``object_id`` (or ``image_id``), ``label``, ``is_odd``
    (astrophysical oddity) and optionally ``is_artifact``. Negatives are always the *normal* images (neither
    odd nor artifact); positives are, per target: ``all_injected`` (odd or artifact), ``astrophysical``
    (is_odd), ``artifact`` (is_artifact), and each injected label on its own. Images absent from either table
    are left out. Returns rows (target, score, n_pos, n_neg, auroc, average_precision, prevalence).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    truth = truth.rename(columns={"object_id": "image_id"}).copy()
    truth["image_id"] = truth["image_id"].astype(str)
    for col in ("is_odd", "is_artifact"):
        truth[col] = _truthy(truth[col]) if col in truth.columns else False
    merged = scores.assign(image_id=scores["image_id"].astype(str)).merge(
        truth[["image_id", "label", "is_odd", "is_artifact"]], on="image_id", how="inner")
    odd, artifact = merged["is_odd"].to_numpy(bool), merged["is_artifact"].to_numpy(bool)
    normal = ~odd & ~artifact
    labels = merged["label"].astype(str).to_numpy()
    targets = [("all_injected", odd | artifact), ("astrophysical", odd), ("artifact", artifact)]
    targets += [(label, labels == label) for label in sorted(set(labels[~normal]))]
    rows = []
    for target, positive in targets:
        keep = positive | normal
        for col in score_columns:
            s = merged[col].to_numpy(dtype=np.float64)[keep]
            finite = np.isfinite(s)                       # a missing score is left out, not guessed
            y, s = positive[keep][finite], s[finite]
            n_pos, n_neg = int(y.sum()), int((~y).sum())
            ok = n_pos > 0 and n_neg > 0
            rows.append({"target": target, "score": col, "n_pos": n_pos, "n_neg": n_neg,
                         "auroc": float(roc_auc_score(y, s)) if ok else np.nan,
                         "average_precision": float(average_precision_score(y, s)) if ok else np.nan,
                         "prevalence": n_pos / max(1, n_pos + n_neg)})
    return pd.DataFrame(rows, columns=["target", "score", "n_pos", "n_neg", "auroc", "average_precision",
                                       "prevalence"])

