"""Downloading an export from its presigned URL: streamed to disk atomically, decoded, and checked.

Zooniverse serves export files gzip-encoded as ``text/csv``, often without a charset, from presigned URLs that
expire within minutes; panoptes-client's ``get_export`` sets no time-out and never checks the status code. Here
the gzip content-encoding is decoded by us (so a truncated body is noticed, which requests would not do), a
missing charset means UTF-8 and a declared other one is transcoded, a refused URL is reported as
:class:`UrlRefused` (the caller asks the API for a fresh one), and the file must look like its kind before it is
renamed into place. A failed download leaves no file.

Downloads of the live pull are named by what identifies their content (:func:`download_keyed`):
``<stem>-<validator>-<sha256 of the content, 16 hex>.<suffix>``, the stem naming the project, the kind and the export
(or Talk request) id, the validator the server's ETag (``e`` + 10 hex of its SHA-256; ``n`` when it sends none).
A server may regenerate an export under the same id without changing its ``updated_at``, so neither is trusted
to mean "same file": a fresh generation is always downloaded, and a re-used export is skipped only when an
earlier download carries the very ETag the server sends now. A body identical to an earlier download keeps the
earlier file (same path and time, so the ingest knows it has read it). :func:`prune_downloads` applies the
retention of ``WW_DOWNLOADS_KEEP``.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import hashlib
import os
import re
import zlib
from typing import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests

from ww_assets.storage import atomic_path, fsync_dir
from ww_assets.zooniverse import formats
from ww_assets.zooniverse.errors import DownloadError, TransientError
from ww_assets.zooniverse.retries import retrying_session
from ww_assets.zooniverse.talk import check_talk_file

__all__ = ["UrlRefused", "Downloaded", "download", "download_keyed", "check_download", "prune_downloads"]

_CHUNK = 1 << 20


class UrlRefused(Exception):
    """The presigned URL was refused (expired, or signed for someone else): describe again for a fresh one."""


def _charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    match = re.search(r"charset=([\w.-]+)", content_type, re.I)
    return match.group(1).lower() if match else None


@dataclasses.dataclass(frozen=True)
class Downloaded:
    """Where a keyed download is, and whether it is an earlier download kept because the content is the same."""

    path: Path
    reused: bool = False
    why: str = ""                 # why an earlier file was kept: "same ETag" or "same content"


def _open(url: str, *, kind: str, timeout: float, session: requests.Session):
    """GET ``url`` streamed; the response once its status says the body is the export (caller closes it)."""
    response = session.get(url, stream=True, timeout=(timeout, timeout), headers={"Accept-Encoding": "gzip"})
    status = response.status_code
    if status in (400, 401, 403):
        response.close()
        raise UrlRefused(f"HTTP {status}")
    if status != 200:
        response.close()
        raise DownloadError(f"HTTP {status} downloading the {kind} export from {urlsplit(url).path}")
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        response.close()
        raise DownloadError(f"the {kind} export came with an unsupported Content-Encoding {encoding!r}")
    return response


def _save_body(response, tmp: Path, *, kind: str) -> str:
    """Stream the body of ``response`` into ``tmp`` (decoded), fsync and check it; the content's SHA-256."""
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    charset = _charset(response.headers.get("Content-Type"))
    transcode = kind in formats.PANOPTES_KINDS and charset not in (None, "utf-8", "utf8", "us-ascii")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        written = _write_body(response, out, kind=kind, gzipped=encoding != "identity",
                              charset=charset if transcode else None, digest=digest)
        out.flush()
        os.fsync(out.fileno())
    if written == 0:
        raise TransientError(f"the {kind} export downloaded empty")
    check_download(Path(tmp), kind)
    return digest.hexdigest()


def _session_or_own(session, timeout: float):
    if session is not None:
        return contextlib.nullcontext(session)
    return retrying_session(timeout=timeout, attempts=1, backoff_s=0.0)


def download(url: str, dest: Path, *, kind: str, timeout: float, session: requests.Session | None = None) -> Path:
    """Stream ``url`` to ``dest`` atomically, decoding gzip content-encoding ourselves, then check the file.

    ``session`` should come from ``retries.retrying_session`` (default: one with a single try). Raises UrlRefused
    (400/401/403: expired presigned URL), TransientError (5xx, time-out, truncated body or gzip stream),
    DownloadError (anything else), ExportFileError (the file is not what ``kind`` should be).
    """
    with _session_or_own(session, timeout) as http:
        with contextlib.closing(_open(url, kind=kind, timeout=timeout, session=http)) as response:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dest) as tmp:
                _save_body(response, Path(tmp), kind=kind)
    return dest


def _validator(response) -> str:
    """The part of a keyed name that stands for the server's ETag of this body ('n': the server sent none)."""
    etag = (response.headers.get("ETag") or "").strip()
    return "e" + hashlib.sha256(etag.encode("utf-8")).hexdigest()[:10] if etag else "n"


def download_keyed(url: str, folder: Path, stem: str, suffix: str, *, kind: str, timeout: float,
                   session: requests.Session | None = None, fresh: bool = False) -> Downloaded:
    """Download ``url`` into ``folder`` as ``<stem>-<validator>-<sha16><suffix>`` (module docstring).

    ``fresh``: the export was just generated, so the body is always read (an ETag is not trusted to tell). Else an
    earlier download with the same stem and the server's current ETag is kept without reading the body. A body
    identical to an earlier file's keeps that file untouched. Raises as :func:`download`.
    """
    with _session_or_own(session, timeout) as http:
        with contextlib.closing(_open(url, kind=kind, timeout=timeout, session=http)) as response:
            validator = _validator(response)
            if not fresh and validator != "n":
                earlier = sorted(p for p in folder.glob(f"{stem}-{validator}-*{suffix}") if p.is_file())
                if earlier:
                    return Downloaded(earlier[-1], reused=True, why="same ETag")
            folder.mkdir(parents=True, exist_ok=True)
            incoming = folder / f".{stem}{suffix}.tmp-incoming"   # hidden; a killed pull's is removed next time
            with atomic_path(incoming) as tmp:
                sha = _save_body(response, Path(tmp), kind=kind)
    final = folder / f"{stem}-{validator}-{sha[:16]}{suffix}"
    if final.is_file():
        incoming.unlink()
        return Downloaded(final, reused=True, why="same content")
    os.replace(incoming, final)
    fsync_dir(folder)
    return Downloaded(final)


def _write_body(response, out, *, kind: str, gzipped: bool, charset: str | None, digest=None) -> int:
    """Copy the raw body to ``out``, gunzipped and transcoded to UTF-8 as asked (and fed to ``digest``); the
    bytes written."""
    gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
    decoder = codecs.getincrementaldecoder(charset)("replace") if charset else None
    written = 0
    try:
        for chunk in response.raw.stream(_CHUNK, decode_content=False):
            data = gunzip.decompress(chunk) if gunzip else chunk
            if decoder:
                data = decoder.decode(data).encode("utf-8")
            written += _put(out, data, digest)
        if gunzip:
            tail = gunzip.flush()
            written += _put(out, decoder.decode(tail, final=True).encode("utf-8") if decoder else tail, digest)
            if not gunzip.eof:
                raise TransientError(f"the {kind} export's gzip stream ended early (truncated download)")
        elif decoder:
            written += _put(out, decoder.decode(b"", final=True).encode("utf-8"), digest)
    except zlib.error as exc:
        raise TransientError(f"the {kind} export's gzip stream is corrupt: {exc}") from exc
    except (requests.exceptions.RequestException, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno in (28, 30):   # disk full, read-only: not worth a retry
            raise
        raise TransientError(f"download of the {kind} export broke off: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # urllib3 errors (ProtocolError, IncompleteRead, ReadTimeoutError)
        if type(exc).__module__.startswith("urllib3"):
            raise TransientError(f"download of the {kind} export broke off: {type(exc).__name__}") from exc
        raise
    return written


def _put(out, data: bytes, digest) -> int:
    out.write(data)
    if digest is not None:
        digest.update(data)
    return len(data)


def check_download(path: Path, kind: str) -> None:
    """A downloaded export must be what its kind says: a CSV with the columns we need, or Talk's JSON array."""
    if kind in formats.TALK_KINDS:
        check_talk_file(path)
        return
    header = formats.read_csv_header(path)
    formats.check_columns(path, header, formats.REQUIRED_COLUMNS[kind], kind)


def prune_downloads(folder: Path, *, keep: int | None, protect: set[Path] | frozenset[Path] = frozenset(),
                    ingested: Callable[[Path], bool]) -> tuple[int, int]:
    """Retention of one kind's downloads: delete those beyond the newest ``keep`` (by modification time).

    Never deleted: a file in ``protect`` (the one just ingested), a file ``ingested(path)`` does not confirm was read
    into the warehouse, hidden files (partial downloads). ``keep=None`` keeps everything. Returns (deleted, kept).
    """
    if not folder.is_dir():
        return 0, 0
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    if keep is None:
        return 0, len(files)
    protected = {Path(p) for p in protect}
    deleted = 0
    for path in files[keep:]:
        if path in protected or not ingested(path):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            deleted += 1
    if deleted:
        fsync_dir(folder)
    return deleted, len(files) - deleted
