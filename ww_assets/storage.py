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

DEFAULT_ROOT = "data"


class StorageLayout:
    """Names of everything under a storage root. Plain paths; nothing is created until asked."""

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
    def downloads_dir(self) -> Path:
        """Files pulled from a live Zooniverse project (exports, Talk data requests)."""
        return self.root / "downloads"

    # --- image side -----------------------------------------------------------------------------------
    def images_dir(self, batch: str) -> Path:
        """Preprocessed cutouts of one image batch: cutouts.npy, catalog.parquet, quarantine.parquet."""
        return self.root / "images" / batch

    def scores_dir(self, batch: str) -> Path:
        """Scores and latents of one image batch, in our Parquet and in the published release's formats."""
        return self.root / "scores" / batch

    @property
    def model_dir(self) -> Path:
        """The wGAN in use: generator/discriminator/encoder .safetensors and card.json."""
        return self.root / "models" / "wgan"

    # --- analysis -------------------------------------------------------------------------------------
    @property
    def analysis_dir(self) -> Path:
        return self.root / "analysis"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    def ensure_writable(self) -> None:
        """Fail early, naming the root, when the storage root cannot be written (read-only, full, missing)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"storage root {self.root} is not writable: {exc.strerror or exc}") from exc


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


def default_root() -> str:
    """The storage root: ``WW_DATA_ROOT`` when set, else ``data`` relative to the working directory."""
    return os.environ.get("WW_DATA_ROOT", DEFAULT_ROOT)
