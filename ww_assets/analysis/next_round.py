"""The next volunteer round: which not-yet-seen images to put in front of volunteers, as a Zooniverse upload.

1. ``rank_candidates``: images that are not Zooniverse subjects yet, ranked by predicted volunteer interest
   (from ``comparison.fit_interest_model``; the anomaly score when no interest model could be fitted), with an
   epsilon-greedy share of uniformly random picks so the model keeps learning about regions it rates low.
2. ``write_manifest``: PNG images plus ``manifest.csv`` in the format the Zooniverse uploaders take (the Project
   Builder's drag-and-drop manifest and ``panoptes subject-set upload-subjects``): one row per subject, a header
   row, the image file name (relative to the manifest's folder) in the first column, metadata in the others.
   Columns starting with ``#`` are hidden from volunteers, so the machine's opinion cannot steer them; W&W's own
   visible metadata (object_id, ra, dec) is kept as the live project has it.
3. ``validate_manifest``: the checks panoptes-cli makes before it uploads (files exist, non-empty, at most 1 MiB,
   an allowed image type) plus the ones a good manifest needs (unique, non-empty headers and subject identities).

Uploading the manifest to Zooniverse (subject set, subjects, images) is Zooniverse-facing and lives in
``ww_assets.zooniverse.upload`` (``connect_from_env``, ``upload_manifest``), which validates with the function here.
No Dagster here.
"""

from __future__ import annotations

import csv
import io
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ww_assets.storage import atomic_dir

MANIFEST_NAME = "manifest.csv"
IMAGE_COLUMN = "image"
VISIBLE_COLUMNS = ("object_id", "ra", "dec")
HIDDEN_COLUMNS = ("#batch", "#rank", "#selection", "#predicted_interest", "#anomaly_sigma", "#anomaly_score",
                  "#round")
MAX_UPLOAD_BYTES = 1024 * 1024  # panoptes-cli's limit per media file
ALLOWED_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif")


# --------------------------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------------------------


def rank_candidates(
    table: pd.DataFrame,
    n: int,
    *,
    exploration: float = 0.1,
    seed: int = 20211,
    interest_col: str = "predicted_interest",
    fallback_col: str = "anomaly_score",
) -> pd.DataFrame:
    """Pick ``n`` images without a subject: ``round((1-exploration) n)`` by highest interest, the rest at random.

    Returns the picks in upload order with ``rank`` (1..n), ``selection`` ("exploit" | "explore") and
    ``ranking_basis`` (the column that ranked them). Deterministic for a given seed and table.
    """
    if not 0.0 <= exploration <= 1.0:
        raise ValueError(f"exploration must be in [0, 1], got {exploration}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    pool = table[~table["has_subject"].astype(bool)].copy() if "has_subject" in table.columns else table.copy()
    basis = interest_col if interest_col in pool.columns and np.isfinite(pool[interest_col].to_numpy(float)).any() \
        else fallback_col
    value = pd.to_numeric(pool[basis], errors="coerce")
    pool = pool[np.isfinite(value)].assign(_value=value[np.isfinite(value)])
    pool = pool.sort_values(["_value", "image_id"], ascending=[False, True], kind="stable")
    n = min(n, len(pool))
    n_explore = int(round(exploration * n))
    exploit = pool.head(n - n_explore)
    rest = pool.iloc[n - n_explore:]
    rng = np.random.default_rng(seed)
    explore = rest.iloc[np.sort(rng.choice(len(rest), size=min(n_explore, len(rest)), replace=False))] \
        if n_explore else rest.head(0)
    picks = pd.concat([exploit.assign(selection="exploit"), explore.assign(selection="explore")])
    picks = picks.drop(columns="_value").reset_index(drop=True)
    picks["rank"] = np.arange(1, len(picks) + 1, dtype=np.int32)
    picks["ranking_basis"] = basis
    return picks


# --------------------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------------------


def _png_bytes(image: np.ndarray, scale: int = 1) -> bytes:
    from PIL import Image

    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        raise ValueError(f"cutouts must be uint8 RGB, got {a.dtype}")
    a = a[::-1]  # cutouts.npy keeps FITS row order (row 0 = south); image files store the top (north) row first
    img = Image.fromarray(np.ascontiguousarray(a), mode="RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _fmt(v) -> str:
    """A manifest cell: floats at full float64 precision (``repr``: the shortest text that reads back to the same
    double, so RA/Dec keep every digit the catalogue has), missing values empty."""
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


def manifest_rows(picks: pd.DataFrame, round_name: str) -> list[dict[str, str]]:
    rows = []
    for r in picks.itertuples(index=False):
        d = r._asdict()
        rows.append({
            IMAGE_COLUMN: f"{d['image_id']}.png",
            "object_id": str(d["image_id"]),
            "ra": _fmt(d.get("ra")),
            "dec": _fmt(d.get("dec")),
            "#batch": _fmt(d.get("batch")),
            "#rank": _fmt(d.get("rank")),
            "#selection": _fmt(d.get("selection")),
            "#predicted_interest": _fmt(d.get("predicted_interest")),
            "#anomaly_sigma": _fmt(d.get("anomaly_score_sigma")),
            "#anomaly_score": _fmt(d.get("anomaly_score")),
            "#round": round_name,
        })
    return rows


def write_manifest(
    picks: pd.DataFrame,
    get_image: Callable[[str, str], np.ndarray],
    out_dir: str | Path,
    *,
    round_name: str,
    image_scale: int = 1,
) -> Path:
    """Write ``out_dir/manifest.csv`` and one ``<image_id>.png`` per pick; the folder is replaced whole.

    ``get_image(batch, image_id)`` returns the uint8 RGB cutout the model scored (channels first or last, rows in
    FITS order as in ``cutouts.npy``); the PNG is written north up, as the sample's thumbnails are.
    """
    out_dir = Path(out_dir)
    rows = manifest_rows(picks, round_name)
    columns = [IMAGE_COLUMN, *VISIBLE_COLUMNS, *HIDDEN_COLUMNS]
    with atomic_dir(out_dir) as tmp:
        for r, row in zip(picks.itertuples(index=False), rows):
            data = _png_bytes(get_image(str(r.batch), str(r.image_id)), scale=image_scale)
            (tmp / row[IMAGE_COLUMN]).write_bytes(data)
        with open(tmp / MANIFEST_NAME, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
    return out_dir / MANIFEST_NAME


@dataclass
class ManifestRow:
    line: int
    files: list[Path]
    metadata: dict[str, str]


def read_manifest(path: str | Path) -> tuple[list[str], list[ManifestRow]]:
    """Parse a manifest as panoptes-cli does: header row, then each row's local files auto-detected (any value
    naming an existing file beside the manifest) and every column (``%`` index prefix removed) as metadata."""
    path = Path(path)
    root = path.parent
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        headers = next(reader, [])
        rows = []
        for line, row in enumerate(reader, start=2):
            clean = [h.lstrip("%") for h in headers]
            files = [root / v for v in row if v and (root / v).is_file()]
            rows.append(ManifestRow(line=line, files=files, metadata=dict(zip(clean, row))))
    return headers, rows


def validate_manifest(path: str | Path, *, id_column: str = "object_id") -> list[str]:
    """Problems that would make the upload fail or produce bad subjects; an empty list means it is ready."""
    path = Path(path)
    if not path.is_file():
        return [f"{path}: no such manifest"]
    problems = []
    headers, rows = read_manifest(path)
    if not headers:
        return [f"{path}: empty file (no header row)"]
    if any(not h.strip() for h in headers):
        problems.append(f"{path}: empty column name in header {headers}")
    if len(set(headers)) != len(headers):
        problems.append(f"{path}: duplicate column names in header {headers}")
    if id_column not in headers:
        problems.append(f"{path}: no {id_column!r} column (W&W subjects carry the survey identity in metadata)")
    if not rows:
        problems.append(f"{path}: no subject rows")
    seen: dict[str, int] = {}
    for r in rows:
        if len(r.metadata) != len(headers):
            problems.append(f"{path}:{r.line}: {len(r.metadata)} fields for {len(headers)} columns")
        if not r.files:
            problems.append(f"{path}:{r.line}: no media file found beside the manifest")
        for f in r.files:
            size = f.stat().st_size
            mime = mimetypes.guess_type(f.name)[0]
            if size == 0:
                problems.append(f"{path}:{r.line}: {f.name} is empty")
            elif size > MAX_UPLOAD_BYTES:
                problems.append(f"{path}:{r.line}: {f.name} is {size} bytes, over the {MAX_UPLOAD_BYTES} limit")
            if mime not in ALLOWED_IMAGE_TYPES:
                problems.append(f"{path}:{r.line}: {f.name} has type {mime}, not one of {ALLOWED_IMAGE_TYPES}")
        key = r.metadata.get(id_column, "")
        if id_column in headers and not key:
            problems.append(f"{path}:{r.line}: empty {id_column}")
        elif key in seen:
            problems.append(f"{path}:{r.line}: {id_column} {key} repeats line {seen[key]}")
        else:
            seen[key] = r.line
    return problems


def manifest_columns() -> Sequence[str]:
    return [IMAGE_COLUMN, *VISIBLE_COLUMNS, *HIDDEN_COLUMNS]


def picks_for_file(picks: pd.DataFrame) -> pd.DataFrame:
    """The picks as written to ``next_round_picks.parquet``: text columns with no nulls ("" for none, e.g. an image
    without a Talk tag), so ``astropy.table.Table.read`` reads the file as pandas does."""
    out = picks.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col].dtype):
            if out[col].map(lambda v: v is None or isinstance(v, str) or (isinstance(v, float) and np.isnan(v))).all():
                out[col] = out[col].where(out[col].notna(), "").astype(str)
    return out


@dataclass
class NextRound:
    picks: pd.DataFrame
    manifest: Path
    round_name: str


def build_next_round(layout, n_subjects: int, *, exploration: float = 0.1, seed: int = 20211, image_scale: int = 1,
                     round_name: str | None = None, log: Callable[[str], None] = lambda m: None) -> NextRound:
    """Rank the images that are not subjects yet, write ``analysis/next_round/`` (manifest + PNGs) and the picks
    table, and validate the manifest as the uploader would. Needs the comparison's per-image table."""
    import datetime as dt

    from ww_assets.images.store import CutoutStore
    from ww_assets.storage import atomic_path

    path = layout.analysis_file("image_table")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialise consensus_vs_score first")
    table = pd.read_parquet(path)
    store = CutoutStore(layout)
    # images whose cutouts exist (release batches carry no images and cannot be shown)
    have = np.array([store.get(b, i) is not None for b, i in zip(table["batch"], table["image_id"])], bool) \
        if len(table) else np.zeros(0, bool)
    if (~have).any():
        log(f"{int((~have).sum())} scored images have no cutout and cannot be offered")
    pool = table[have & ~table["has_subject"].astype(bool)]
    if pool.empty:
        raise ValueError("every scored image with a cutout is already a Zooniverse subject: nothing to send")
    picks = rank_candidates(pool, n_subjects, exploration=exploration, seed=seed)
    positions = [pd.read_parquet(layout.catalog_file(str(b)), columns=["image_id", "ra", "dec"]).astype({"image_id": str})
                 for b in picks["batch"].unique() if layout.catalog_file(str(b)).exists()]
    if positions:
        picks = picks.drop(columns=[c for c in ("ra", "dec") if c in picks.columns]).merge(
            pd.concat(positions).drop_duplicates("image_id"), on="image_id", how="left")
    round_name = round_name or f"ww-next-round-{dt.datetime.now(dt.timezone.utc):%Y%m%d}"
    manifest = write_manifest(picks, store.require, layout.analysis_file("next_round"), round_name=round_name,
                              image_scale=image_scale)
    with atomic_path(layout.analysis_file("next_round_picks")) as tmp:
        picks_for_file(picks).to_parquet(tmp, index=False)
    problems = validate_manifest(manifest)
    if problems:
        raise ValueError(f"manifest {manifest} failed validation: {problems[:5]}")
    return NextRound(picks, manifest, round_name)
