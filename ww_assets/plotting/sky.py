"""Where an image is on the sky, as the figures and the interactive map show it: RA/Dec read from the cutout
catalogs, the arcsec scale of a cutout, and the survey-viewer link (the one place its URL pattern is written).

HSC-SSP cutouts are 0.168" per pixel (the survey's coadd scale; the embedded sample is drawn at the same scale), so
a 96-pixel cutout spans 16.1". The viewer is the Legacy Survey sky viewer on its HSC-SSP PDR2 layer, centred and
marked on the object: it needs no account and shows the neighbourhood of the cutout at the survey's depth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["HSC_PIXEL_SCALE_ARCSEC", "SURVEY_VIEWER", "SURVEY_VIEWER_URL", "format_radec", "positions",
           "survey_viewer_url"]

#: arcsec per pixel of the cutouts (HSC-SSP coadds)
HSC_PIXEL_SCALE_ARCSEC = 0.168
#: the survey viewer, and its URL for one position (degrees; ``mark`` draws a marker on the object)
SURVEY_VIEWER = "Legacy Survey viewer, HSC-SSP PDR2 layer"
SURVEY_VIEWER_URL = ("https://www.legacysurvey.org/viewer?ra={ra:.6f}&dec={dec:.6f}&layer=hsc-dr2&zoom=16"
                     "&mark={ra:.6f},{dec:.6f}")


def _finite(*values) -> bool:
    try:
        return all(np.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def survey_viewer_url(ra, dec) -> str | None:
    """The survey viewer at (ra, dec) in degrees, or None without a finite position."""
    return SURVEY_VIEWER_URL.format(ra=float(ra), dec=float(dec)) if _finite(ra, dec) else None


def format_radec(ra, dec, digits: int = 4) -> str:
    """'RA 139.4338 Dec +2.2181' (degrees; 4 decimals is 0.36"), or '' without a finite position."""
    return f"RA {float(ra):.{digits}f} Dec {float(dec):+.{digits}f}" if _finite(ra, dec) else ""


def positions(layout, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``ra`` and ``dec`` filled from the cutout catalogs (``images/<batch>/catalog.parquet``) where
    the frame has none; rows whose batch has no catalog, or a catalog without positions, keep NaN."""
    out = frame.copy()
    for col in ("ra", "dec"):
        if col not in out.columns:
            out[col] = np.nan
        out[col] = pd.to_numeric(out[col], errors="coerce")
    missing = out["ra"].isna() | out["dec"].isna()
    if not missing.any() or "batch" not in out.columns:
        return out
    cats = []
    for batch in out.loc[missing, "batch"].dropna().astype(str).unique():
        path = layout.catalog_file(batch)
        if not path.exists():
            continue
        try:
            cat = pd.read_parquet(path, columns=["image_id", "ra", "dec"])
        except (KeyError, ValueError, OSError):  # a catalog without positions
            continue
        cats.append(cat.assign(batch=batch))
    if not cats:
        return out
    cat = pd.concat(cats, ignore_index=True).astype({"image_id": str, "batch": str})
    cat = cat.drop_duplicates(["batch", "image_id"])
    key = pd.MultiIndex.from_arrays([out["batch"].astype(str), out["image_id"].astype(str)])
    found = cat.set_index(["batch", "image_id"]).reindex(key)
    for col in ("ra", "dec"):
        fill = pd.to_numeric(found[col], errors="coerce").to_numpy(float)
        out[col] = np.where(missing.to_numpy() & np.isfinite(fill), fill, out[col].to_numpy(float))
    return out
