"""The live source: pull a project's exports and Talk data through the real panoptes-client.

What it adds to the client (facts in shared ZOONIVERSE.md):

* Every HTTP call has a time-out (the client sets none) and 5xx / time-outs / dropped connections are retried
  with exponential backoff, for every call (the client retries only some GETs, 5 s apart).
* An export is generated only when the newest ready one is older than ``max_export_age_hours`` (Zooniverse
  generates at most one per resource per 24 h for non-admins, and *silently*: the POST says 201 and the export
  stays ``creating`` forever). Waiting always has a time-out; when it runs out, the newest ready export (or the
  last download) is used and the metadata says so.
* Downloads are streamed to ``<storage>/downloads/<kind>/`` through a temporary file renamed into place, gzip
  content-encoding is decoded here (so a truncated body is noticed, which requests would not do), a missing charset
  means UTF-8, and an expired presigned URL is answered by describing the export again for a fresh URL.
* Talk: the endpoint is configurable, a ``failed`` data request and an empty request list are handled, a refused
  second request in a day falls back to the newest finished one.

Credentials come from the environment only (``PANOPTES_USERNAME``/``PANOPTES_PASSWORD`` or
``PANOPTES_CLIENT_ID``/``PANOPTES_CLIENT_SECRET``) and are never logged or put in an error message.

panoptes-client is imported lazily: importing it configures the root logger, which a module import should not do.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import re
import time
import zlib
from pathlib import Path
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlsplit

import requests

from ww_assets.storage import atomic_path, remove_stale_temporaries
from ww_assets.zooniverse import formats
from ww_assets.zooniverse.errors import (
    CredentialsMissing,
    DownloadError,
    ExportFailed,
    ExportFileError,
    ExportNotReady,
    TransientError,
    ZooniverseError,
)
from ww_assets.zooniverse.export_folder import FetchedExport
from ww_assets.zooniverse.talk import (
    DEFAULT_TALK_ENDPOINT,
    TALK_KIND,
    check_talk_file,
    newest_first,
    parse_time,
    talk_endpoint,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PANOPTES_ENDPOINT = "https://www.zooniverse.org"
_CHUNK = 1 << 20


@dataclasses.dataclass
class LiveSettings:
    """How to reach a live project. Every time is in seconds."""

    project: str                                   # numeric id, or slug "owner/name"
    panoptes_endpoint: str | None = None           # default: $PANOPTES_ENDPOINT, else www.zooniverse.org
    talk_endpoint: str | None = None               # default: talk.zooniverse.org
    generate: str = "auto"                         # auto | always | never
    max_export_age_hours: float = 24.0             # auto: regenerate only exports older than this
    wait_timeout_s: float = 900.0                  # how long to wait for a generation before falling back
    http_timeout_s: float = 60.0                   # connect/read time-out of each API call and download chunk
    attempts: int = 5                              # tries per call on transient failures
    backoff_s: float = 2.0                         # first retry delay (doubles each time)
    talk_poll_s: float = 5.0                       # how often to ask Talk whether a data request is finished

    def __post_init__(self):
        if self.generate not in ("auto", "always", "never"):
            raise ValueError(f"generate must be auto, always or never, not {self.generate!r}")
        if not self.wait_timeout_s or self.wait_timeout_s <= 0:
            # panoptes-client waits forever when given no time-out: never let that happen.
            raise ValueError("wait_timeout_s must be > 0")
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")

    def endpoint(self) -> str:
        return (self.panoptes_endpoint or os.environ.get("PANOPTES_ENDPOINT") or DEFAULT_PANOPTES_ENDPOINT).rstrip("/")


def credentials_from_env(env=None) -> dict:
    """Panoptes credentials from the environment (never printed). Raises CredentialsMissing naming the variables."""
    env = os.environ if env is None else env
    user, password = env.get("PANOPTES_USERNAME"), env.get("PANOPTES_PASSWORD")
    client_id, secret = env.get("PANOPTES_CLIENT_ID"), env.get("PANOPTES_CLIENT_SECRET")
    if user and password:
        return {"username": user, "password": password}
    if client_id and secret:
        return {"client_id": client_id, "client_secret": secret}
    raise CredentialsMissing(
        "a live Zooniverse pull needs credentials in the environment: PANOPTES_USERNAME and PANOPTES_PASSWORD "
        "(a project owner or collaborator), or PANOPTES_CLIENT_ID and PANOPTES_CLIENT_SECRET")


# ----------------------------------------------------------------------------------------------------------------
# retries
# ----------------------------------------------------------------------------------------------------------------

_CLIENT_5XX = re.compile(r"Received HTTP status code (5\d\d)")


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, (requests.exceptions.Timeout, requests.exceptions.ConnectionError,
                        requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return True
    if isinstance(exc, requests.exceptions.JSONDecodeError):     # an HTML error page from a proxy
        return True
    return bool(_CLIENT_5XX.search(str(exc)))


def retry(what: str, fn: Callable[[], T], settings: LiveSettings, sleep=time.sleep,
          passthrough: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``fn``; on a transient failure wait backoff_s, 2*backoff_s, ... and try again, ``attempts`` times.

    Exceptions of a ``passthrough`` type are re-raised untouched; other non-transient ones are wrapped in a
    ZooniverseError saying what was being done.
    """
    delay = settings.backoff_s
    for attempt in range(1, settings.attempts + 1):
        try:
            return fn()
        except passthrough:
            raise
        except ZooniverseError as exc:
            if not isinstance(exc, TransientError) or attempt == settings.attempts:
                if isinstance(exc, TransientError):
                    raise TransientError(f"{what}: still failing after {attempt} tries: {exc}") from exc
                raise
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - classify, then re-raise with context
            if not _is_transient(exc):
                raise ZooniverseError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
            if attempt == settings.attempts:
                raise TransientError(f"{what}: still failing after {attempt} tries: {type(exc).__name__}: "
                                     f"{exc}") from exc
            reason = f"{type(exc).__name__}: {exc}"
        log.warning("%s: transient failure (%s); retry %d/%d in %.1f s", what, reason[:200], attempt,
                    settings.attempts - 1, delay)
        sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------------------------------
# the client, with time-outs and 5xx turned into TransientError
# ----------------------------------------------------------------------------------------------------------------

def _guard_session(session: requests.Session, timeout: float) -> None:
    """Give every request of ``session`` a time-out, and turn 5xx / 429 answers into TransientError.

    Raising here (instead of letting the client parse the error page or retry 5 s apart on its own) lets one
    retry policy, ours, cover every call.
    """
    original = session.request

    def request(method, url, **kwargs):
        kwargs.setdefault("timeout", timeout)
        response = original(method, url, **kwargs)
        if response.status_code >= 500 or response.status_code == 429:
            path = urlsplit(url).path
            raise TransientError(f"HTTP {response.status_code} from {method.upper()} {path}")
        return response

    session.request = request


def _client_class():
    from panoptes_client import Panoptes

    class GuardedPanoptes(Panoptes):
        """panoptes-client's Panoptes with a time-out on every request and 5xx raised as TransientError."""

        def __init__(self, *args, http_timeout: float = 60.0, **kwargs):
            self._http_timeout = http_timeout
            super().__init__(*args, **kwargs)

        def login(self, *args, **kwargs):
            # __init__ creates the session and logs in straight away: guard the session first.
            if not getattr(self.session, "_ww_guarded", False):
                _guard_session(self.session, self._http_timeout)
                self.session._ww_guarded = True
            return super().login(*args, **kwargs)

    return GuardedPanoptes


# ----------------------------------------------------------------------------------------------------------------
# downloads
# ----------------------------------------------------------------------------------------------------------------

class _UrlRefused(Exception):
    """The presigned URL was refused (expired, or signed for someone else): describe again for a fresh one."""


def _charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    match = re.search(r"charset=([\w.-]+)", content_type, re.I)
    return match.group(1).lower() if match else None


def download(url: str, dest: Path, *, kind: str, timeout: float) -> Path:
    """Stream ``url`` to ``dest`` atomically, decoding gzip content-encoding ourselves, then check the file.

    Raises _UrlRefused (401/403/400: expired presigned URL), TransientError (5xx, time-out, truncated body or
    gzip stream), DownloadError (anything else), ExportFileError (the file is not what ``kind`` should be).
    """
    try:
        response = requests.get(url, stream=True, timeout=(timeout, timeout),
                                headers={"Accept-Encoding": "gzip"})
    except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
        raise TransientError(f"download of the {kind} export: {type(exc).__name__}") from exc
    with contextlib.closing(response):
        status = response.status_code
        if status in (400, 401, 403):
            raise _UrlRefused(f"HTTP {status}")
        if status >= 500 or status == 429:
            raise TransientError(f"HTTP {status} downloading the {kind} export")
        if status != 200:
            raise DownloadError(f"HTTP {status} downloading the {kind} export from {urlsplit(url).path}")
        encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            raise DownloadError(f"the {kind} export came with an unsupported Content-Encoding {encoding!r}")
        charset = _charset(response.headers.get("Content-Type"))
        transcode = (kind in formats.PANOPTES_KINDS and charset not in (None, "utf-8", "utf8", "us-ascii"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with atomic_path(dest) as tmp, open(tmp, "wb") as out:
            gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding != "identity" else None
            decoder = codecs.getincrementaldecoder(charset)("replace") if transcode else None
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
                if isinstance(exc, OSError) and exc.errno in (28, 30):
                    raise
                raise TransientError(f"download of the {kind} export broke off: {type(exc).__name__}: "
                                     f"{exc}") from exc
            except Exception as exc:  # urllib3 errors (ProtocolError, IncompleteRead, ReadTimeoutError)
                if type(exc).__module__.startswith("urllib3"):
                    raise TransientError(f"download of the {kind} export broke off: {type(exc).__name__}") from exc
                raise
            out.flush()
            os.fsync(out.fileno())
            if written == 0:
                raise TransientError(f"the {kind} export downloaded empty")
            _check_download(Path(tmp), kind)
    return dest


def _check_download(path: Path, kind: str) -> None:
    """A downloaded export must be what its kind says: a CSV with the columns we need, or Talk's JSON array."""
    if kind in formats.TALK_KINDS:
        check_talk_file(path)
        return
    required = {"classifications": formats.CLASSIFICATION_REQUIRED, "subjects": formats.SUBJECT_REQUIRED,
                "workflows": formats.WORKFLOW_REQUIRED}[kind]
    header = formats.read_csv_header(path)
    formats.check_columns(path, header, required, kind)


# ----------------------------------------------------------------------------------------------------------------
# the source
# ----------------------------------------------------------------------------------------------------------------

def _media_time(media: dict) -> dt.datetime | None:
    return parse_time(media.get("updated_at")) or parse_time(media.get("created_at"))


def _media_state(media: dict) -> str:
    return str((media.get("metadata") or {}).get("state", "")).lower()


def _newest_ready_media(description: dict | None) -> dict | None:
    media = [m for m in (description or {}).get("media", []) if _media_state(m) == "ready" and m.get("src")]
    if not media:
        return None
    epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return max(media, key=lambda m: (_media_time(m) or epoch, str(m.get("id", ""))))


def _age_hours(when: dt.datetime | None) -> float:
    if when is None:
        return float("inf")
    return (dt.datetime.now(dt.timezone.utc) - when).total_seconds() / 3600.0


class LiveSource:
    """Pulls the exports of one live project. Use as a context manager (it holds a logged-in client)."""

    def __init__(self, settings: LiveSettings, downloads_dir: str | Path, logger: logging.Logger | None = None,
                 sleep=time.sleep):
        self.settings = settings
        self.downloads_dir = Path(downloads_dir)
        self.log = logger or log
        self._sleep = sleep
        self._client = None
        self._project = None

    # --- connection ---------------------------------------------------------------------------------------------
    def __enter__(self) -> "LiveSource":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        creds = credentials_from_env()
        endpoint = self.settings.endpoint()
        client_cls = _client_class()

        def make():
            return client_cls(endpoint=endpoint, http_timeout=self.settings.http_timeout_s, **creds)

        self._client = self._retry(f"log in to {endpoint}", make)
        self.log.info("connected to %s as %s", endpoint,
                      "a user" if "username" in creds else "an OAuth client")

    def close(self) -> None:
        self._client = None
        self._project = None

    @contextlib.contextmanager
    def _as_client(self) -> Iterator[None]:
        """Make our client the one panoptes-client's objects use in this thread (its connection is per thread)."""
        if self._client is None:
            self.connect()
        with self._client:
            yield

    def _retry(self, what: str, fn: Callable[[], T], passthrough=()) -> T:
        return retry(what, fn, self.settings, sleep=self._sleep, passthrough=passthrough)

    def project(self):
        if self._project is None:
            from panoptes_client import Project

            ref = str(self.settings.project).strip()
            with self._as_client():
                if ref.isdigit():
                    self._project = self._retry(f"find project {ref}", lambda: Project.find(int(ref)))
                else:
                    self._project = self._retry(f"find project {ref}", lambda: Project.find(slug=ref))
            if self._project is None:
                raise ZooniverseError(f"project {ref!r} not found at {self.settings.endpoint()}")
        return self._project

    # --- fetching -----------------------------------------------------------------------------------------------
    def fetch(self, kind: str) -> FetchedExport:
        # A pull killed mid-download leaves its hidden temporary file; nothing reads it, the next pull removes it.
        for stale in remove_stale_temporaries(self.downloads_dir / kind):
            self.log.info("removed %s, a partial download left by an interrupted pull", stale.name)
        if kind in formats.PANOPTES_KINDS:
            return self._fetch_panoptes(kind)
        if kind in formats.TALK_KINDS:
            return self._fetch_talk(kind)
        raise ValueError(f"unknown export kind {kind!r}")

    def _dest(self, kind: str, stamp: str, suffix: str) -> Path:
        project = self.project()
        safe = re.sub(r"[^0-9A-Za-z_.-]+", "-", stamp).strip("-") or "export"
        return self.downloads_dir / kind / f"project-{project.id}-{kind}-{safe}{suffix}"

    def _previous_download(self, kind: str) -> Path | None:
        folder = self.downloads_dir / kind
        if not folder.is_dir():
            return None
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        return max(files, key=lambda p: p.stat().st_mtime) if files else None

    def _describe(self, kind: str) -> dict | None:
        from panoptes_client.panoptes import PanoptesAPIException

        project = self.project()

        def describe():
            try:
                return project.describe_export(kind)
            except PanoptesAPIException as exc:
                if "could not find" in str(exc).lower() or "not found" in str(exc).lower():
                    return None
                raise

        with self._as_client():
            return self._retry(f"describe the {kind} export", describe)

    def _fetch_panoptes(self, kind: str) -> FetchedExport:
        from panoptes_client.panoptes import PanoptesAPIException

        s = self.settings
        project = self.project()
        notes: list[str] = []
        fallback = False
        ready = _newest_ready_media(self._describe(kind))
        age = _age_hours(_media_time(ready)) if ready else float("inf")
        generate = s.generate == "always" or (s.generate == "auto" and age > s.max_export_age_hours)
        if generate:
            self.log.info("requesting a new %s export of project %s", kind, project.id)
            with self._as_client():
                self._retry(f"request a {kind} export", lambda: project.generate_export(kind))
            deadline = time.monotonic() + s.wait_timeout_s
            media = None
            while media is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                def wait():
                    try:  # the client polls every 2 s; it loops forever without a time-out, so always give one
                        return project.wait_export(kind, timeout=max(1.0, deadline - time.monotonic()))
                    except PanoptesAPIException as exc:
                        if "not ready within" in str(exc):
                            return None
                        raise

                with self._as_client():
                    described = self._retry(f"wait for the {kind} export", wait)
                if described is None:
                    break
                media = _newest_ready_media(described)
            if media is None:
                latest = _newest_ready_media(self._describe(kind))
                waited = int(s.wait_timeout_s)
                if latest is not None:
                    fallback = True
                    notes.append(
                        f"the new {kind} export stayed 'creating' for {waited} s (Zooniverse generates at most one "
                        f"export per resource per 24 h, silently); used the newest ready export, of "
                        f"{latest.get('updated_at') or latest.get('created_at')}")
                    self.log.warning(notes[-1])
                    ready = latest
                else:
                    previous = self._previous_download(kind)
                    if previous is None:
                        raise ExportNotReady(
                            f"the {kind} export of project {project.id} stayed 'creating' for {waited} s and there "
                            f"is no ready export on the server nor an earlier download in "
                            f"{self.downloads_dir / kind} to fall back on. Zooniverse generates at most one export "
                            f"per resource per 24 h: try again later, or raise wait_timeout_s.")
                    notes.append(f"the new {kind} export stayed 'creating' for {waited} s and the server has no "
                                 f"ready one; re-read the last download {previous.name}")
                    self.log.warning(notes[-1])
                    return FetchedExport(kind=kind, path=previous, source="live",
                                         label=f"live project {project.id} (earlier download)",
                                         fallback=True, notes=notes)
            else:
                ready = media
        elif ready is None:
            raise ExportNotReady(f"project {project.id} has no ready {kind} export and generate='never'")
        else:
            why = ("generate='never'" if s.generate == "never"
                   else f"younger than {s.max_export_age_hours:g} h")
            notes.append(f"reused the ready {kind} export of {ready.get('updated_at') or ready.get('created_at')} "
                         f"({why})")
        path = self._download_media(kind, ready)
        return FetchedExport(kind=kind, path=path, source="live",
                             label=f"live project {project.id} {kind} export", exported_at=_media_time(ready),
                             fallback=fallback, notes=notes)

    def _download_media(self, kind: str, media: dict) -> Path:
        """Download a described export, describing again when its presigned URL has expired."""
        stamp = f"{media.get('id', '')}-{media.get('updated_at') or media.get('created_at') or ''}"
        dest = self._dest(kind, stamp, ".csv")
        if dest.exists() and dest.stat().st_size > 0:
            self.log.info("the %s export %s is already downloaded", kind, dest.name)
            return dest
        src = media["src"]
        for refresh in range(self.settings.attempts):
            try:
                return self._retry(f"download the {kind} export",
                                   lambda: download(src, dest, kind=kind, timeout=self.settings.http_timeout_s),
                                   passthrough=(_UrlRefused,))
            except _UrlRefused as exc:
                self.log.warning("the %s export's download URL was refused (%s, a presigned URL expires within "
                                 "minutes); asking for a fresh one", kind, exc)
                fresh = self._describe(kind)
                same = [m for m in (fresh or {}).get("media", []) if m.get("id") == media.get("id")]
                again = same[0] if same and same[0].get("src") else _newest_ready_media(fresh)
                if again is None:
                    raise DownloadError(f"the {kind} export's download URL expired and no fresh one was given")
                src = again["src"]
        raise DownloadError(f"the {kind} export's download URL was refused {self.settings.attempts} times "
                            f"(expired presigned URLs?)")

    # --- Talk ---------------------------------------------------------------------------------------------------
    def _talk_requests(self, talk, section: str, talk_kind: str) -> list[dict]:
        def get():
            body = talk.get_data_request(section, talk_kind)[0] or {}
            return list(body.get("data_requests", []))

        with self._as_client():
            return newest_first(self._retry(f"ask Talk for {talk_kind} data requests", get))

    def _fetch_talk(self, kind: str) -> FetchedExport:
        from panoptes_client.panoptes import PanoptesAPIException

        s = self.settings
        project = self.project()
        section = f"project-{project.id}"
        talk_kind = TALK_KIND[kind]
        notes: list[str] = []
        fallback = False
        with talk_endpoint(s.talk_endpoint or DEFAULT_TALK_ENDPOINT) as talk:
            existing = self._talk_requests(talk, section, talk_kind)
            finished = [r for r in existing if str(r.get("state")) == "finished" and r.get("url")]
            fresh = finished and _age_hours(parse_time(finished[0].get("updated_at") or
                                                       finished[0].get("created_at"))) <= s.max_export_age_hours
            generate = s.generate == "always" or (s.generate == "auto" and not fresh)
            chosen = None
            if not generate:
                if not finished:
                    raise ExportNotReady(f"Talk has no finished {talk_kind} data request for {section} and "
                                         f"generate='never'")
                chosen = finished[0]
                notes.append(f"reused the finished Talk {talk_kind} data request of "
                             f"{chosen.get('updated_at') or chosen.get('created_at')}")
            else:
                self.log.info("requesting Talk %s data for %s", talk_kind, section)
                try:
                    with self._as_client():
                        self._retry(f"request Talk {talk_kind} data", lambda: talk.post_data_request(section, talk_kind))
                except ZooniverseError as exc:
                    if not isinstance(exc.__cause__, PanoptesAPIException):
                        raise
                    notes.append(f"Talk refused a new {talk_kind} data request ({exc.__cause__}); "
                                 f"using the newest one it has")
                    self.log.warning(notes[-1])
                chosen, waited_out, failed = self._wait_talk(talk, section, talk_kind)
                if chosen is None:
                    older = [r for r in finished]
                    why = ("failed on the Talk server" if failed else
                           f"was not finished within {int(s.wait_timeout_s)} s")
                    if older:
                        fallback = True
                        chosen = older[0]
                        notes.append(f"the new Talk {talk_kind} data request {why}; used the newest finished one, "
                                     f"of {chosen.get('updated_at') or chosen.get('created_at')}")
                        self.log.warning(notes[-1])
                    else:
                        previous = self._previous_download(kind)
                        if previous is None:
                            err = ExportFailed if failed else ExportNotReady
                            raise err(f"the Talk {talk_kind} data request for {section} {why}, and there is no "
                                      f"earlier finished request nor download in {self.downloads_dir / kind} to "
                                      f"fall back on")
                        notes.append(f"the new Talk {talk_kind} data request {why}; re-read the last download "
                                     f"{previous.name}")
                        self.log.warning(notes[-1])
                        return FetchedExport(kind=kind, path=previous, source="live",
                                             label=f"live project {project.id} (earlier Talk download)",
                                             fallback=True, notes=notes)
            path = self._download_talk(talk, section, talk_kind, kind, chosen)
        return FetchedExport(kind=kind, path=path, source="live", label=f"live project {project.id} Talk {talk_kind}",
                             exported_at=parse_time(chosen.get("updated_at") or chosen.get("created_at")),
                             fallback=fallback, notes=notes)

    def _wait_talk(self, talk, section: str, talk_kind: str):
        """Poll until the newest data request is finished (returned), failed, or the wait runs out."""
        deadline = time.monotonic() + self.settings.wait_timeout_s
        while True:
            requests_ = self._talk_requests(talk, section, talk_kind)
            if requests_:
                state = str(requests_[0].get("state", "")).lower()
                if state == "finished" and requests_[0].get("url"):
                    return requests_[0], False, False
                if state == "failed":
                    return None, False, True
            if time.monotonic() + self.settings.talk_poll_s > deadline:
                return None, True, False
            self._sleep(self.settings.talk_poll_s)

    def _download_talk(self, talk, section: str, talk_kind: str, kind: str, chosen: dict) -> Path:
        stamp = f"{chosen.get('id', '')}-{chosen.get('updated_at') or chosen.get('created_at') or ''}"
        dest = self._dest(kind, stamp, ".tar.gz")
        if dest.exists() and dest.stat().st_size > 0:
            return dest
        url = chosen["url"]
        for _ in range(self.settings.attempts):
            try:
                return self._retry(f"download Talk {talk_kind}",
                                   lambda: download(url, dest, kind=kind, timeout=self.settings.http_timeout_s),
                                   passthrough=(_UrlRefused,))
            except _UrlRefused as exc:
                self.log.warning("the Talk %s download URL was refused (%s); asking for a fresh one", talk_kind, exc)
                again = [r for r in self._talk_requests(talk, section, talk_kind)
                         if r.get("id") == chosen.get("id") and r.get("url")]
                if not again:
                    raise DownloadError(f"the Talk {talk_kind} download URL expired and no fresh one was given")
                url = again[0]["url"]
        raise DownloadError(f"the Talk {talk_kind} download URL was refused {self.settings.attempts} times")


__all__ = ["LiveSettings", "LiveSource", "credentials_from_env", "download", "retry", "ExportFileError"]
