"""Talk data: the archive format it is served in, and data requests through panoptes-client's Talk client.

Talk (talk.zooniverse.org) serves comments and tags as a ``.tar.gz`` holding one JSON array. panoptes-client
hard-codes Talk's endpoint in ``panoptes_client.exportable.talk``, builds the request path as ``//data_requests``,
never recognises a ``failed`` state and raises IndexError on an empty list; :class:`TalkRequests` handles those.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Iterator

from ww_assets.zooniverse.errors import ExportFileError
from ww_assets.zooniverse.formats import is_gzip

__all__ = ["DEFAULT_TALK_ENDPOINT", "TALK_KIND", "talk_json_file", "check_talk_file", "parse_time",
           "talk_endpoint", "newest_first"]

DEFAULT_TALK_ENDPOINT = "https://talk.zooniverse.org/"
TALK_KIND = {"talk_comments": "comments", "talk_tags": "tags"}


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (EOFError, OSError, zlib.error, tarfile.TarError) as exc:
        raise ExportFileError(f"{path}: the Talk archive is damaged or truncated ({exc})") from exc


@contextlib.contextmanager
def talk_json_file(path: str | Path) -> Iterator[Path]:
    """Yield a path to the Talk JSON array in ``path``: the file itself, the one JSON member of a tar.gz (as Talk
    serves it), or the content of a plain .json.gz.

    Anything unpacked is streamed to a temporary file next to the archive and removed afterwards; member names
    are never used as paths, so an archive cannot write outside that folder.
    """
    path = Path(path)
    if not path.exists():
        raise ExportFileError(f"Talk export not found: {path}")
    if not is_gzip(path) and not _is_tar(path):
        yield path
        return
    handle, tmp_name = tempfile.mkstemp(prefix=".talk-", suffix=".json", dir=path.parent)
    try:
        try:
            with os.fdopen(handle, "wb") as out:
                if _is_tar(path):
                    with tarfile.open(path, "r:*") as tar:
                        members = [m for m in tar.getmembers() if m.isfile()]
                        json_members = [m for m in members if m.name.lower().endswith(".json")] or members
                        if len(json_members) != 1:
                            raise ExportFileError(
                                f"{path}: expected one JSON file in the Talk archive, found "
                                f"{[m.name for m in json_members] or 'none'}")
                        with tar.extractfile(json_members[0]) as member:
                            shutil.copyfileobj(member, out, 1 << 20)
                else:
                    with gzip.open(path, "rb") as member:
                        shutil.copyfileobj(member, out, 1 << 20)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise ExportFileError(f"{path}: the Talk archive is damaged or truncated ({exc})") from exc
        yield Path(tmp_name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def check_talk_file(path: str | Path) -> None:
    """Refuse a Talk download that is not a JSON array (plain or in its tar.gz), naming the file."""
    with talk_json_file(path) as json_path:
        with open(json_path, "rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        if not head.startswith(b"["):
            raise ExportFileError(f"{path}: the Talk data is not a JSON array (starts with {head[:20]!r})")


def parse_time(text: str | None) -> dt.datetime | None:
    """ISO 8601 (with Z) -> aware UTC datetime; None when missing or unreadable."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00").replace(" UTC", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


@contextlib.contextmanager
def talk_endpoint(endpoint: str) -> Iterator[object]:
    """Point panoptes-client's module-level Talk client at ``endpoint`` for the duration (then restore it)."""
    from panoptes_client import exportable

    talk = exportable.talk
    previous = talk.endpoint
    talk.endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
    try:
        yield talk
    finally:
        talk.endpoint = previous


def newest_first(requests: list[dict]) -> list[dict]:
    """Talk data requests, newest first (by created_at / updated_at, then id)."""
    def key(r: dict):
        when = parse_time(r.get("updated_at")) or parse_time(r.get("created_at"))
        return (when or dt.datetime.min.replace(tzinfo=dt.timezone.utc), str(r.get("id", "")))
    return sorted(requests, key=key, reverse=True)
