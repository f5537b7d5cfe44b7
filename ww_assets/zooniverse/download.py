"""Downloading an export from its presigned URL: streamed to disk atomically, decoded, and checked.

Zooniverse serves export files gzip-encoded as ``text/csv``, often without a charset, from presigned URLs that
expire within minutes; panoptes-client's ``get_export`` sets no time-out and never checks the status code. Here
the gzip content-encoding is decoded by us (so a truncated body is noticed, which requests would not do), a
missing charset means UTF-8 and a declared other one is transcoded, a refused URL is reported as
:class:`UrlRefused` (the caller asks the API for a fresh one), and the file must look like its kind before it is
renamed into place. A failed download leaves no file.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import requests

from ww_assets.storage import atomic_path
from ww_assets.zooniverse import formats
from ww_assets.zooniverse.errors import DownloadError, TransientError
from ww_assets.zooniverse.retries import retrying_session
from ww_assets.zooniverse.talk import check_talk_file

__all__ = ["UrlRefused", "download", "check_download"]

_CHUNK = 1 << 20


class UrlRefused(Exception):
    """The presigned URL was refused (expired, or signed for someone else): describe again for a fresh one."""


def _charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    match = re.search(r"charset=([\w.-]+)", content_type, re.I)
    return match.group(1).lower() if match else None


def download(url: str, dest: Path, *, kind: str, timeout: float, session: requests.Session | None = None) -> Path:
    """Stream ``url`` to ``dest`` atomically, decoding gzip content-encoding ourselves, then check the file.

    ``session`` should come from ``retries.retrying_session`` (default: one with a single try). Raises UrlRefused
    (400/401/403: expired presigned URL), TransientError (5xx, time-out, truncated body or gzip stream),
    DownloadError (anything else), ExportFileError (the file is not what ``kind`` should be).
    """
    if session is None:
        with retrying_session(timeout=timeout, attempts=1, backoff_s=0.0) as own:
            return download(url, dest, kind=kind, timeout=timeout, session=own)
    response = session.get(url, stream=True, timeout=(timeout, timeout), headers={"Accept-Encoding": "gzip"})
    with contextlib.closing(response):
        status = response.status_code
        if status in (400, 401, 403):
            raise UrlRefused(f"HTTP {status}")
        if status != 200:
            raise DownloadError(f"HTTP {status} downloading the {kind} export from {urlsplit(url).path}")
        encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            raise DownloadError(f"the {kind} export came with an unsupported Content-Encoding {encoding!r}")
        charset = _charset(response.headers.get("Content-Type"))
        transcode = kind in formats.PANOPTES_KINDS and charset not in (None, "utf-8", "utf8", "us-ascii")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp, open(tmp, "wb") as out:
            written = _write_body(response, out, kind=kind, gzipped=encoding != "identity",
                                  charset=charset if transcode else None)
            out.flush()
            os.fsync(out.fileno())
            if written == 0:
                raise TransientError(f"the {kind} export downloaded empty")
            check_download(Path(tmp), kind)
    return dest


def _write_body(response, out, *, kind: str, gzipped: bool, charset: str | None) -> int:
    """Copy the raw body to ``out``, gunzipped and transcoded to UTF-8 as asked; the bytes written."""
    gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
    decoder = codecs.getincrementaldecoder(charset)("replace") if charset else None
    written = 0
    try:
        for chunk in response.raw.stream(_CHUNK, decode_content=False):
            data = gunzip.decompress(chunk) if gunzip else chunk
            if decoder:
                data = decoder.decode(data).encode("utf-8")
            out.write(data)
            written += len(data)
        if gunzip:
            tail = gunzip.flush()
            out.write(decoder.decode(tail, final=True).encode("utf-8") if decoder else tail)
            if not gunzip.eof:
                raise TransientError(f"the {kind} export's gzip stream ended early (truncated download)")
        elif decoder:
            out.write(decoder.decode(b"", final=True).encode("utf-8"))
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


def check_download(path: Path, kind: str) -> None:
    """A downloaded export must be what its kind says: a CSV with the columns we need, or Talk's JSON array."""
    if kind in formats.TALK_KINDS:
        check_talk_file(path)
        return
    header = formats.read_csv_header(path)
    formats.check_columns(path, header, formats.REQUIRED_COLUMNS[kind], kind)
