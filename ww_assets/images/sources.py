"""Finding image batches: the sub-folders of an image source and the score/latent pairs of a published release.

A *batch* is one folder of cutouts under the image source, or one CSV/npy run of the published W&W release
(``release-<name>``: scores only, no images). Each becomes one partition of the Dagster ``image_batches``
partitions. A batch's *fingerprint* (names, sizes and modification times of its files) tells a new batch from a
changed one, and its newest modification time tells a folder still being copied from a finished one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ww_assets.images.readers import list_batch_files
from ww_assets.scores.release import ReleaseError, discover_release_runs

__all__ = ["ImageSourceError", "SourceScan", "scan_batches", "batch_names", "BATCH_NAME_RE"]

#: what a folder name must look like to be a partition key
BATCH_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-+=@]*$")


class ImageSourceError(ValueError):
    """The image source is misconfigured (a folder that does not exist) or a batch cannot be found."""


@dataclass
class SourceScan:
    """Batches found: name -> (fingerprint, newest mtime, kind "images" | "release"), and what was skipped."""

    batches: dict[str, tuple[str, float, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def fingerprint(paths: list[Path]) -> tuple[str, float]:
    """(short hash of names, sizes and mtimes, newest mtime) of a set of files."""
    digest = hashlib.sha256()
    newest = 0.0
    for path in sorted(paths):
        st = path.stat()
        newest = max(newest, st.st_mtime)
        digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16], newest


def scan_batches(images_root: Path | None, release_dir: Path | None) -> SourceScan:
    """Every batch folder under ``images_root`` and every run in ``release_dir`` (either may be None).

    Folders whose names cannot be partition keys, empty folders, and clashes between a folder and a release run
    are reported in ``problems`` (or skipped when empty) and left out.
    """
    scan = SourceScan()
    if images_root is not None:
        for folder in sorted(p for p in images_root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            if not BATCH_NAME_RE.match(folder.name) or "..." in folder.name:
                scan.problems.append(f"{folder}: folder name is not usable as a batch name "
                                     "(letters, digits and _ . - + = @ only)")
                continue
            files = list_batch_files(folder)
            if files:
                fp, newest = fingerprint(files)
                scan.batches[folder.name] = (fp, newest, "images")
    if release_dir is not None:
        try:
            runs, _orphans = discover_release_runs(release_dir)
        except ReleaseError as exc:
            scan.problems.append(str(exc))
            runs = []
        for run in runs:
            if run.batch in scan.batches:
                scan.problems.append(f"release run {run.csv} is named {run.batch!r}, like an image batch folder; "
                                     "rename one of them")
                del scan.batches[run.batch]
                continue
            fp, newest = fingerprint([run.csv, run.npy])
            scan.batches[run.batch] = (fp, newest, "release")
    return scan


def batch_names(images_root: Path | None, release_dir: Path | None) -> list[str]:
    """The names of every batch, sorted; ImageSourceError listing the problems when there are any."""
    scan = scan_batches(images_root, release_dir)
    if scan.problems:
        raise ImageSourceError("cannot register image batches: " + "; ".join(scan.problems))
    return sorted(scan.batches)
