"""Sources of export files: a folder of hand-downloaded exports (and the embedded sample, read the same way).

A source answers ``fetch(kind) -> FetchedExport``: the local file holding that export kind, plus notes for the
asset metadata (which file, how old, whether a fallback was used). The live source (``ww_assets.zooniverse.live``)
answers the same call by pulling through panoptes-client, so the ingest never knows where a file came from.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
from pathlib import Path

from ww_assets.zooniverse import formats
from ww_assets.zooniverse.errors import ExportFileError

__all__ = ["FetchedExport", "find_export_file", "ExportFolderSource"]


@dataclasses.dataclass
class FetchedExport:
    """A local export file ready to ingest."""

    kind: str                          # classifications | subjects | workflows | talk_comments | talk_tags
    path: Path
    source: str                        # sample | export_folder | live
    label: str                         # human-readable origin, e.g. "live project 16616, export of 2024-05-01"
    exported_at: dt.datetime | None = None
    fallback: bool = False             # True when an older export was used because a fresh one was not ready
    notes: list[str] = dataclasses.field(default_factory=list)

    def as_metadata(self) -> dict:
        return {
            "source": self.source,
            "source_detail": self.label,
            "export_file": str(self.path),
            "export_bytes": self.path.stat().st_size if self.path.exists() else 0,
            "exported_at": self.exported_at.isoformat() if self.exported_at else "",
            "used_fallback_export": self.fallback,
            "source_notes": "; ".join(self.notes),
        }


def find_export_file(folder: str | Path, kind: str) -> Path:
    """The newest file in ``folder`` that looks like a ``kind`` export (see ``formats.EXPORT_FILE_PATTERNS``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportFileError(f"export folder {folder} does not exist or is not a folder")
    patterns = formats.EXPORT_FILE_PATTERNS[kind]
    found = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".")
             and any(fnmatch.fnmatch(p.name.lower(), pat) for pat in patterns)]
    if kind == "talk_tags":  # "tags" must not match a comments file and vice versa
        found = [p for p in found if "comments" not in p.name.lower()]
    if kind == "talk_comments":
        found = [p for p in found if "tags" not in p.name.lower().replace("comments", "")]
    if not found:
        raise ExportFileError(
            f"no {kind.replace('_', ' ')} export in {folder}: expected a file named like "
            f"{' or '.join(patterns)} (as downloaded from the project's Data Exports page)")
    return max(found, key=lambda p: (p.stat().st_mtime, p.name))


class ExportFolderSource:
    """Exports a project owner downloaded by hand, all in one folder (newest file of each kind wins)."""

    def __init__(self, folder: str | Path, source: str = "export_folder"):
        self.folder = Path(folder)
        self.source = source

    def fetch(self, kind: str) -> FetchedExport:
        path = find_export_file(self.folder, kind)
        mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.timezone.utc)
        what = "embedded sample" if self.source == "sample" else "export folder"
        return FetchedExport(kind=kind, path=path, source=self.source, label=f"{what} {self.folder}",
                             exported_at=mtime)

    def close(self) -> None:
        pass
