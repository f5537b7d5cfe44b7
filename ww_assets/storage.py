"""Where the pipeline keeps its files, and how it writes them safely.

Everything the pipeline writes lives under one *storage root* (``data/`` by default, ``WW_DATA_ROOT`` or the
``storage`` resource to change it). Every file is written under a temporary name in the same folder and renamed
into place, so a killed run never leaves a half-written file where a reader would find it, and re-running a step
replaces its output whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

# Files inside an image batch's folder (images/<batch>/) and a scored batch's folder (scores/<batch>/). The score
# CSV and latent npy carry the published W&W release's own names, so a scores folder is also a release run.
CUTOUTS_FILE = "cutouts.npy"
CATALOG_FILE = "catalog.parquet"
IMAGE_QUARANTINE_FILE = "quarantine.parquet"
BATCH_PREVIEW_FILE = "preview.png"
SCORES_FILE = "scores.parquet"
RELEASE_SCORES_FILE = "anomaly_scores.csv"
LATENTS_FILE = "latent_vectors.npy"
SCORE_CONFIG_FILE = "score_config.json"
SCORE_HISTOGRAM_FILE = "anomaly_score_hist.png"
TRUTH_FILE = "truth.csv"


class StorageLayout:
    """Names of everything under a storage root. Plain paths; nothing is created until asked.

    Every file the pipeline writes is named here (or, inside one folder, by the constants above), so a reader
    finds "which file holds the scores of a batch" in one place: ``scores_file(batch)``.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()

    # --- volunteer side -------------------------------------------------------------------------------
    @property
    def warehouse(self) -> Path:
        """The DuckDB database holding raw Zooniverse tables and consensus tables."""
        return self.root / "warehouse.duckdb"

    @property
    def sample_dir(self) -> Path:
        """The embedded sample (generated from a seed): exports/, cutouts/<batch>/, thumbnails/, truth.csv."""
        return self.root / "sample"

    @property
    def truth_file(self) -> Path:
        """The embedded sample's injected labels (evaluation only; nothing that scores reads it)."""
        return self.sample_dir / TRUTH_FILE

    @property
    def downloads_dir(self) -> Path:
        """Files pulled from a live Zooniverse project (exports, Talk data requests)."""
        return self.root / "downloads"

    # --- image side -----------------------------------------------------------------------------------
    @property
    def images_root(self) -> Path:
        return self.root / "images"

    def images_dir(self, batch: str) -> Path:
        """Preprocessed cutouts of one image batch: cutouts.npy, catalog.parquet, quarantine.parquet."""
        return self.images_root / batch

    def cutouts_file(self, batch: str) -> Path:
        """uint8 (N, 3, 96, 96) Lupton RGB images of one batch."""
        return self.images_dir(batch) / CUTOUTS_FILE

    def catalog_file(self, batch: str) -> Path:
        """One row per image of ``cutouts_file(batch)``: identity, position, noise levels."""
        return self.images_dir(batch) / CATALOG_FILE

    def image_quarantine_file(self, batch: str) -> Path:
        """The images of one batch that could not be used, with the reason."""
        return self.images_dir(batch) / IMAGE_QUARANTINE_FILE

    # --- model and scores -------------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        """The wGAN in use: generator/discriminator/encoder .safetensors and card.json."""
        return self.root / "models" / "wgan"

    @property
    def scores_root(self) -> Path:
        return self.root / "scores"

    def scores_dir(self, batch: str) -> Path:
        """Scores and latents of one image batch, in our Parquet and in the published release's formats."""
        return self.scores_root / batch

    def scores_file(self, batch: str) -> Path:
        """image_id, batch and the scores of every image of one batch (Parquet)."""
        return self.scores_dir(batch) / SCORES_FILE

    def latents_file(self, batch: str) -> Path:
        """The (N, 128) float32 latent vectors of one batch, rows in the order of its release CSV."""
        return self.scores_dir(batch) / LATENTS_FILE

    @property
    def normalised_scores_file(self) -> Path:
        """Sigma scores and ranks over every scored batch."""
        return self.scores_root / "normalised.parquet"

    # --- analysis -------------------------------------------------------------------------------------
    @property
    def analysis_dir(self) -> Path:
        return self.root / "analysis"

    def analysis_file(self, name: str) -> Path:
        """``analysis/<name>`` for the names in ``ANALYSIS_FILES`` (a typo fails here, not as a missing file)."""
        if name not in ANALYSIS_FILES:
            raise KeyError(f"{name!r} is not an analysis file; known: {sorted(ANALYSIS_FILES)}")
        return self.analysis_dir / ANALYSIS_FILES[name]

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    def plot_file(self, name: str) -> Path:
        """``plots/<name>.png``."""
        return self.plots_dir / f"{name}.png"

    def ensure_writable(self) -> None:
        """Fail early, naming the root, when the storage root cannot be written (read-only, full, missing)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"storage root {self.root} is not writable: {exc.strerror or exc}") from exc


#: what the analysis group writes under analysis/ (key: what it holds -> file or folder name)
ANALYSIS_FILES = {
    "latent_umap": "latent_umap.parquet",
    "latent_umap_dropped": "latent_umap_dropped.parquet",
    "similar_images": "similar_images.parquet",
    "image_table": "image_table.parquet",
    "consensus_vs_score": "consensus_vs_score.parquet",
    "consensus_by_class": "consensus_by_class.parquet",
    "interest_model": "interest_model.json",
    "subject_map": "subject_map.parquet",
    "next_round": "next_round",
    "next_round_picks": "next_round_picks.parquet",
    "more_like_this": "more_like_this",
    "detection_quality": "detection_quality.parquet",
}


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete what a killed writer left in ``folder``: hidden ``.name.tmp-*`` files and folders. Returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(".*.tmp-*")]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return stale


class StorageError(RuntimeError):
    """The storage root cannot be used (read-only, disk full, missing)."""


_ERRNO_WORDS = {28: "no space left on device", 30: "read-only file system", 122: "disk quota exceeded"}


def _storage_error(final: Path, exc: OSError) -> "StorageError | OSError":
    """A StorageError naming the path for the errors a full or read-only storage root gives; others unchanged."""
    if exc.errno in _ERRNO_WORDS:
        return StorageError(f"cannot write {final}: {_ERRNO_WORDS[exc.errno]} ({exc.strerror})")
    if exc.errno is None and "requested and" in str(exc) and "written" in str(exc):
        # numpy's tofile reports a short write (the disk filled up mid-file) without an errno
        return StorageError(f"cannot write {final}: no space left on device (short write: {exc})")
    if isinstance(exc, PermissionError):
        return StorageError(f"cannot write {final}: permission denied")
    return exc


def _make_parent(final: Path) -> None:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        err = _storage_error(final, exc)
        if err is exc:
            raise
        raise err from exc


def _tmp_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it over ``final``, on failure delete it.

    >>> with atomic_path("out.csv") as tmp:      # doctest: +SKIP
    ...     frame.to_csv(tmp)
    """
    final = Path(final)
    _make_parent(final)
    tmp = _tmp_sibling(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and _storage_error(final, exc) is not exc:
            raise _storage_error(final, exc) from exc
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final``; on success it *replaces* ``final`` whole.

    Used for per-partition outputs: a re-run leaves exactly the new files, never a mix of old and new, and a run
    killed half way leaves the previous output untouched (plus a hidden ``.name.tmp-*`` folder that the next
    successful write of the same partition removes).
    """
    final = Path(final)
    _make_parent(final)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = _tmp_sibling(final)
    try:
        tmp.mkdir()
    except OSError as exc:
        err = _storage_error(final, exc)
        if err is exc:
            raise
        raise err from exc
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:12]}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and _storage_error(final, exc) is not exc:
            raise _storage_error(final, exc) from exc
        raise


def write_parquet(frame, path: str | os.PathLike[str]) -> Path:
    """A pandas frame written atomically as Parquet (no index)."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)


def write_json(obj, path: str | os.PathLike[str]) -> Path:
    """An object written atomically as indented JSON (values it cannot encode as their ``str``)."""
    import json

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))
    return Path(path)


def default_root() -> str:
    """The storage root: ``WW_DATA_ROOT`` when set, else ``data`` relative to the working directory."""
    from ww_assets import settings

    return str(settings.get("WW_DATA_ROOT"))
