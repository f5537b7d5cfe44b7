"""Score tables on disk: the published Weird & Wonderful release formats, in and out, and what is built on them.

The published release ships, per scoring run, a **score CSV** (``image_identifier, image score, feature score,
anomaly score``) and an **(N, 128) latent .npy** whose row k is the latent vector of CSV row k. This module:

* writes a scored batch as ``scores/<batch>/``: ``scores.parquet`` (ours), ``anomaly_scores.csv`` and
  ``latent_vectors.npy`` (the release formats, same row order) and ``score_config.json`` (how the scores were
  made), and reads such a folder back, checking that the files agree;
* reads a folder of published CSV/npy pairs (:func:`discover_release_runs`, :func:`read_release_run`) so that a
  release flows into the analysis without re-scoring; a CSV whose rows do not match its npy is an error naming
  both files;
Sigma normalisation over every batch is ``ww_assets.scores.normalise``; evaluation against a truth table is
``ww_assets.scores.evaluation``.

Plain module: no Dagster, no torch.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ww_assets.storage import LATENTS_FILE, RELEASE_SCORES_FILE, SCORE_CONFIG_FILE, SCORES_FILE

LATENT_DIM = 128
SCORE_COLUMNS = ["image_score", "feature_score", "anomaly_score"]
RELEASE_CSV_COLUMNS = ["image_identifier", *SCORE_COLUMNS]
SCORE_TABLE_COLUMNS = ["image_id", "batch", *SCORE_COLUMNS]
RELEASE_BATCH_PREFIX = "release-"

# Column names seen in published tables, normalised (lower case, spaces/hyphens -> '_') -> our names.
_COLUMN_SYNONYMS = {
    "image_identifier": "image_identifier", "image_id": "image_identifier", "object_id": "image_identifier",
    "objid": "image_identifier", "idx": "image_identifier",
    "image_score": "image_score", "generator_score": "image_score", "gen_score": "image_score",
    "feature_score": "feature_score", "discriminator_score": "feature_score", "disc_score": "feature_score",
    "anomaly_score": "anomaly_score", "score": "anomaly_score",
}


class ReleaseError(ValueError):
    """Score files that cannot be used as they are: missing columns, rows that do not match, bad values."""


# --------------------------------------------------------------------------------------------------------------
# Score tables in memory
# --------------------------------------------------------------------------------------------------------------

@dataclass
class ScoreTable:
    """Scores and latents of one batch, row k of every array describing image ``image_ids[k]``."""

    image_ids: np.ndarray          # str, (N,)
    image_score: np.ndarray        # float64, (N,)
    feature_score: np.ndarray
    anomaly_score: np.ndarray
    latents: np.ndarray            # float32, (N, 128)

    def __post_init__(self) -> None:
        self.image_ids = np.asarray(self.image_ids).astype(str).astype(object)
        for name in SCORE_COLUMNS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64).reshape(-1))
        self.latents = np.asarray(self.latents, dtype=np.float32)
        n = len(self.image_ids)
        sizes = {name: len(getattr(self, name)) for name in SCORE_COLUMNS}
        if any(v != n for v in sizes.values()) or self.latents.shape[0] != n:
            raise ReleaseError(f"score arrays disagree in length: {n} ids, {sizes}, latents {self.latents.shape}")
        if self.latents.ndim != 2:
            raise ReleaseError(f"latents must be (N, D), got {self.latents.shape}")

    def __len__(self) -> int:
        return len(self.image_ids)

    def frame(self, batch: str) -> pd.DataFrame:
        """Our table: image_id, batch, image_score, feature_score, anomaly_score."""
        return pd.DataFrame({"image_id": pd.array(self.image_ids, dtype=str), "batch": batch,
                             **{c: getattr(self, c) for c in SCORE_COLUMNS}})[SCORE_TABLE_COLUMNS]

    def release_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"image_identifier": pd.array(self.image_ids, dtype=str),
                             **{c: getattr(self, c) for c in SCORE_COLUMNS}})[RELEASE_CSV_COLUMNS]


# --------------------------------------------------------------------------------------------------------------
# The published formats
# --------------------------------------------------------------------------------------------------------------

def _normalise_column(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def read_release_csv(path: str | Path) -> pd.DataFrame:
    """A published score CSV as ``image_identifier`` (text) + three float score columns, rows in file order.

    Accepts the published header (``image score``) and ours (``image_score``), generator/discriminator synonyms,
    and a leading unnamed index column.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        text_columns = {c: pa.string() for c in header
                        if _COLUMN_SYNONYMS.get(_normalise_column(c)) == "image_identifier"}
        frame = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types=text_columns, strings_can_be_null=False)).to_pandas()
    except Exception as exc:  # noqa: BLE001
        raise ReleaseError(f"{path}: cannot be read as CSV: {exc}") from exc
    renamed = {}
    for col in frame.columns:
        target = _COLUMN_SYNONYMS.get(_normalise_column(col))
        if target and target not in renamed.values():
            renamed[col] = target
    frame = frame.rename(columns=renamed)
    missing = [c for c in RELEASE_CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise ReleaseError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)} "
                           f"(expected {RELEASE_CSV_COLUMNS})")
    out = pd.DataFrame({"image_identifier": frame["image_identifier"].astype(str).str.strip()})
    for col in SCORE_COLUMNS:
        raw = frame[col]
        if pd.api.types.is_numeric_dtype(raw):
            values = raw.astype("float64")
        else:
            text = raw.astype(str).str.strip()
            values = pd.to_numeric(text, errors="coerce")
            bad = values.isna() & ~text.str.lower().isin(["", "nan", "none", "null"])
            if bad.any():
                line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
                raise ReleaseError(f"{path}: column {col} is not numeric at line {line}: {text.iloc[line - 2]!r}")
        out[col] = values.astype("float64")
    if (out["image_identifier"] == "").any():
        line = int(np.flatnonzero((out["image_identifier"] == "").to_numpy())[0]) + 2
        raise ReleaseError(f"{path}: empty image_identifier at line {line}")
    return out


def write_release_csv(path: str | Path, table: ScoreTable) -> None:
    """``image_identifier,image_score,feature_score,anomaly_score``, shortest round-trip floats (exact on re-read).

    Written by Arrow's CSV writer (about ten times faster than pandas: it matters at a million rows a batch);
    identifiers needing quotes (a comma, quote or newline in them) fall back to pandas' quoting.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    frame = table.release_frame()
    ids = frame["image_identifier"]
    if len(ids) and ids.str.contains(r'[,"\r\n]', regex=True).any():
        frame.to_csv(path, index=False, lineterminator="\n")
        return
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    with open(path, "wb") as fh:
        fh.write((",".join(RELEASE_CSV_COLUMNS) + "\n").encode())
        pacsv.write_csv(arrow, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))


def read_latents(path: str | Path, mmap: bool = False) -> np.ndarray:
    path = Path(path)
    try:
        latents = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise ReleaseError(f"{path}: cannot be read as .npy: {exc}") from exc
    if latents.ndim != 2 or latents.shape[1] != LATENT_DIM:
        raise ReleaseError(f"{path}: expected latent vectors of shape (N, {LATENT_DIM}), got {latents.shape}")
    return latents


def read_release_run(csv_path: str | Path, npy_path: str | Path) -> ScoreTable:
    """One published run: its score CSV and latent npy, checked to describe the same images in the same order."""
    csv_path, npy_path = Path(csv_path), Path(npy_path)
    for path in (csv_path, npy_path):
        if not path.exists():
            raise ReleaseError(f"{path} does not exist")
    frame = read_release_csv(csv_path)
    latents = read_latents(npy_path, mmap=True)
    if latents.shape[0] != len(frame):
        raise ReleaseError(f"row mismatch: {csv_path} has {len(frame)} rows but {npy_path} has "
                           f"{latents.shape[0]} latent vectors; they must pair row by row")
    dups = frame["image_identifier"].duplicated()
    if dups.any():
        raise ReleaseError(f"{csv_path}: {int(dups.sum())} duplicated image_identifier(s), e.g. "
                           f"{frame['image_identifier'][dups].iloc[0]!r}")
    latents = np.asarray(latents, dtype=np.float32)
    if not np.isfinite(latents).all():
        rows = np.flatnonzero(~np.isfinite(latents).all(axis=1))
        raise ReleaseError(f"{npy_path}: non-finite latent values in {len(rows)} row(s), first at row {rows[0]}")
    return ScoreTable(frame["image_identifier"].to_numpy(), frame["image_score"].to_numpy(),
                      frame["feature_score"].to_numpy(), frame["anomaly_score"].to_numpy(), latents)


@dataclass(frozen=True)
class ReleaseRun:
    """One CSV/npy pair found in a release folder, and the batch (partition) name it registers as."""

    batch: str
    csv: Path
    npy: Path


_CSV_TOKENS = re.compile(r"(?:^|_)(?:anomaly_scores?|scores?|catalog)(?=_|$)", re.IGNORECASE)
_NPY_TOKENS = re.compile(r"(?:^|_)(?:latent_vectors?|latents?|z)(?=_|$)", re.IGNORECASE)


def _pair_key(stem: str, tokens: re.Pattern) -> str:
    """``run3-anomaly_scores`` -> ``run3``; ``latent_vectors`` -> ``''`` (the tokens removed as whole words)."""
    joined = "_".join(p for p in re.split(r"[_\-.\s]+", stem) if p)
    return re.sub(r"_+", "_", tokens.sub("", joined)).strip("_")


def release_batch_name(key: str) -> str:
    """The partition name of a release run: ``release-<key>`` with only [A-Za-z0-9_.-] kept."""
    safe = re.sub(r"[^A-Za-z0-9_.\-]+", "_", key).strip("_") or "run"
    return f"{RELEASE_BATCH_PREFIX}{safe}"


def is_release_batch(batch: str) -> bool:
    return batch.startswith(RELEASE_BATCH_PREFIX)


def discover_release_runs(release_dir: str | Path) -> tuple[list[ReleaseRun], list[Path]]:
    """CSV/npy pairs in a release folder, and the files left without a partner (still being copied, or stray).

    Pairs are found (1) as ``<stem>.csv`` + ``<stem>.npy``; (2) by name once the tokens ``scores`` /
    ``anomaly_scores`` and ``latents`` / ``latent_vectors`` are removed (``run3_anomaly_scores.csv`` +
    ``run3_latent_vectors.npy`` -> ``release-run3``); (3) as a sub-folder holding exactly one CSV and one npy
    (named after the folder). A ``<stem>.csv`` with several candidate npy files is left unpaired.
    """
    release_dir = Path(release_dir)
    if not release_dir.is_dir():
        raise ReleaseError(f"release folder {release_dir} does not exist")
    runs: list[ReleaseRun] = []
    orphans: list[Path] = []

    def pair_up(folder: Path, default_key: str | None) -> None:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        csvs = [p for p in files if p.suffix.lower() == ".csv"]
        npys = [p for p in files if p.suffix.lower() == ".npy"]
        if default_key is not None and len(csvs) == 1 and len(npys) == 1:
            runs.append(ReleaseRun(release_batch_name(default_key), csvs[0], npys[0]))
            return
        by_stem = {p.stem: p for p in npys}
        used: set[Path] = set()
        left_csv = []
        for table_csv in csvs:
            npy = by_stem.get(table_csv.stem)
            if npy is not None and npy not in used:
                runs.append(ReleaseRun(release_batch_name(_prefixed(default_key, table_csv.stem)), table_csv,
                                       npy))
                used.add(npy)
            else:
                left_csv.append(table_csv)
        npy_keys: dict[str, list[Path]] = {}
        for npy in npys:
            if npy not in used:
                npy_keys.setdefault(_pair_key(npy.stem, _NPY_TOKENS), []).append(npy)
        for table_csv in left_csv:
            key = _pair_key(table_csv.stem, _CSV_TOKENS)
            candidates = npy_keys.get(key, [])
            if len(candidates) == 1:
                runs.append(ReleaseRun(release_batch_name(_prefixed(default_key, key or table_csv.stem)), table_csv,
                                       candidates[0]))
                used.add(candidates[0])
                npy_keys[key] = []
            else:
                orphans.append(table_csv)
        orphans.extend(p for group in npy_keys.values() for p in group if p not in used)

    pair_up(release_dir, None)
    for sub in sorted(p for p in release_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        pair_up(sub, sub.name)
    names = [r.batch for r in runs]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        detail = "; ".join(f"{n}: " + ", ".join(str(r.csv) for r in runs if r.batch == n) for n in clashes)
        raise ReleaseError(f"release runs with the same name in {release_dir}: {detail}")
    return sorted(runs, key=lambda r: r.batch), sorted(orphans)


def _prefixed(folder_key: str | None, key: str) -> str:
    return key if folder_key is None else f"{folder_key}_{key}" if key else folder_key


# --------------------------------------------------------------------------------------------------------------
# Our per-batch score folders: scores/<batch>/
# --------------------------------------------------------------------------------------------------------------

def write_scores_folder(folder: str | Path, batch: str, table: ScoreTable, config: dict) -> None:
    """Write scores.parquet, anomaly_scores.csv, latent_vectors.npy and score_config.json into ``folder``.

    ``folder`` should be an ``atomic_dir`` target so a re-run replaces the batch whole.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if table.latents.shape[1] != LATENT_DIM:
        raise ReleaseError(f"latents must be (N, {LATENT_DIM}), got {table.latents.shape}")
    table.frame(batch).to_parquet(folder / SCORES_FILE, index=False)
    write_release_csv(folder / RELEASE_SCORES_FILE, table)
    np.save(folder / LATENTS_FILE, np.ascontiguousarray(table.latents, dtype=np.float32), allow_pickle=False)
    (folder / SCORE_CONFIG_FILE).write_text(json.dumps({"batch": batch, "n_images": len(table), **config},
                                                  indent=2, sort_keys=True, default=str))


def read_scores_folder(folder: str | Path) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """(scores frame, latents (N,128) float32, score config) of one written batch, checked to agree."""
    folder = Path(folder)
    paths = {name: folder / name for name in (SCORES_FILE, RELEASE_SCORES_FILE, LATENTS_FILE, SCORE_CONFIG_FILE)}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise ReleaseError(f"incomplete score folder {folder}: missing {missing}")
    frame = pd.read_parquet(paths[SCORES_FILE])
    latents = read_latents(paths[LATENTS_FILE])
    if latents.shape[0] != len(frame):
        raise ReleaseError(f"row mismatch: {paths[SCORES_FILE]} has {len(frame)} rows but "
                           f"{paths[LATENTS_FILE]} has {latents.shape[0]}")
    config = json.loads(paths[SCORE_CONFIG_FILE].read_text())
    return frame, latents, config




