"""One catalogue of every scored image: position, machine scores, volunteer consensus, Talk, map and neighbours.

``build_catalogue`` joins what the analysis already wrote into one row per image:

* the comparison's per-image table (``analysis/image_table.parquet``: scores, sigma scores, consensus, Talk,
  predicted interest, UMAP position; written by ``consensus_vs_score``);
* the sky position from the image batch's ``catalog.parquet`` (the survey's coordinates), or, for images with no
  cutout folder (release batches), from the Zooniverse subject's metadata in ``consensus.subject_consensus``
  (read-only); ``position_source`` says which;
* the latent-space neighbours from ``analysis/similar_images.parquet``;
* the score formula and model from each batch's ``score_config.json``.

``write_catalogue`` writes it twice, atomically: Parquet (``catalogue``: nullable types for pandas, plus astropy's
own column metadata so ``astropy.table.Table.read`` restores units and descriptions) and FITS (``catalogue_fits``:
units in TUNITn, a description per column in TCOMMn, frame, formula, model and inputs in the header). RA and Dec
are float64 degrees, ICRS, exactly as the inputs hold them. String columns are never null ("" means none), so
``Table.read`` reads both files; in FITS a missing subject id is masked (TNULL), in Parquet it is a null that
pandas reads as ``<NA>`` (astropy's Parquet reader makes such an integer column float with NaN).

No Dagster here (``ww_assets.defs.analysis.catalogue`` is the asset).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ww_assets.storage import SCORE_CONFIG_FILE, StorageLayout, atomic_path

__all__ = ["CATALOGUE_COLUMNS", "Catalogue", "build_catalogue", "catalogue_table", "write_catalogue",
           "read_catalogue_fits", "SCORE_FORMULA_KEYS"]

#: name -> (kind, unit, description); kind: f (float64), i (int64), n (nullable int64), b (bool), s (string)
CATALOGUE_COLUMNS: dict[str, tuple[str, str | None, str]] = {
    "object_id": ("s", None, "survey identity of the image (HSC object_id as text)"),
    "ra": ("f", "deg", "right ascension, ICRS"),
    "dec": ("f", "deg", "declination, ICRS"),
    "position_source": ("s", None, "source of ra/dec: catalog (cutouts), subject (Zooniverse) or none"),
    "batch": ("s", None, "image batch the image was scored in"),
    "subject_id": ("n", None, "Zooniverse subject id (masked/null: not a subject)"),
    "has_subject": ("b", None, "the image is already a Zooniverse subject"),
    "image_score": ("f", None, "image (residual) score of the wGAN"),
    "feature_score": ("f", None, "feature (critic) score of the wGAN"),
    "anomaly_score": ("f", None, "anomaly score (formula in the header, SCOREFRM)"),
    "image_score_sigma": ("f", None, "image score in standard deviations of its score family"),
    "feature_score_sigma": ("f", None, "feature score in standard deviations of its score family"),
    "anomaly_score_sigma": ("f", None, "anomaly score in standard deviations of its score family"),
    "image_score_rank": ("i", None, "rank of the image score (1 = highest)"),
    "feature_score_rank": ("i", None, "rank of the feature score (1 = highest)"),
    "anomaly_score_rank": ("i", None, "rank of the anomaly score (1 = most anomalous)"),
    "shown": ("i", None, "distinct volunteers who had the image on a page"),
    "selected": ("i", None, "distinct volunteers who selected it there"),
    "fraction": ("f", None, "volunteer fraction selected / shown (NaN: never shown)"),
    "fraction_ci_low": ("f", None, "Wilson 95% interval of the fraction, lower end"),
    "fraction_ci_high": ("f", None, "Wilson 95% interval of the fraction, upper end"),
    "comments": ("i", None, "Talk comments on its subjects"),
    "top_tag": ("s", None, "Talk hashtag with most volunteers ('' if none)"),
    "predicted_interest": ("f", None, "interest model's probability of high volunteer consensus"),
    "umap_x": ("f", None, "UMAP map of the latent space, x"),
    "umap_y": ("f", None, "UMAP map of the latent space, y"),
    "nearest_id": ("s", None, "object_id of the nearest image in latent space ('' if none)"),
    "nearest_distance": ("f", None, "latent distance to nearest_id"),
    "neighbour_ids": ("s", None, "k nearest object_ids in latent space, nearest first, comma separated"),
}

#: header keywords of the score provenance (FITS: 8 characters)
SCORE_FORMULA_KEYS = {"SCOREFRM": "anomaly score formula", "SCOREFAM": "score family (model + formula + weights)",
                      "MODELFP": "fingerprint of the wGAN that scored"}

_RENAMES = {"image_id": "object_id", "ci_low": "fraction_ci_low", "ci_high": "fraction_ci_high",
            "anomaly_rank": "anomaly_score_rank"}


@dataclass
class Catalogue:
    frame: pd.DataFrame                              # CATALOGUE_COLUMNS, one row per image
    meta: dict[str, str] = field(default_factory=dict)  # header keyword -> value (FITS-safe keys)
    comments: dict[str, str] = field(default_factory=dict)  # header keyword -> comment
    notes: list[str] = field(default_factory=list)


def _ranks(values: pd.Series) -> np.ndarray:
    return values.rank(ascending=False, method="first", na_option="bottom").astype("int64").to_numpy()


def _positions(layout: StorageLayout, batches, subject_positions: pd.DataFrame | None):
    """(catalog positions: image_id, ra, dec, batch, position_source; subject positions or None): the batch catalog
    first, the subject's metadata for images without one. Rows with no finite position are left out."""
    frames = []
    for b in sorted({str(b) for b in batches}):
        path = layout.catalog_file(b)
        if path.exists():
            c = pd.read_parquet(path, columns=["image_id", "ra", "dec"]).astype({"image_id": str})
            frames.append(c.assign(batch=b, position_source="catalog"))
    cat = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["image_id", "ra", "dec", "batch", "position_source"])
    cat = cat[np.isfinite(cat["ra"].astype(float)) & np.isfinite(cat["dec"].astype(float))]
    cat = cat.drop_duplicates(["image_id", "batch"])
    if subject_positions is not None and len(subject_positions):
        s = subject_positions.assign(ra=pd.to_numeric(subject_positions["ra"], errors="coerce"),
                                     dec=pd.to_numeric(subject_positions["dec"], errors="coerce"))
        s = s[np.isfinite(s["ra"]) & np.isfinite(s["dec"]) & s["image_id"].notna()].astype({"image_id": str})
        s = s.drop_duplicates("image_id")[["image_id", "ra", "dec"]].assign(position_source="subject")
    else:
        s = None
    return cat, s


def _neighbours(similar: pd.DataFrame | None) -> pd.DataFrame | None:
    if similar is None or not len(similar):
        return None
    s = similar.astype({"image_id": str, "neighbour_id": str}).sort_values(["image_id", "rank"], kind="stable")
    g = s.groupby("image_id", sort=False)
    return pd.DataFrame({"nearest_id": g["neighbour_id"].first(), "nearest_distance": g["distance"].first(),
                         "neighbour_ids": g["neighbour_id"].agg(",".join)}).reset_index()


def score_provenance(layout: StorageLayout, batches) -> tuple[dict[str, str], list[str]]:
    """The formula, score family and model fingerprint recorded with the batches' scores (each unique value once,
    '; ' joined), and notes on batches without a record."""
    seen: dict[str, list[str]] = {"description": [], "score_family": [], "model_fingerprint": []}
    notes = []
    for b in sorted({str(b) for b in batches}):
        path = layout.scores_dir(b) / SCORE_CONFIG_FILE
        if not path.exists():
            notes.append(f"batch {b}: no {path}")
            continue
        record = json.loads(path.read_text())
        description = record.get("description")
        if not description and record.get("source", "model") == "model" and record.get("formula"):
            from ww_assets.scores.anomaly import ScoreConfig   # imports torch: only for records without one

            description = ScoreConfig.from_dict(record).describe()
        values = {"description": description or record.get("formula") or record.get("source") or "",
                  "score_family": record.get("score_family") or "",
                  "model_fingerprint": str(record.get("model_fingerprint") or record.get("release_name") or "")}
        for k, v in values.items():
            if v and v not in seen[k]:
                seen[k].append(v)
    return ({"SCOREFRM": "; ".join(seen["description"]), "SCOREFAM": "; ".join(seen["score_family"]),
             "MODELFP": "; ".join(seen["model_fingerprint"])}, notes)


def build_catalogue(layout: StorageLayout, *, subject_positions: pd.DataFrame | None = None,
                    log: Callable[[str], None] = lambda m: None) -> Catalogue:
    """One row per scored image of ``analysis/image_table.parquet`` (see the module docstring for the sources).

    ``subject_positions``: image_id, ra, dec of Zooniverse subjects (``consensus.subject_consensus``), used only
    for images whose batch has no catalog position.
    """
    path = layout.analysis_file("image_table")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialise consensus_vs_score first")
    table = pd.read_parquet(path)
    table["image_id"] = table["image_id"].astype(str)
    table["batch"] = table["batch"].astype(str)
    if table["image_id"].duplicated().any():
        raise ValueError(f"{path}: image_id repeats ({int(table['image_id'].duplicated().sum())} rows); the image "
                         "table holds one score family, one row per image")
    cat, subj = _positions(layout, table["batch"], subject_positions)
    out = table.merge(cat, on=["image_id", "batch"], how="left")
    if subj is not None:
        missing = out["ra"].isna()
        fill = out.loc[missing, ["image_id"]].merge(subj, on="image_id", how="left")
        for col in ("ra", "dec", "position_source"):
            out.loc[missing, col] = fill[col].to_numpy()
    out["position_source"] = out["position_source"].fillna("none")
    notes = []
    n_none = int((out["position_source"] == "none").sum())
    if n_none:
        notes.append(f"{n_none} images have no sky position (no catalog row, not a subject): ra/dec NaN")
    sim_path = layout.analysis_file("similar_images")
    neigh = _neighbours(pd.read_parquet(sim_path) if sim_path.exists() else None)
    if neigh is not None:
        out = out.merge(neigh, on="image_id", how="left")
    else:
        notes.append(f"{sim_path} missing: no neighbours")
    out = out.rename(columns=_RENAMES)
    for col in ("image_score", "feature_score", "anomaly_score"):
        if col != "anomaly_score" or "anomaly_score_rank" not in out.columns:
            out[f"{col}_rank"] = _ranks(out[col])
    frame = pd.DataFrame(index=out.index)
    for name, (kind, _unit, _desc) in CATALOGUE_COLUMNS.items():
        v = out[name] if name in out.columns else pd.Series(np.nan, index=out.index)
        if kind == "f":
            frame[name] = pd.to_numeric(v, errors="coerce").astype("float64")
        elif kind == "i":
            frame[name] = pd.to_numeric(v, errors="coerce").fillna(0).astype("int64")
        elif kind == "n":
            frame[name] = pd.to_numeric(v, errors="coerce").astype("Int64")
        elif kind == "b":
            frame[name] = np.array([bool(x) if pd.notna(x) else False for x in v], dtype=bool)
        else:
            frame[name] = v.where(v.notna(), "").astype(str)
    frame = frame.sort_values("anomaly_score_rank", kind="stable").reset_index(drop=True)
    meta, prov_notes = score_provenance(layout, frame["batch"].unique())
    notes += prov_notes
    from ww_assets import __version__

    meta.update({"RADESYS": "ICRS", "ORIGIN": f"ww_assets {__version__}",
                 "DATE": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                 "NIMAGES": str(len(frame)), "INPUTS": "analysis/image_table.parquet, images/<batch>/catalog.parquet, "
                 "analysis/similar_images.parquet, scores/<batch>/score_config.json"})
    comments = {**SCORE_FORMULA_KEYS, "RADESYS": "frame of ra, dec (deg, float64)", "ORIGIN": "written by",
                "DATE": "UTC time written", "NIMAGES": "rows", "INPUTS": "read from the storage root"}
    for n in notes:
        log(n)
    return Catalogue(frame=frame, meta=meta, comments=comments, notes=notes)


def catalogue_table(cat: Catalogue):
    """The catalogue as an ``astropy.table.Table`` with units, descriptions and the header in ``meta``. The nullable
    subject id becomes a masked column."""
    import astropy.units as u
    from astropy.table import Column, MaskedColumn, Table

    t = Table(meta=dict(cat.meta))
    for name, (kind, unit, desc) in CATALOGUE_COLUMNS.items():
        v = cat.frame[name]
        kw = {"name": name, "description": desc, "unit": u.Unit(unit) if unit else None}
        if kind == "n":
            # fill (FITS TNULL) -1: astropy's default, 999999, could be a real subject id
            t.add_column(MaskedColumn(v.fillna(-1).to_numpy("int64"), mask=v.isna().to_numpy(), fill_value=-1, **kw))
        elif kind == "s":
            t.add_column(Column(v.to_numpy(str), **kw))
        else:
            t.add_column(Column(v.to_numpy(), **kw))
    return t


def _parquet_bytes_meta(cat: Catalogue) -> dict[bytes, bytes]:
    """astropy's own Parquet metadata (units, descriptions, header; string widths), as ``Table.write`` adds it."""
    from astropy.table import meta as table_meta

    t = catalogue_table(cat)
    plain = t.filled(0) if t.has_masked_columns else t
    md = {"table_meta_yaml": "\n".join(table_meta.get_yaml_from_table(plain))}
    for name, (kind, _u, _d) in CATALOGUE_COLUMNS.items():
        if kind == "s":
            md[f"table::len::{name}"] = str(max(1, plain[name].dtype.itemsize // 4))
    return {k.encode(): v.encode() for k, v in md.items()}


def write_catalogue(cat: Catalogue, layout: StorageLayout) -> tuple[Path, Path]:
    """Write ``catalogue`` (Parquet) and ``catalogue_fits`` (FITS) atomically; returns their paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy.io import fits

    parquet_path, fits_path = layout.analysis_file("catalogue"), layout.analysis_file("catalogue_fits")
    arrow = pa.Table.from_pandas(cat.frame, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **_parquet_bytes_meta(cat)})
    with atomic_path(parquet_path) as tmp:
        pq.write_table(arrow, tmp)
    hdu = fits.table_to_hdu(catalogue_table(cat))
    hdu.name = "CATALOGUE"
    for i, (name, (_k, _u, desc)) in enumerate(CATALOGUE_COLUMNS.items(), start=1):
        hdu.header[f"TCOMM{i}"] = desc
    for key, comment in cat.comments.items():
        if key in hdu.header:
            hdu.header.comments[key] = comment
    with atomic_path(fits_path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp, output_verify="exception")
    return parquet_path, fits_path


def read_catalogue_fits(path: str | Path):
    """The FITS catalogue as an astropy Table (units from TUNITn, header in ``meta``)."""
    from astropy.table import Table

    return Table.read(path, hdu="CATALOGUE")
