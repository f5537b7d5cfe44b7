"""A loopback Zooniverse for tests: export folders in the real format, and a server the REAL panoptes-client uses.

``write_export_folder(folder, n_pages=...)`` writes the five files a project owner downloads (shared ZOONIVERSE.md
format). A larger ``n_pages`` with the same seed writes a strict superset (the first rows are byte-identical), which
is what the re-pull test needs. The returned :class:`ExportTruth` names the volunteer names and IPs used, so privacy
tests can look for them.

:class:`LoopbackZooniverse` serves Panoptes (sign-in, OAuth token, projects, exports, subject sets / subjects /
uploads, workflow links) and Talk (data requests) on 127.0.0.1 with switchable faults, closely enough that
panoptes-client 1.7 logs in, finds the project, generates, polls and downloads exports and Talk data, and
creates subject sets and uploads subjects. Fixtures: ``loopback_exports``, ``loopback_zooniverse``; add
``pytest_plugins = ["ww_assets_tests.support.loopback_zooniverse"]`` to conftest.py to use them anywhere.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import gzip
import hashlib
import io
import itertools
import json
import random
import re
import secrets
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from ww_assets.zooniverse import formats

PROJECT_ID = 16616
PROJECT_SLUG = "test-owner/weird-and-wonderful"
FOREIGN_PROJECT_ID = 99_001                      # what a slug query answers with under Faults.foreign_project_on_slug
FOREIGN_PROJECT_SLUG = "someone-else/other-project"
WORKFLOW_ID = 18541
SUBJECT_SET_ID = 105443
HASHTAGS = ("merger", "ring", "lens", "artifact", "tidal", "weird", "spiral")

CLASSIFICATIONS_FILE = "weird-and-wonderful-classifications.csv"
SUBJECTS_FILE = "weird-and-wonderful-subjects.csv"
WORKFLOWS_FILE = "weird-and-wonderful-workflows.csv"


def comments_file(project_id: int = PROJECT_ID) -> str:
    return f"project-{project_id}-comments.json"


def tags_file(project_id: int = PROJECT_ID) -> str:
    return f"project-{project_id}-tags.json"


@dataclasses.dataclass
class ExportTruth:
    folder: Path
    classification_ids: list[int]
    comment_ids: list[int]
    tag_ids: list[int]
    subject_ids: list[int]
    volunteer_names: list[str]          # raw names (logged-in and not-logged-in) that must never reach DuckDB
    volunteer_ips: list[str]
    volunteer_logins_in_talk: list[str]
    bad_classification_lines: dict[int, str] = dataclasses.field(default_factory=dict)  # line -> why
    anonymous_names: list[str] = dataclasses.field(default_factory=list)

    @property
    def files(self) -> dict[str, Path]:
        return {
            "classifications": self.folder / CLASSIFICATIONS_FILE,
            "subjects": self.folder / SUBJECTS_FILE,
            "workflows": self.folder / WORKFLOWS_FILE,
            "talk_comments": self.folder / comments_file(),
            "talk_tags": self.folder / tags_file(),
        }


def _volunteers(rng: random.Random, n: int = 14):
    people = []
    for k in range(n):
        if k % 4 == 3:
            people.append({"name": f"not-logged-in-{rng.getrandbits(64):016x}", "id": "",
                           "ip": f"198.51.100.{10 + k}"})
        else:
            people.append({"name": f"Zz_Volunteer_{k}_Private", "id": str(1_900_000 + 37 * k),
                           "ip": f"203.0.113.{20 + k}"})
    return people


def _subject_ids(n_pages: int) -> list[int]:
    return [71_000_000 + i for i in range(max(32, 16 * ((n_pages // 3) + 2)))]


def _record(fields: tuple[str, ...], **values) -> dict:
    """One Talk export record with exactly the export's fields, in its order (anything else is a fixture bug)."""
    if set(values) != set(fields):
        raise ValueError(f"fixture record has fields {sorted(values)}, the Talk export has {list(fields)}")
    return {field: values[field] for field in fields}


def write_export_folder(folder: str | Path, n_pages: int = 60, n_comments: int | None = None, seed: int = 7,
                        bad_rows: bool = False, project_id: int = PROJECT_ID) -> ExportTruth:
    """Write the five W&W export files into ``folder``; the first rows do not depend on ``n_pages``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    people = _volunteers(rng)
    subjects = _subject_ids(max(n_pages, 300))
    n_comments = n_pages // 2 if n_comments is None else n_comments

    # --- classifications: one row per 16-image page --------------------------------------------------------
    truth_ids: list[int] = []
    bad: dict[int, str] = {}
    rows: list[list[str]] = []
    for i in range(n_pages):
        prng = random.Random(seed * 1_000_003 + i)          # per-row stream: rows do not depend on n_pages
        person = people[prng.randrange(len(people))]
        start = prng.randrange(0, len(subjects) - 16)
        page = subjects[start:start + 16]
        clicked = prng.sample(page, prng.choice([0, 0, 1, 1, 2, 3]))
        group_id = 90_000_000 + i
        cid = 400_000_000 + 3 * i
        created = f"2022-11-{1 + i // 1440:02d} {(i // 60) % 24:02d}:{i % 60:02d}:{prng.randrange(60):02d} UTC"
        metadata = {
            "source": "api", "session": f"{prng.getrandbits(128):032x}", "viewport": {"width": 1280, "height": 720},
            "started_at": "2022-11-13T10:01:01.123Z", "user_agent": "Mozilla/5.0 (X11; Linux) ZzBrowserSecret/1.0",
            "utc_offset": "0", "finished_at": "2022-11-13T10:01:58.456Z", "live_project": True,
            "user_language": "en", "subject_selection_state": {"retired": False, "already_seen": False},
            "workflow_version": "160.317",
        }
        annotations = [{"task": "T0", "value": [{"subject": s} for s in clicked]}]
        subject_data = {str(group_id): {"retired": None, "#group_subject_ids": "-".join(map(str, page)),
                                        "#subject_group_id": group_id}}
        rows.append([str(cid), person["name"], person["id"], person["ip"], str(WORKFLOW_ID), "Weird & Wonderful",
                     "160.317" if i % 5 else "160.310", created, "", "",
                     json.dumps(metadata, separators=(",", ":")), json.dumps(annotations, separators=(",", ":")),
                     json.dumps(subject_data, separators=(",", ":")), str(group_id)])
        truth_ids.append(cid)
    if bad_rows:
        # Five kinds of malformed rows, at known lines (header = line 1, data from line 2).
        good = list(rows[0])
        broken = {
            "annotations is not valid JSON": lambda r: r.__setitem__(11, '[{"task":"T0","value":[{"subject":'),
            "classification_id is not an integer": lambda r: r.__setitem__(0, "12ab"),
            "created_at is missing or not a timestamp": lambda r: r.__setitem__(7, "yesterday-ish"),
            "subject_data is not valid JSON": lambda r: r.__setitem__(12, '{"1":{"#group_subject_ids":'),
        }
        inserted = []
        for k, (why, breaker) in enumerate(broken.items()):
            row = list(good)
            row[0] = str(500_000_000 + k)
            breaker(row)
            inserted.append((why, row))
        at = [3, 7, 11, 15]
        for (why, row), pos in zip(inserted, at):
            rows.insert(pos, row)
    with open(folder / CLASSIFICATIONS_FILE, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(formats.CLASSIFICATION_COLUMNS)
        for row in rows:
            writer.writerow(row)
        if bad_rows:
            fh.write('500000009,Zz_Volunteer_0_Private,1900000,203.0.113.20,18541\n')  # a row cut short
    if bad_rows:
        for idx, row in enumerate(rows):
            cid = row[0]
            if cid == "12ab":
                bad[idx + 2] = "classification_id is not an integer"
            elif cid.startswith("50000000"):
                k = int(cid) - 500_000_000
                bad[idx + 2] = list(broken)[k]
        bad[len(rows) + 2] = "unreadable CSV line"
    # --- subjects: one row per subject x set x workflow ----------------------------------------------------
    with open(folder / SUBJECTS_FILE, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(formats.SUBJECT_COLUMNS)
        for k, sid in enumerate(subjects):
            oid = str(36_411_448_540_000_000 + 7 * k)
            meta = {"object_id": oid, "ra": round(150.0 + k * 1e-3, 6), "dec": round(2.0 - k * 1e-3, 6),
                    "image": f"{oid}.png", "#batch": "b000"}
            loc = {"0": f"https://panoptes-uploads.zooniverse.org/subject_location/{oid}.png"}
            for wf in ([WORKFLOW_ID, ""] if k % 50 == 0 else [WORKFLOW_ID]):
                writer.writerow([sid, PROJECT_ID, wf, SUBJECT_SET_ID, json.dumps(meta), json.dumps(loc),
                                 k % 9, "", "", "2022-10-01 12:00:00 UTC", "2022-11-20 12:00:00 UTC"])
    # --- workflows ------------------------------------------------------------------------------------------
    with open(folder / WORKFLOWS_FILE, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(formats.WORKFLOW_COLUMNS)
        tasks = {"T0": {"type": "shortcut", "help": "T0.help", "question": "T0.question"}}
        for minor in (310, 317):
            writer.writerow([WORKFLOW_ID, "Weird & Wonderful", 160, "true", n_pages, "false", "true", "false", "en",
                             "T0", "", 0, json.dumps(tasks), json.dumps({"criteria": "classification_count",
                                                                         "options": {"count": 20}}),
                             json.dumps({"T0.question": "Click the interesting ones"}), minor])
    # --- Talk comments and tags -----------------------------------------------------------------------------
    comments, tags = [], []
    logins = []
    for j in range(n_comments):
        crng = random.Random(seed * 7_000_003 + j)
        person = [p for p in people if p["id"]][crng.randrange(len([p for p in people if p["id"]]))]
        other = [p for p in people if p["id"]][crng.randrange(len([p for p in people if p["id"]]))]
        sid = subjects[crng.randrange(len(subjects))]
        tag_names = crng.sample(HASHTAGS, crng.choice([0, 1, 1, 2]))
        body = f"Look at this one @{other['name']} " + " ".join(f"#{t}" for t in tag_names)
        comment_id = 3_000_000 + 2 * j
        comments.append(_record(
            formats.TALK_COMMENT_FIELDS,
            board_id=9001, board_title="Notes", board_description="Talk about subjects",
            discussion_id=5_000_000 + sid % 1000, discussion_title=f"Subject {sid}",
            comment_id=comment_id, comment_body=body, comment_focus_id=sid,
            comment_focus_type="Subject", comment_user_id=int(person["id"]),
            comment_user_login=person["name"], comment_created_at=f"2022-11-13T10:{j // 60 % 60:02d}:{j % 60:02d}.123Z",
        ))
        logins.append(person["name"])
        for t_i, t in enumerate(tag_names):
            tags.append(_record(
                formats.TALK_TAG_FIELDS, id=700_000 + 10 * j + t_i, name=t, section=f"project-{project_id}",
                created_at=f"2022-11-13T10:{j // 60 % 60:02d}:{j % 60:02d}.500Z", user_id=int(person["id"]),
                comment_id=comment_id, taggable_id=sid, taggable_type="Subject", project_id=project_id,
                user_login=person["name"]))
    (folder / comments_file(project_id)).write_text(json.dumps(comments, indent=1), encoding="utf-8")
    (folder / tags_file(project_id)).write_text(json.dumps(tags, indent=1), encoding="utf-8")
    return ExportTruth(
        folder=folder, classification_ids=truth_ids, comment_ids=[c["comment_id"] for c in comments],
        tag_ids=[t["id"] for t in tags], subject_ids=subjects,
        volunteer_names=[p["name"] for p in people], volunteer_ips=[p["ip"] for p in people],
        volunteer_logins_in_talk=sorted(set(logins)), bad_classification_lines=bad,
        anonymous_names=[p["name"] for p in people if not p["id"]])


# ================================================================================================================
# The loopback Zooniverse: Panoptes + Talk + presigned media on 127.0.0.1
# ================================================================================================================


EXPORT_KINDS = ("classifications", "subjects", "workflows")
TALK_KINDS = ("comments", "tags")


def _iso(when: float) -> str:
    return dt.datetime.fromtimestamp(when, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclasses.dataclass
class Faults:
    """Switchable faults. Counters count down as they fire; ``path`` is a regex on the request path."""

    errors: list = dataclasses.field(default_factory=list)      # [{"path": re, "status": 503, "count": n}]
    slow: list = dataclasses.field(default_factory=list)        # [{"path": re, "delay": s, "count": n}]
    stuck_exports: set = dataclasses.field(default_factory=set)  # kinds whose generation stays 'creating'
    expired_urls: int = 0                                        # next N media downloads answer 403 (expired)
    truncated_gzip: int = 0                                      # next N CSV downloads: gzip body cut short
    talk_failed: set = dataclasses.field(default_factory=set)    # Talk kinds whose data request ends 'failed'
    talk_refuse_repeat: bool = True                              # a 2nd Talk request within a day is refused
    talk_pending_polls: int = 1                                  # GETs a new Talk request stays pending
    # A new export regenerates the newest one in place (same media id, same created_at / updated_at, the files
    # served now), and a new Talk data request re-runs the newest one (same id and times, accepted even the same
    # day): a server whose timestamps say nothing changed when the content did.
    regenerate_in_place: bool = False
    foreign_project_on_slug: bool = False                        # a slug query answers with another project
    media_etags: bool = False                                    # downloads carry an ETag (MD5 of the body)


class LoopbackZooniverse:
    """A tiny Panoptes + Talk on 127.0.0.1 that the real panoptes-client talks to.

    Serves the files of ``exports`` (a folder as written by :func:`write_export_folder` or the sample's
    ``exports/``) as the project's exports; :meth:`serve_exports` swaps in another folder. Records every request
    (``requests``), and what a client uploaded (``subject_sets``, ``subjects``, ``uploads``, ``workflow_links``).
    """

    def __init__(self, exports: str | Path, project_id: int = PROJECT_ID, slug: str = PROJECT_SLUG,
                 username: str = "test-owner", password: str | None = None):
        self.project_id = project_id
        self.slug = slug
        self.username = username
        self.password = password or f"pw-{secrets.token_hex(8)}"
        self.user_id = 1_234_567
        self.client_id = "test-client-id"
        self.client_secret = f"secret-{secrets.token_hex(8)}"
        self.faults = Faults()
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(1_000)
        self._tokens: dict[str, float] = {}
        self._sessions: set[str] = set()
        self.media: dict[str, list[dict]] = {k: [] for k in EXPORT_KINDS}
        self.talk_requests: dict[str, list[dict]] = {k: [] for k in TALK_KINDS}
        self._blobs: dict[str, tuple[bytes, str, str | None]] = {}   # media id -> (bytes, content-type, encoding)
        self._signatures: dict[str, float] = {}                      # signature -> expiry (epoch)
        self.subject_sets: dict[str, dict] = {}
        self.subjects: dict[str, dict] = {}
        self.uploads: list[dict] = []
        self.workflow_links: dict[str, list[str]] = {str(WORKFLOW_ID): []}
        self._upload_slots: dict[str, tuple[str, str]] = {}          # token -> (subject id, media type)
        self.exports_folder = Path(exports)
        # Bind now (the port goes into presigned URLs); serve from start().
        self._server: ThreadingHTTPServer | None = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._address = self._server.server_address[:2]
        self._thread: threading.Thread | None = None
        self.serve_exports(exports)

    # --- life cycle -------------------------------------------------------------------------------------------
    def start(self) -> "LoopbackZooniverse":
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-zooniverse",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def base_url(self) -> str:
        host, port = self._address
        return f"http://{host}:{port}"

    @property
    def panoptes_endpoint(self) -> str:
        return self.base_url

    @property
    def talk_endpoint(self) -> str:
        return self.base_url + "/talk/"

    def env(self) -> dict[str, str]:
        """Environment for the real client: PANOPTES_ENDPOINT (read per thread) and the owner's credentials."""
        return {"PANOPTES_ENDPOINT": self.panoptes_endpoint, "PANOPTES_USERNAME": self.username,
                "PANOPTES_PASSWORD": self.password}

    # --- content ----------------------------------------------------------------------------------------------
    def serve_exports(self, folder: str | Path, ready: bool = True) -> None:
        """Serve ``folder``'s files as the project's exports (one ready export of each kind, made 'now')."""
        folder = Path(folder)
        self.exports_folder = folder
        with self._lock:
            for kind in EXPORT_KINDS:
                self.media[kind] = []
                if ready:
                    self._new_media(kind, state="ready")
            for kind in TALK_KINDS:
                self.talk_requests[kind] = []

    def _export_file(self, kind: str) -> Path:
        from ww_assets.zooniverse.export_folder import find_export_file

        return find_export_file(self.exports_folder, kind if kind in EXPORT_KINDS else f"talk_{kind}")

    def _new_media(self, kind: str, state: str) -> dict:
        now = time.time()
        media_id = str(next(self._ids))
        media = {"id": media_id, "href": f"/media/{media_id}", "content_type": "text/csv",
                 "media_type": f"project_{kind}_export", "external_link": False,
                 "created_at": _iso(now), "updated_at": _iso(now), "metadata": {"state": state},
                 "src": None}
        if state == "ready":
            self._fill_media(kind, media)
        self.media[kind].insert(0, media)
        return media

    def _fill_media(self, kind: str, media: dict) -> None:
        data = self._export_file(kind).read_bytes()
        if data[:2] != b"\x1f\x8b":
            data = gzip.compress(data, mtime=0)
        self._blobs[media["id"]] = (data, "text/csv", "gzip")
        media["metadata"] = {"state": "ready"}
        media["updated_at"] = _iso(time.time())
        media["src"] = self._presign(f"/media/{media['id']}/{self.slug.split('/')[-1]}-{kind}.csv")

    def _talk_blob(self, kind: str, request_id: str) -> None:
        data = self._export_file(kind).read_bytes()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo(f"project-{self.project_id}-{kind}_{dt.date.today():%Y-%m-%d}.json")
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
        self._blobs[f"talk-{request_id}"] = (buf.getvalue(), "application/x-gzip", None)

    def _presign(self, path: str, ttl: float = 300.0) -> str:
        signature = secrets.token_urlsafe(12)
        expires = time.time() + ttl
        self._signatures[signature] = expires
        return f"{self.base_url}{path}?se={int(expires)}&sig={signature}"

    # --- helpers for tests ------------------------------------------------------------------------------------
    def fail_next(self, count: int, status: int = 503, path: str = r".*", retry_after: int | None = None) -> None:
        """Answer the next ``count`` requests matching ``path`` with ``status`` (and a Retry-After header)."""
        with self._lock:
            self.faults.errors.append({"path": re.compile(path), "status": status, "count": count,
                                       "retry_after": retry_after})

    def slow_next(self, count: int, delay: float, path: str = r".*") -> None:
        with self._lock:
            self.faults.slow.append({"path": re.compile(path), "delay": delay, "count": count})

    def count(self, method: str, path_regex: str) -> int:
        rx = re.compile(path_regex)
        return sum(1 for m, p, _ in self.requests if m == method and rx.search(p))

    # --- request handling (called from handler threads) -------------------------------------------------------
    def _take_fault(self, kind: str, path: str):
        with self._lock:
            for fault in getattr(self.faults, kind):
                if fault["count"] > 0 and fault["path"].search(path):
                    fault["count"] -= 1
                    return fault
        return None

    def _authorised(self, headers) -> bool:
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        expiry = self._tokens.get(auth[7:])
        return bool(expiry and expiry > time.time())

    def handle(self, method: str, raw_path: str, headers, body: bytes):
        """Return (status, headers dict, body bytes)."""
        parts = urlsplit(raw_path)
        path = re.sub(r"/{2,}", "/", parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        slow = self._take_fault("slow", path)
        if slow:
            time.sleep(slow["delay"])
        error = self._take_fault("errors", path)
        if error:
            message = f"Injected {error['status']} for tests"
            status, hdrs, data = _json(error["status"], {"errors": [{"message": message}]})
            if error.get("retry_after") is not None:
                hdrs["Retry-After"] = str(error["retry_after"])
            return status, hdrs, data
        if path.startswith("/media/"):
            return self._media(method, path, query)
        if path.startswith("/upload/"):
            return self._upload(method, path, headers, body)
        if path == "/users/sign_in":
            return self._sign_in(method, headers, body)
        if path == "/oauth/token":
            return self._token(parse_qs(body.decode("utf-8")), headers)
        if path.startswith("/talk/"):
            if not self._authorised(headers):
                return _json(401, {"error": "You must be logged in to access this resource."})
            return self._talk(method, path[len("/talk"):], query, body)
        if path.startswith("/api/"):
            return self._api(method, path[len("/api"):], query, headers, body)
        return _json(404, {"errors": [{"message": f"no route for {path}"}]})

    def _sign_in(self, method: str, headers, body: bytes):
        if method == "GET":
            return 200, {"X-CSRF-Token": secrets.token_hex(16), "Content-Type": "application/json"}, b"{}"
        try:
            user = json.loads(body or b"{}").get("user", {})
        except ValueError:
            return _json(400, {"error": "bad request"})
        if user.get("login") != self.username or user.get("password") != self.password:
            return _json(401, {"error": "Invalid email or password."})
        session = secrets.token_hex(16)
        self._sessions.add(session)
        status, hdrs, data = _json(200, {"users": [{"id": str(self.user_id), "login": self.username}]})
        hdrs["Set-Cookie"] = f"_Panoptes_session={session}; path=/; HttpOnly"
        return status, hdrs, data

    def _token(self, form: dict, headers):
        grant = (form.get("grant_type") or [""])[0]
        if grant == "password":
            cookie = headers.get("Cookie", "")
            if not any(s in cookie for s in self._sessions):
                return _json(401, {"errors": ["not signed in"]})
        elif grant == "client_credentials":
            if (form.get("client_id") or [""])[0] != self.client_id or \
                    (form.get("client_secret") or [""])[0] != self.client_secret:
                return _json(401, {"errors": ["invalid client"]})
        elif grant != "refresh_token":
            return _json(400, {"errors": ["unsupported grant"]})
        token = secrets.token_hex(20)
        self._tokens[token] = time.time() + 7200
        return _json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 7200,
                           "refresh_token": secrets.token_hex(20), "scope": "public project", "created_at": 0})

    def _project_json(self) -> dict:
        return {"id": str(self.project_id), "display_name": "Weird & Wonderful (loopback)", "slug": self.slug,
                "live": True, "launch_approved": True, "configuration": {}, "classifications_count": 0,
                "links": {"workflows": [str(WORKFLOW_ID)], "subject_sets": list(self.subject_sets)}}

    def _api(self, method: str, path: str, query: dict, headers, body: bytes):
        authorised = self._authorised(headers)
        m = re.fullmatch(r"/projects(?:/(\d+))?", path)
        if m and method == "GET":
            ids = m.group(1) or query.get("id")
            if query.get("slug") and self.faults.foreign_project_on_slug:
                return _paged("projects", [{**self._project_json(), "id": str(FOREIGN_PROJECT_ID),
                                            "slug": FOREIGN_PROJECT_SLUG, "display_name": "Someone else's"}])
            if (ids and str(ids) != str(self.project_id)) or (query.get("slug") and query["slug"] != self.slug):
                return _paged("projects", [])
            return _paged("projects", [self._project_json()])
        m = re.fullmatch(r"/projects/(\d+)/(classifications|subjects|workflows)_export", path)
        if m:
            if not authorised:
                return _json(401, {"errors": [{"message": "You must be logged in to access this resource."}]})
            if m.group(1) != str(self.project_id):
                return _json(404, {"errors": [{"message": f"Could not find project with id='{m.group(1)}'"}]})
            kind = m.group(2)
            with self._lock:
                if method == "POST" and self.faults.regenerate_in_place and self.media[kind]:
                    media = self.media[kind][0]
                    stamps = media["created_at"], media["updated_at"]
                    if kind in self.faults.stuck_exports:
                        media.update(metadata={"state": "creating"}, src=None)
                    else:
                        self._fill_media(kind, media)
                    media["created_at"], media["updated_at"] = stamps
                    return _json(201, {"media": [media]})
                if method == "POST":
                    media = self._new_media(kind, state="creating")
                    if kind not in self.faults.stuck_exports:
                        self._fill_media(kind, media)
                    return _json(201, {"media": [media]})
                if not self.media[kind]:
                    return _json(404, {"errors": [{"message": f"Could not find {kind}_export for project "
                                                              f"{self.project_id}"}]})
                for media in self.media[kind]:    # each describe hands out a fresh presigned URL
                    if media["metadata"]["state"] == "ready":
                        media["src"] = self._presign(urlsplit(media["src"]).path)
                return _json(200, {"media": self.media[kind]})
        if not authorised and method != "GET":
            return _json(401, {"errors": [{"message": "You must be logged in to access this resource."}]})
        return self._uploads_api(method, path, query, body)

    # --- subject sets and subjects (what Subject.save / add_location / SubjectSet.add send) -------------------
    def _uploads_api(self, method: str, path: str, query: dict, body: bytes):
        payload = json.loads(body or b"{}") if body else {}
        with self._lock:
            if path == "/subject_sets" and method == "POST":
                spec = payload.get("subject_sets", {})
                set_id = str(next(self._ids))
                record = {"id": set_id, "display_name": spec.get("display_name"), "metadata": spec.get("metadata", {}),
                          "set_member_subjects_count": 0, "links": {"project": str(spec.get("links", {}).get(
                              "project", self.project_id)), "subjects": [], "workflows": []}}
                self.subject_sets[set_id] = record
                return _json(201, {"subject_sets": [record]}, etag=True)
            m = re.fullmatch(r"/subject_sets/(\d+)", path)
            if m and method == "GET":
                record = self.subject_sets.get(m.group(1))
                return _paged("subject_sets", [record] if record else [])
            if path == "/subject_sets" and method == "GET":
                wanted = query.get("id")
                found = [r for k, r in self.subject_sets.items() if not wanted or k == str(wanted)]
                return _paged("subject_sets", found)
            m = re.fullmatch(r"/subject_sets/(\d+)/links/subjects", path)
            if m and method == "POST":
                record = self.subject_sets.get(m.group(1))
                if record is None:
                    return _json(404, {"errors": [{"message": "Could not find subject_set"}]})
                for sid in payload.get("subjects", []):
                    if str(sid) not in self.subjects:
                        return _json(422, {"errors": [{"message": f"subject {sid} does not exist"}]})
                    if str(sid) not in record["links"]["subjects"]:
                        record["links"]["subjects"].append(str(sid))
                record["set_member_subjects_count"] = len(record["links"]["subjects"])
                return _json(200, {"subject_sets": [record]}, etag=True)
            if path == "/set_member_subjects" and method == "GET":
                set_id, sid = str(query.get("subject_set_id", "")), str(query.get("subject_id", ""))
                record = self.subject_sets.get(set_id)
                hits = []
                if record:
                    hits = [{"id": f"{set_id}-{s}", "links": {"subject": s, "subject_set": set_id}}
                            for s in record["links"]["subjects"] if not sid or s == sid]
                return _paged("set_member_subjects", hits)
            if path == "/subjects" and method == "POST":
                spec = payload.get("subjects", {})
                subject_id = str(next(self._ids))
                locations = []
                for media_type in spec.get("locations", []):
                    if isinstance(media_type, dict):          # a remote location: nothing to upload
                        locations.append(media_type)
                        continue
                    token = secrets.token_urlsafe(12)
                    self._upload_slots[token] = (subject_id, media_type)
                    locations.append({media_type: f"{self.base_url}/upload/{token}"})
                record = {"id": subject_id, "metadata": spec.get("metadata", {}), "locations": locations,
                          "links": {"project": str(spec.get("links", {}).get("project", self.project_id))}}
                self.subjects[subject_id] = record
                return _json(201, {"subjects": [record]}, etag=True)
            m = re.fullmatch(r"/subjects/(\d+)", path)
            if m and method == "GET":
                record = self.subjects.get(m.group(1))
                return _paged("subjects", [record] if record else [])
            m = re.fullmatch(r"/workflows/(\d+)", path)
            if m and method == "GET":
                wid = m.group(1)
                if wid not in self.workflow_links:
                    return _paged("workflows", [])
                return _paged("workflows", [{"id": wid, "display_name": "Weird & Wonderful", "configuration": {},
                                             "links": {"project": str(self.project_id),
                                                       "subject_sets": self.workflow_links[wid]}}])
            m = re.fullmatch(r"/workflows/(\d+)/links/subject_sets", path)
            if m and method == "POST":
                wid = m.group(1)
                links = self.workflow_links.setdefault(wid, [])
                for set_id in payload.get("subject_sets", []):
                    if str(set_id) not in links:
                        links.append(str(set_id))
                return _json(200, {"workflows": [{"id": wid, "links": {"subject_sets": links}}]}, etag=True)
        return _json(404, {"errors": [{"message": f"no route for {method} /api{path}"}]})

    def _upload(self, method: str, path: str, headers, body: bytes):
        token = path.rsplit("/", 1)[-1]
        with self._lock:
            slot = self._upload_slots.pop(token, None)
            if method != "PUT" or slot is None:
                return 403, {"Content-Type": "application/xml"}, b"<Error><Code>AuthenticationFailed</Code></Error>"
            subject_id, media_type = slot
            self.uploads.append({"subject_id": subject_id, "media_type": media_type,
                                 "content_type": headers.get("Content-Type"), "bytes": len(body),
                                 "sha256": hashlib.sha256(body).hexdigest(), "data": body,
                                 "blob_type": headers.get("x-ms-blob-type")})
        return 201, {"Content-Length": "0"}, b""

    # --- media (presigned downloads) --------------------------------------------------------------------------
    def _media(self, method: str, path: str, query: dict):
        signature = query.get("sig", "")
        expiry = self._signatures.get(signature)
        with self._lock:
            expired = self.faults.expired_urls > 0
            if expired:
                self.faults.expired_urls -= 1
        if expired or expiry is None or expiry < time.time():
            body = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code><Message>'
                    b'Signed expiry time has expired.</Message></Error>')
            return 403, {"Content-Type": "application/xml"}, body
        key = path.split("/")[2]
        if key == "talk":
            key = "talk-" + path.split("/")[3]
        blob = self._blobs.get(key)
        if blob is None:
            return 404, {"Content-Type": "application/xml"}, b"<Error><Code>BlobNotFound</Code></Error>"
        data, content_type, encoding = blob
        headers = {"Content-Type": content_type}            # text/csv with no charset, as Zooniverse serves it
        if self.faults.media_etags:
            headers["ETag"] = '"' + hashlib.md5(data).hexdigest() + '"'
        if encoding:
            headers["Content-Encoding"] = encoding
            with self._lock:
                truncate = self.faults.truncated_gzip > 0
                if truncate:
                    self.faults.truncated_gzip -= 1
            if truncate:
                data = data[: max(20, len(data) * 2 // 3)]
        return 200, headers, data

    # --- Talk ---------------------------------------------------------------------------------------------------
    def _talk(self, method: str, path: str, query: dict, body: bytes):
        if path != "/data_requests":
            return _json(404, {"error": f"no route for {path}"})
        if method == "POST":
            spec = json.loads(body or b"{}").get("data_requests", {})
            kind, section = spec.get("kind"), spec.get("section")
            if kind not in TALK_KINDS or section != f"project-{self.project_id}":
                return _json(422, {"error": "Validation failed: unknown section or kind"})
            with self._lock:
                if self.faults.regenerate_in_place and self.talk_requests[kind]:
                    record = self.talk_requests[kind][0]
                    record.update(state="pending", url=None, _polls_left=self.faults.talk_pending_polls,
                                  _in_place=True)
                    return _json(201, {"data_requests": [_public(record)]})
                recent = [r for r in self.talk_requests[kind] if r["_made"] > time.time() - 86400]
                if recent and self.faults.talk_refuse_repeat:
                    return _json(422, {"error": "Validation failed: a data request was already made today"})
                request_id = str(next(self._ids))
                record = {"id": request_id, "section": section, "kind": kind, "state": "pending", "url": None,
                          "user_id": self.user_id, "created_at": _iso(time.time()),
                          "updated_at": _iso(time.time()), "_made": time.time(),
                          "_polls_left": self.faults.talk_pending_polls}
                self.talk_requests[kind].insert(0, record)
            return _json(201, {"data_requests": [_public(record)]})
        kind, section = query.get("kind"), query.get("section")
        with self._lock:
            found = [r for r in self.talk_requests.get(kind, []) if r["section"] == section]
            for record in found:
                if record["state"] in ("pending", "started"):
                    if record["_polls_left"] > 0:
                        record["_polls_left"] -= 1
                        record["state"] = "started"
                    elif kind in self.faults.talk_failed:
                        record["state"] = "failed"
                    else:
                        self._talk_blob(kind, record["id"])
                        record["state"] = "finished"
                        if not record.get("_in_place"):
                            record["updated_at"] = _iso(time.time())
                if record["state"] == "finished":   # a fresh presigned URL on every look
                    record["url"] = self._presign(f"/media/talk/{record['id']}/project-{self.project_id}-{kind}.tar.gz")
            return _json(200, {"data_requests": [_public(r) for r in found]})

    def add_finished_talk_request(self, kind: str, age_hours: float = 48.0) -> None:
        """Pretend an older finished Talk data request exists (for fallback tests)."""
        with self._lock:
            request_id = str(next(self._ids))
            made = time.time() - age_hours * 3600
            record = {"id": request_id, "section": f"project-{self.project_id}", "kind": kind, "state": "finished",
                      "url": None, "user_id": self.user_id, "created_at": _iso(made), "updated_at": _iso(made),
                      "_made": made, "_polls_left": 0}
            self._talk_blob(kind, request_id)
            record["url"] = self._presign(f"/media/talk/{request_id}/project-{self.project_id}-{kind}.tar.gz")
            self.talk_requests[kind].append(record)

    def age_exports(self, hours: float) -> None:
        """Make the ready exports look ``hours`` old (so 'auto' asks for new ones)."""
        with self._lock:
            for kind in EXPORT_KINDS:
                for media in self.media[kind]:
                    media["created_at"] = media["updated_at"] = _iso(time.time() - hours * 3600)


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _json(status: int, payload, etag: bool = False):
    data = json.dumps(payload).encode("utf-8")
    headers = {"Content-Type": "application/vnd.api+json; version=1; charset=utf-8"}
    if etag:
        headers["ETag"] = '"' + hashlib.md5(data).hexdigest() + '"'
    return status, headers, data


def _paged(resource: str, items: list):
    return _json(200, {resource: items, "links": {}, "meta": {resource: {
        "page": 1, "page_size": 100, "count": len(items), "page_count": 1, "previous_page": None,
        "next_page": None, "first_href": f"/{resource}", "previous_href": None, "next_href": None,
        "last_href": f"/{resource}"}}}, etag=True)


def _make_handler(server: LoopbackZooniverse):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def send_head(self, status: int, headers: dict, data: bytes) -> None:
            """Status line and headers (Content-Length from ``data`` unless given); a subclass streams the body."""
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()

        def _serve(self, method: str):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                status, headers, data = server.handle(method, self.path, self.headers, body)
            except Exception as exc:  # noqa: BLE001 - a test server answers 500 and says why
                status, headers, data = _json(500, {"errors": [{"message": f"loopback bug: {exc!r}"}]})
            server.requests.append((method, urlsplit(self.path).path, status))
            self.send_head(status, headers, data)
            if method != "HEAD":
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def do_PUT(self):
            self._serve("PUT")

        def do_DELETE(self):
            self._serve("DELETE")

    return Handler


# ================================================================================================================
# pytest fixtures (import into conftest with: pytest_plugins = ["ww_assets_tests.support.loopback_zooniverse"])
# ================================================================================================================

@pytest.fixture
def loopback_exports(tmp_path) -> ExportTruth:
    """A small export folder (60 pages, Talk comments and tags) in the ZOONIVERSE.md format."""
    return write_export_folder(tmp_path / "served-exports", n_pages=60)


@pytest.fixture
def loopback_zooniverse(loopback_exports, monkeypatch):
    """A running loopback Zooniverse serving ``loopback_exports``; the environment points the real client at it.

    ``server.truth`` is the ExportTruth of what it serves; ``server.serve_exports(folder)`` swaps the exports.
    """
    server = LoopbackZooniverse(loopback_exports.folder)
    server.truth = loopback_exports
    server.start()
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PANOPTES_CLIENT_ID", raising=False)
    monkeypatch.delenv("PANOPTES_CLIENT_SECRET", raising=False)
    try:
        yield server
    finally:
        server.stop()
