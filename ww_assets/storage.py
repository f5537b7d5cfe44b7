"""Where the pipeline keeps its files, and how it writes them safely.

Everything the pipeline writes lives under one *storage root* (``data/`` by default, ``WW_DATA_ROOT`` or the
``storage`` resource to change it). Every file is written under a temporary name in the same folder and renamed
into place, so a killed run never leaves a half-written file where a reader would find it, and re-running a step
replaces its output whole.

Crash consistency, and what it rests on (tested by killing writers at every step, ``ww_assets_tests/ops/
test_crash_consistency.py``):

* ``atomic_path``: the temporary file is fsynced, renamed over the final name, and the folder is fsynced, so after
  a kill or a power cut the name holds the old file or the whole new one.
* ``atomic_dir``: every file and folder of the temporary folder is fsynced, then the temporary folder and the old
  one are swapped in one step, ``renameat2(RENAME_EXCHANGE)`` on Linux: a reader sees the old folder or the new
  one, never neither and never a mix. Where the filesystem cannot exchange (not Linux; NFS and some FUSE
  filesystems) the old folder is first renamed aside (``.name.old-*``) and the new one renamed in: a kill between
  the two renames leaves only the aside copy, and the next write of the same folder (or
  :func:`recover_atomic_dir`) puts it back before anything else.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Callable, Iterator

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
    "catalogue": "catalogue.parquet",
    "catalogue_fits": "catalogue.fits",
    "subject_reductions": "subject_reductions.csv",
    "latent_map_page": "latent_map.html",
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


def _old_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:12]}")


#: Test hook: called with the name of each step of an atomic write (``"files-synced"``, ``"exchanged"``, ...),
#: so a test can kill the writer exactly there. None (nothing is called) outside those tests.
crash_point: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if crash_point is not None:
        crash_point(name)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's data to the disk (so a rename that follows cannot land before the data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (the names renamed or created in it) to the disk. A no-op where folders cannot
    be opened (Windows)."""
    if os.name == "nt":  # pragma: no cover - no directory fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # pragma: no cover - some filesystems refuse fsync on folders
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike[str]) -> None:
    """fsync every file and folder under ``folder`` (itself included), deepest first."""
    for here, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = os.path.join(here, name)
            if not os.path.islink(path):
                fsync_file(path)
        fsync_dir(here)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _libc_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # pragma: no cover - glibc < 2.28, or another libc
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


#: ``renameat2`` of the C library (None where there is none: then folders are swapped with two renames).
_renameat2 = _libc_renameat2()


def exchange(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    True when swapped; False when this system or filesystem cannot (then nothing changed). Other errors raise.
    """
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success fsync it, rename it over ``final`` and fsync the
    folder; on failure delete it. Temporaries of ``final`` that a killed writer left are removed first (one
    writer per output name, as with :func:`atomic_dir`).

    >>> with atomic_path("out.csv") as tmp:      # doctest: +SKIP
    ...     frame.to_csv(tmp)
    """
    final = Path(final)
    _make_parent(final)
    for stale in final.parent.glob(f".{glob.escape(final.name)}.tmp-*"):
        with contextlib.suppress(OSError):
            stale.unlink()
    tmp = _tmp_sibling(final)
    try:
        yield tmp
        fsync_file(tmp)
        _step("file-synced")
        os.replace(tmp, final)
        _step("renamed")
        fsync_dir(final.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and _storage_error(final, exc) is not exc:
            raise _storage_error(final, exc) from exc
        raise


def recover_atomic_dir(final: str | os.PathLike[str]) -> Path | None:
    """Finish what a killed :func:`atomic_dir` left behind for ``final``; returns the folder put back, if any.

    Only the two-rename fallback can leave ``final`` missing with its previous version renamed aside
    (``.name.old-*``): that version is renamed back. Aside copies next to an existing ``final`` are the remains of a
    finished swap and are deleted, as are unfinished temporary folders (``.name.tmp-*``).
    """
    final = Path(final)
    if not final.parent.is_dir():
        return None
    restored = None
    name = glob.escape(final.name)
    olds = sorted(final.parent.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    if olds and not final.exists():
        os.replace(olds[0], final)          # the newest aside copy is the last committed version
        fsync_dir(final.parent)
        restored, olds = final, olds[1:]
    for stale in olds + list(final.parent.glob(f".{name}.tmp-*")):
        shutil.rmtree(stale, ignore_errors=True)
    return restored


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final``; on success it *replaces* ``final`` whole.

    Used for per-partition outputs: a re-run leaves exactly the new files, never a mix of old and new, and a run
    killed at any point leaves the previous output (or, once the swap is done, the new one) where readers look.
    Before the swap every file is fsynced; the swap itself is one ``renameat2(RENAME_EXCHANGE)`` on Linux (see
    the module docstring for other systems). A killed run leaves at most a hidden ``.name.tmp-*`` / ``.name.old-*``
    folder, which the next write of the same folder removes.
    """
    final = Path(final)
    _make_parent(final)
    recover_atomic_dir(final)
    tmp = _tmp_sibling(final)
    try:
        tmp.mkdir()
    except OSError as exc:
        err = _storage_error(final, exc)
        if err is exc:
            raise
        raise err from exc
    old: Path | None = None
    try:
        yield tmp
        _step("written")
        fsync_tree(tmp)
        _step("files-synced")
        if final.exists() and exchange(tmp, final):
            _step("exchanged")                      # final is the new folder; tmp holds the old one
            fsync_dir(final.parent)
            shutil.rmtree(tmp, ignore_errors=True)
        elif final.exists():
            old = _old_sibling(final)
            os.replace(final, old)
            _step("old-aside")                      # the window recover_atomic_dir closes
            os.replace(tmp, final)
            _step("renamed")
            fsync_dir(final.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
            _step("renamed")
            fsync_dir(final.parent)
        _step("done")
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not final.exists():
            with contextlib.suppress(OSError):       # the swap failed half way: put the old folder back
                os.replace(old, final)
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
