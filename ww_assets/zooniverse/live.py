"""The live source: pull a project's exports and Talk data through the real panoptes-client.

What it adds to the client (facts in shared ZOONIVERSE.md):

* Every HTTP call has a time-out (the client sets none), and 5xx / 429 / time-outs / dropped connections are
  retried with exponential backoff and jitter, honouring Retry-After, for every call (the client retries only
  some GETs, 5 s apart): ``ww_assets.zooniverse.retries``.
* An export is generated only when the newest ready one is older than ``max_export_age_hours`` (Zooniverse
  generates at most one per resource per 24 h for non-admins, and *silently*: the POST says 201 and the export
  stays ``creating`` forever). Waiting always has a time-out; when it runs out, the newest ready export (or the
  last download) is used and the metadata says so.
* Downloads are streamed to ``<storage>/downloads/<kind>/`` and checked (``ww_assets.zooniverse.download``); an
  expired presigned URL is answered by describing the export again for a fresh URL. A download is named by what
  identifies its content (export id, the server's ETag, the content's SHA-256), never by ``updated_at`` alone: a
  server may regenerate an export in place without changing it. A fresh generation is always downloaded.
* The project is checked: a malformed ``WW_ZOONIVERSE_PROJECT`` fails before any network call, and the project the
  server answers with must have the id or slug asked for (a slug query answered with another project is refused).
* Retention (``prune_downloads``, ``WW_DOWNLOADS_KEEP``): after a successful ingest only the newest downloads of each
  kind are kept, never the file just ingested nor one the warehouse has not read.
* Talk: the endpoint is configurable, a ``failed`` data request and an empty request list are handled, a refused
  second request in a day falls back to the newest finished one.

Credentials come from the environment only (``ww_assets.zooniverse.connection``: username/password first, then
OAuth client id/secret) and are never logged or put in an error message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import re
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from ww_assets import settings as ww_settings
from ww_assets.storage import remove_stale_temporaries
from ww_assets.zooniverse import formats
from ww_assets.zooniverse.connection import (
    credentials_kind,
    panoptes_credentials,
    panoptes_endpoint,
    retrying_client,
)
from ww_assets.zooniverse.download import Downloaded, UrlRefused, download_keyed, prune_downloads
from ww_assets.zooniverse.errors import DownloadError, ExportFailed, ExportNotReady, ZooniverseError
from ww_assets.zooniverse.export_folder import FetchedExport
from ww_assets.zooniverse.retries import call_with_retries, retrying_session
from ww_assets.zooniverse.talk import DEFAULT_TALK_ENDPOINT, TALK_KIND, newest_first, parse_time, talk_endpoint

__all__ = ["LiveSettings", "LiveSource"]

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    backoff_s: float = 2.0                         # retry n >= 2 waits backoff_s * 2**(n-1) + jitter (retries.py)
    talk_poll_s: float = 5.0                       # how often to ask Talk whether a data request is finished

    def __post_init__(self):
        # a malformed project fails here, before any network call, naming the variable it stands for
        self.project = ww_settings.check_value("WW_ZOONIVERSE_PROJECT", str(self.project),
                                               where="the live source's project")
        if self.generate not in ("auto", "always", "never"):
            raise ValueError(f"generate must be auto, always or never, not {self.generate!r}")
        if not self.wait_timeout_s or self.wait_timeout_s <= 0:
            # panoptes-client waits forever when given no time-out: never let that happen.
            raise ValueError("wait_timeout_s must be > 0")
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")

    def endpoint(self) -> str:
        return panoptes_endpoint(self.panoptes_endpoint)


# ----------------------------------------------------------------------------------------------------------------
# export descriptions
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


def _when(record: dict) -> str:
    """The time an export or data request was made, as the server wrote it (for notes)."""
    return record.get("updated_at") or record.get("created_at") or ""


# ----------------------------------------------------------------------------------------------------------------
# the source
# ----------------------------------------------------------------------------------------------------------------

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
        self._http = retrying_session(timeout=settings.http_timeout_s, attempts=settings.attempts,
                                      backoff_s=settings.backoff_s)

    # --- connection ---------------------------------------------------------------------------------------------
    def __enter__(self) -> "LiveSource":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        s = self.settings
        creds = panoptes_credentials("a live Zooniverse pull")
        endpoint = s.endpoint()
        self._client = self._retry(f"log in to {endpoint}", lambda: retrying_client(
            endpoint, creds, http_timeout=s.http_timeout_s, attempts=s.attempts, backoff_s=s.backoff_s))
        self.log.info("connected to %s as %s", endpoint, credentials_kind(creds))

    def close(self) -> None:
        self._client = None
        self._project = None
        self._http.close()

    @contextlib.contextmanager
    def _as_client(self) -> Iterator[None]:
        """Make our client the one panoptes-client's objects use in this thread (its connection is per thread)."""
        if self._client is None:
            self.connect()
        with self._client:
            yield

    def _retry(self, what: str, fn: Callable[[], T], passthrough=()) -> T:
        return call_with_retries(what, fn, attempts=self.settings.attempts, backoff_s=self.settings.backoff_s,
                                 sleep=self._sleep, passthrough=passthrough)

    def project(self):
        """The project asked for, found and checked: its id (or slug) must be the one asked for."""
        if self._project is None:
            from panoptes_client import Project
            from panoptes_client.panoptes import PanoptesAPIException

            ref = str(self.settings.project).strip()
            by_id = ref.isdigit()
            where = self.settings.endpoint()

            def find():
                try:
                    return Project.find(int(ref)) if by_id else Project.find(slug=ref)
                except PanoptesAPIException as exc:
                    if "could not find" in str(exc).lower():
                        return None
                    raise

            with self._as_client():
                found = self._retry(f"find project {ref}", find)
            if found is None:
                raise ZooniverseError(f"WW_ZOONIVERSE_PROJECT={ref!r}: no such project at {where}")
            got_id, got_slug = str(getattr(found, "id", "")), str(getattr(found, "slug", "") or "")
            if (got_id != ref) if by_id else (got_slug.lower() != ref.lower()):
                raise ZooniverseError(
                    f"WW_ZOONIVERSE_PROJECT={ref!r}, but {where} answered with project {got_id} ({got_slug!r}), "
                    f"not the one asked for: refusing to pull it")
            self._project = found
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

    def _stem(self, kind: str, export_id: object) -> str:
        """The name every download of this export (or Talk request) starts with (``download.download_keyed``)."""
        safe = re.sub(r"[^0-9A-Za-z_.]+", "-", str(export_id or "")).strip("-") or "export"
        return f"project-{self.project().id}-{kind}-{safe}"

    def prune_downloads(self, kinds, *, keep: int | None, protect, ingested) -> dict[str, tuple[int, int]]:
        """Retention after a successful ingest: per kind, (files deleted, files kept) by
        ``download.prune_downloads``; ``protect`` the files just ingested, ``ingested(kind, path)`` whether the
        warehouse has read a file. Logged as counts only."""
        done = {}
        for kind in kinds:
            done[kind] = prune_downloads(self.downloads_dir / kind, keep=keep, protect=set(protect),
                                         ingested=lambda path, kind=kind: ingested(kind, path))
            if done[kind][0]:
                self.log.info("retention (keep %s per kind): removed %d earlier %s downloads, %d kept",
                              "all" if keep is None else keep, done[kind][0], kind, done[kind][1])
        return done

    def _earlier_download(self, kind: str, notes: list[str], *, why: str, label: str,
                          missing: ZooniverseError) -> FetchedExport:
        """The last file downloaded for ``kind``, as a fallback (``missing`` is raised when there is none)."""
        folder = self.downloads_dir / kind
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")] if folder.is_dir() \
            else []
        if not files:
            raise missing
        previous = max(files, key=lambda p: p.stat().st_mtime)
        notes.append(f"{why}; re-read the last download {previous.name}")
        self.log.warning(notes[-1])
        return FetchedExport(kind=kind, path=previous, source="live", label=label, fallback=True, notes=notes)

    def _download_refreshing(self, what: str, url: str, stem: str, suffix: str, kind: str,
                             fresh_url: Callable[[], str | None], *, fresh: bool) -> Downloaded:
        """Download ``url`` into the kind's folder, keyed by content (``download.download_keyed``; ``fresh``: always
        read the body); when the presigned URL is refused, ``fresh_url()`` gives another."""
        for _ in range(self.settings.attempts):
            try:
                return self._retry(f"download {what}", lambda: download_keyed(
                    url, self.downloads_dir / kind, stem, suffix, kind=kind, timeout=self.settings.http_timeout_s,
                    session=self._http, fresh=fresh), passthrough=(UrlRefused,))
            except UrlRefused as exc:
                self.log.warning("the download URL of %s was refused (%s; a presigned URL expires within "
                                 "minutes); asking for a fresh one", what, exc)
                url = fresh_url()
                if url is None:
                    raise DownloadError(f"the download URL of {what} expired and no fresh one was given") from None
        raise DownloadError(f"the download URL of {what} was refused {self.settings.attempts} times "
                            f"(expired presigned URLs?)")

    # --- Panoptes exports ---------------------------------------------------------------------------------------
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
        s = self.settings
        notes: list[str] = []
        ready = _newest_ready_media(self._describe(kind))
        age = _age_hours(_media_time(ready)) if ready else float("inf")
        if s.generate == "always" or (s.generate == "auto" and age > s.max_export_age_hours):
            fresh = self._generate_and_wait(kind)
            return self._export_fallback(kind, notes) if fresh is None else \
                self._fetched(kind, fresh, notes, fresh=True)
        if ready is None:
            raise ExportNotReady(f"project {self.project().id} has no ready {kind} export and generate='never'")
        why = "generate='never'" if s.generate == "never" else f"younger than {s.max_export_age_hours:g} h"
        notes.append(f"reused the ready {kind} export of {_when(ready)} ({why})")
        return self._fetched(kind, ready, notes)

    def _generate_and_wait(self, kind: str) -> dict | None:
        """Ask for a new export and wait for it, at most ``wait_timeout_s``; its media, or None when not ready."""
        from panoptes_client.panoptes import PanoptesAPIException

        project = self.project()
        self.log.info("requesting a new %s export of project %s", kind, project.id)
        with self._as_client():
            self._retry(f"request a {kind} export", lambda: project.generate_export(kind))
        deadline = time.monotonic() + self.settings.wait_timeout_s

        def wait():
            try:  # the client polls every 2 s; it loops forever without a time-out, so always give one
                return project.wait_export(kind, timeout=max(1.0, deadline - time.monotonic()))
            except PanoptesAPIException as exc:
                if "not ready within" in str(exc):
                    return None
                raise

        while deadline - time.monotonic() > 0:
            with self._as_client():
                described = self._retry(f"wait for the {kind} export", wait)
            if described is None:
                return None
            media = _newest_ready_media(described)
            if media is not None:
                return media
        return None

    def _export_fallback(self, kind: str, notes: list[str]) -> FetchedExport:
        """A new export stayed 'creating': the newest ready one, else the last download, else ExportNotReady."""
        project = self.project()
        waited = int(self.settings.wait_timeout_s)
        latest = _newest_ready_media(self._describe(kind))
        if latest is not None:
            notes.append(
                f"the new {kind} export stayed 'creating' for {waited} s (Zooniverse generates at most one "
                f"export per resource per 24 h, silently); used the newest ready export, of {_when(latest)}")
            self.log.warning(notes[-1])
            return self._fetched(kind, latest, notes, fallback=True)
        return self._earlier_download(
            kind, notes, why=f"the new {kind} export stayed 'creating' for {waited} s and the server has no "
                             f"ready one", label=f"live project {project.id} (earlier download)",
            missing=ExportNotReady(
                f"the {kind} export of project {project.id} stayed 'creating' for {waited} s and there is no ready "
                f"export on the server nor an earlier download in {self.downloads_dir / kind} to fall back on. "
                f"Zooniverse generates at most one export per resource per 24 h: try again later, or raise "
                f"wait_timeout_s."))

    def _noted(self, what: str, got: Downloaded, notes: list[str]) -> Path:
        if got.reused:
            notes.append(f"{what}: {got.why} as the earlier download {got.path.name}, kept it")
        else:
            notes.append(f"{what}: downloaded {got.path.name}")
        self.log.info(notes[-1])
        return got.path

    def _fetched(self, kind: str, media: dict, notes: list[str], fallback: bool = False,
                 fresh: bool = False) -> FetchedExport:
        """Download a described export (``fresh``: just generated, always read) and say where it came from."""
        def fresh_url() -> str | None:
            described = self._describe(kind)
            same = [m for m in (described or {}).get("media", []) if m.get("id") == media.get("id")]
            again = same[0] if same and same[0].get("src") else _newest_ready_media(described)
            return again["src"] if again else None

        got = self._download_refreshing(f"the {kind} export", media["src"], self._stem(kind, media.get("id")), ".csv",
                                        kind, fresh_url, fresh=fresh)
        dest = self._noted(f"the {kind} export", got, notes)
        return FetchedExport(kind=kind, path=dest, source="live",
                             label=f"live project {self.project().id} {kind} export", exported_at=_media_time(media),
                             fallback=fallback, notes=notes)

    # --- Talk ---------------------------------------------------------------------------------------------------
    def _talk_requests(self, talk, section: str, talk_kind: str) -> list[dict]:
        def get():
            body = talk.get_data_request(section, talk_kind)[0] or {}
            return list(body.get("data_requests", []))

        with self._as_client():
            return newest_first(self._retry(f"ask Talk for {talk_kind} data requests", get))

    def _fetch_talk(self, kind: str) -> FetchedExport:
        s = self.settings
        project = self.project()
        section, talk_kind = f"project-{project.id}", TALK_KIND[kind]
        notes: list[str] = []
        fallback = generated = False           # generated: Talk made this request just now (always download it)
        with talk_endpoint(s.talk_endpoint or DEFAULT_TALK_ENDPOINT) as talk:
            finished = [r for r in self._talk_requests(talk, section, talk_kind)
                        if str(r.get("state")) == "finished" and r.get("url")]
            fresh = finished and _age_hours(parse_time(_when(finished[0]))) <= s.max_export_age_hours
            if s.generate == "never" or (s.generate == "auto" and fresh):
                if not finished:
                    raise ExportNotReady(f"Talk has no finished {talk_kind} data request for {section} and "
                                         f"generate='never'")
                chosen = finished[0]
                notes.append(f"reused the finished Talk {talk_kind} data request of {_when(chosen)}")
            else:
                chosen, failed, generated = self._request_talk(talk, section, talk_kind, notes)
                if chosen is None:
                    why = "failed on the Talk server" if failed else \
                        f"was not finished within {int(s.wait_timeout_s)} s"
                    if not finished:
                        return self._earlier_download(
                            kind, notes, why=f"the new Talk {talk_kind} data request {why}",
                            label=f"live project {project.id} (earlier Talk download)",
                            missing=(ExportFailed if failed else ExportNotReady)(
                                f"the Talk {talk_kind} data request for {section} {why}, and there is no earlier "
                                f"finished request nor download in {self.downloads_dir / kind} to fall back on"))
                    fallback, chosen, generated = True, finished[0], False
                    notes.append(f"the new Talk {talk_kind} data request {why}; used the newest finished one, "
                                 f"of {_when(chosen)}")
                    self.log.warning(notes[-1])
            path = self._download_talk(talk, section, talk_kind, kind, chosen, notes, fresh=generated)
        return FetchedExport(kind=kind, path=path, source="live", label=f"live project {project.id} Talk {talk_kind}",
                             exported_at=parse_time(_when(chosen)), fallback=fallback, notes=notes)

    def _request_talk(self, talk, section: str, talk_kind: str,
                      notes: list[str]) -> tuple[dict | None, bool, bool]:
        """Ask Talk for a new data request (a refusal is noted) and wait for it: (finished request | None, failed,
        whether Talk accepted the new request: then what it serves is a fresh generation)."""
        from panoptes_client.panoptes import PanoptesAPIException

        self.log.info("requesting Talk %s data for %s", talk_kind, section)
        accepted = True
        try:
            with self._as_client():
                self._retry(f"request Talk {talk_kind} data", lambda: talk.post_data_request(section, talk_kind))
        except ZooniverseError as exc:
            if not isinstance(exc.__cause__, PanoptesAPIException):
                raise
            accepted = False
            notes.append(f"Talk refused a new {talk_kind} data request ({exc.__cause__}); "
                         f"using the newest one it has")
            self.log.warning(notes[-1])
        deadline = time.monotonic() + self.settings.wait_timeout_s
        while True:
            requests_ = self._talk_requests(talk, section, talk_kind)
            if requests_:
                state = str(requests_[0].get("state", "")).lower()
                if state == "finished" and requests_[0].get("url"):
                    return requests_[0], False, accepted
                if state == "failed":
                    return None, True, accepted
            if time.monotonic() + self.settings.talk_poll_s > deadline:
                return None, False, accepted
            self._sleep(self.settings.talk_poll_s)

    def _download_talk(self, talk, section: str, talk_kind: str, kind: str, chosen: dict, notes: list[str], *,
                       fresh: bool) -> Path:
        def fresh_url() -> str | None:
            again = [r for r in self._talk_requests(talk, section, talk_kind)
                     if r.get("id") == chosen.get("id") and r.get("url")]
            return again[0]["url"] if again else None

        got = self._download_refreshing(f"Talk {talk_kind}", chosen["url"], self._stem(kind, chosen.get("id")),
                                        ".tar.gz", kind, fresh_url, fresh=fresh)
        return self._noted(f"the Talk {talk_kind} data", got, notes)
