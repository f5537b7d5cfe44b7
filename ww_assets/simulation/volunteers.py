"""Simulated Weird & Wonderful volunteers, written out as the real Zooniverse export files.

The W&W workflow is *grouped*: Panoptes packs 16 single-image subjects into a transient "group subject", the
volunteer clicks the images they find interesting (no definition given), and the classification links to the group
subject. So in the classifications export one row = one 16-image page, ``subject_ids`` is the group subject's id,
``subject_data`` is ``{"<group subject id>": {"retired": null, "#subject_group_id": n, "#group_subject_ids":
"id1-id2-...-id16"}}`` and ``annotations`` is ``[{"task": "T0", "value": [{"index": 6, "subject": "134853"},
...]}]`` (the Subject Group Comparison task: the cell index on the 4 x 4 grid and the constituent subject id, a
string, as the front end submits it; an empty list when nothing was clicked).

Behaviour (following the W&W task: no definition of "interesting" is given, so clicks are driven by how striking
an image is):

- Each volunteer has an *attentiveness* (Beta(5, 3)) that scales how often they click oddities, a *trigger* rate for
  ordinary galaxies (most click 0-5% of them; busier fields and larger galaxies get more clicks), and a Talk
  habit (most never comment; a few comment a lot). A few per cent are "click-happy" (click ~40% of everything).
- Click probability per label (before attentiveness): striking, common features high (merger 0.60, ring 0.65,
  lens 0.55), rarer subtle ones lower (compact_starforming 0.30, edge_on 0.22, irregular 0.35), artifacts mostly
  ignored (0.08-0.15), ordinary galaxies a small base rate (~0.03).
- Pages are made in rounds: every subject gets 15-25 exposures; each round shuffles the subjects still needing one
  and cuts them into pages of 16. Sessions (logged-in: ~5 pages, anonymous: ~2.5 pages) take the next page whose
  subjects the volunteer has not seen, so a volunteer never sees a subject twice, except:
- ~3% repeat submissions: the same volunteer re-submits the same page (same group subject, a new classification
  id, a few seconds to minutes later, clicks re-drawn half of the time).
- ~30% of classifications are anonymous: ``user_name`` ``not-logged-in-<hash of the IP>``, empty ``user_id``; a few
  anonymous visitors share an IP (a classroom) and so a name.
- Talk: logged-in volunteers comment on subjects (more on striking oddities, and on artifacts with #artifact),
  with hashtags, in the Notes board (one discussion per subject) or in themed discussions; a few comments have no
  subject focus. Tags: one row per distinct hashtag of a subject-focused comment.

All names, ids and IPs are fake (IPs from the documentation ranges 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24
and 2001:db8::/32).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from ww_assets.zooniverse.formats import CLASSIFICATION_COLUMNS, SUBJECT_COLUMNS, WORKFLOW_COLUMNS

PROJECT_ID = 17317
PROJECT_SLUG = "weird-and-wonderful"
WORKFLOW_ID = 20476
WORKFLOW_NAME = "Weird & Wonderful"
WORKFLOW_MAJOR = 160
WORKFLOW_MINORS = (310, 317)  # minor version bumped (question wording) 20 days after launch
LAUNCH = datetime(2022, 10, 4, 14, 0, 0, tzinfo=timezone.utc)
PAGE_SIZE = 16
FAVOURITES_SET_ID = 109999

CLICK_PROB = {
    "normal": 0.03,
    "merger": 0.60,
    "ring": 0.65,
    "lens": 0.55,
    "compact_starforming": 0.30,
    "edge_on": 0.22,
    "irregular": 0.35,
    "satellite_trail": 0.15,
    "star_spike": 0.12,
    "bad_column": 0.08,
    "edge_cut": 0.10,
}
TALK_WEIGHT = {
    "normal": 0.03,
    "merger": 1.0,
    "ring": 1.0,
    "lens": 1.2,
    "compact_starforming": 0.6,
    "edge_on": 0.4,
    "irregular": 0.5,
    "satellite_trail": 0.8,
    "star_spike": 0.7,
    "bad_column": 0.5,
    "edge_cut": 0.5,
}
HASHTAGS = {
    "normal": ["spiral", "elliptical", "pretty", "galaxy", "weird", "companion"],
    "merger": ["merger", "tidal", "interacting", "tidaltails", "shells", "weird"],
    "ring": ["ring", "ringgalaxy", "collisional", "weird"],
    "lens": ["lens", "gravitationallens", "arc", "lensing"],
    "compact_starforming": ["greenpea", "blue", "compact", "starforming", "weird"],
    "edge_on": ["edgeon", "dustlane", "disk"],
    "irregular": ["irregular", "clumpy", "weird"],
    "satellite_trail": ["artifact", "satellite", "trail"],
    "star_spike": ["artifact", "star", "diffractionspikes"],
    "bad_column": ["artifact", "badcolumn", "glitch"],
    "edge_cut": ["artifact", "edge", "glitch"],
}
FIRST_TAG = {  # the tag most people reach for first
    "normal": "weird", "merger": "merger", "ring": "ring", "lens": "lens", "compact_starforming": "greenpea",
    "edge_on": "edgeon", "irregular": "irregular", "satellite_trail": "artifact", "star_spike": "artifact",
    "bad_column": "artifact", "edge_cut": "artifact",
}
PHRASES = {
    "normal": ["Nice {x} galaxy.", "Pretty one, not sure it is weird.", "Is the small blob a companion?",
               "Looks ordinary but the colour is lovely."],
    "merger": ["Two galaxies colliding, look at the tails!", "Tidal features on both sides.",
               "Merger in progress?", "Shells around the bigger one, classic minor merger."],
    "ring": ["Beautiful ring!", "Is this a collisional ring galaxy?", "Ring with a red core.",
             "Polar ring or just a projection?"],
    "lens": ["Blue arc around a red elliptical, lens candidate!", "Possible strong lens.",
             "Look at the arc on the left side.", "Einstein ring? The arc is faint but there."],
    "compact_starforming": ["Very green and compact, a green pea?", "Tiny and very blue.",
                            "Strange colour for a galaxy."],
    "edge_on": ["Lovely edge-on disk with a dust lane.", "Flat as a pancake.", "Edge-on spiral."],
    "irregular": ["Clumpy and lopsided.", "Irregular galaxy with bright knots.", "What is going on here?"],
    "satellite_trail": ["Satellite trail across the image.", "A streak in one colour, satellite?",
                        "Trail crossing the field."],
    "star_spike": ["Bright star with spikes, artifact.", "Diffraction spikes from a nearby star.",
                   "Saturated star bleeding into the galaxy."],
    "bad_column": ["Bad column in the image.", "There is a coloured line, a detector glitch?",
                   "Hot pixels in a vertical line."],
    "edge_cut": ["The image is cut off, edge of the survey?", "Half of the image is black.",
                 "Missing data on one side."],
}
THEMED_DISCUSSIONS = [  # (board index, title, labels that go there)
    (1, "Mergers and interacting galaxies", ("merger", "irregular")),
    (1, "Ring galaxies!", ("ring",)),
    (1, "Lens candidates", ("lens",)),
    (1, "Green peas and blue compact dwarfs", ("compact_starforming",)),
    (2, "Image artifacts: satellites, spikes and glitches", ("satellite_trail", "star_spike", "bad_column",
                                                             "edge_cut")),
]
BOARDS = [
    (5101, "Notes", "General comment threads about individual subjects"),
    (5102, "Weird and wonderful finds", "Share your favourite weird objects"),
    (5103, "Help", "Questions about the project, the images and the site"),
]
HELP_QUESTIONS = [
    "What counts as interesting? The tutorial says anything goes.",
    "Is it OK to click nothing on a page?",
    "Why are some images half black?",
    "How were these galaxies chosen?",
    "Can I see the images in higher resolution?",
]

USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/106.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.0 "
    "Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:105.0) Gecko/20100101 Firefox/105.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:106.0) Gecko/20100101 Firefox/106.0",
    "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.0 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 12; SM-G991B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/106.0.0.0 Mobile "
    "Safari/537.36",
]
VIEWPORTS = [(1920, 969), (1536, 746), (1440, 789), (1366, 657), (2560, 1297), (1280, 648), (820, 1180),
             (412, 915)]
LANGUAGES = ["en", "en", "en", "en", "de", "fr", "es", "it", "nl"]
_FIRST = ["anna", "ben", "carlos", "dana", "elif", "femi", "greta", "hiro", "ines", "jamal", "kate", "lars",
          "mei", "nadia", "omar", "priya", "quinn", "rosa", "sam", "tomas", "uma", "vik", "wen", "yusuf", "zoe"]
_WORDS = ["star", "nebula", "cosmic", "galaxy", "quasar", "comet", "orbit", "nova", "pulsar", "lunar", "astro",
          "photon", "redshift", "hubble", "zenith", "aurora", "spiral", "eclipse", "meteor", "dusty"]
_NOUNS = ["gazer", "hunter", "watcher", "fan", "cat", "owl", "explorer", "nerd", "dreamer", "wanderer", "fox",
          "pilot", "seeker", "kid"]


def _ts(t: datetime) -> str:
    """Export timestamp: ``2015-09-10 10:01:58 UTC``."""
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(t: datetime) -> str:
    """Client / Talk timestamp: ``2022-11-13T10:15:32.123Z``."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Volunteer:
    key: str  # identity for the seen-set: user name
    user_name: str
    user_id: int | None
    ips: list[str]
    attentiveness: float
    trigger: float
    click_happy: bool
    talk_rate: float
    user_agent: str
    viewport: tuple[int, int]
    language: str
    utc_offset: int
    seen: set = field(default_factory=set)


def _username(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        style = int(rng.integers(0, 5))
        first = _FIRST[int(rng.integers(len(_FIRST)))]
        word = _WORDS[int(rng.integers(len(_WORDS)))]
        noun = _NOUNS[int(rng.integers(len(_NOUNS)))]
        num = int(rng.integers(1, 100))
        name = [
            f"{word}_{noun}",
            f"{first}{num}",
            f"{word.capitalize()}{noun.capitalize()}{num}",
            f"{first}.{word}",
            f"{first[0]}{_FIRST[int(rng.integers(len(_FIRST)))]}{num}",
        ][style]
        if name not in taken:
            taken.add(name)
            return name


def _fake_ip(rng: np.random.Generator) -> str:
    """A fake address from the documentation ranges: IPv4 TEST-NET-1/2/3 (762 hosts) or IPv6 2001:db8::/32."""
    if rng.random() < 0.6:
        net = ["192.0.2", "198.51.100", "203.0.113"][int(rng.integers(0, 3))]
        return f"{net}.{int(rng.integers(1, 255))}"
    a, b, c, d = (int(g) for g in rng.integers(0, 65536, size=4))
    return f"2001:db8:{a:x}:{b:x}::{c:x}:{d:x}"


class _Population:
    def __init__(self, rng: np.random.Generator, n_logged: int, seed: int):
        self.rng = rng
        self.seed = seed
        self.taken: set[str] = set()
        self.logged: list[Volunteer] = []
        ids = rng.choice(np.arange(1_200_000, 2_700_000), size=n_logged, replace=False)
        for uid in sorted(int(u) for u in ids):
            self.logged.append(self._make(_username(rng, self.taken), uid, [_fake_ip(rng)]))
        w = rng.pareto(1.1, size=n_logged) + 1.0
        self.raw_weights = list(w)
        self.weights = w / w.sum()
        self.anon_ips: list[str] = []
        self._anon_ip_set: set[str] = set()
        self.anon: dict[str, Volunteer] = {}

    def _make(self, name, uid, ips) -> Volunteer:
        rng = self.rng
        talker = rng.random() < 0.35 and uid is not None
        return Volunteer(
            key=name, user_name=name, user_id=uid, ips=ips,
            attentiveness=float(rng.beta(5, 3)),
            trigger=float(np.clip(rng.lognormal(0.0, 0.5), 0.1, 5.0)),
            click_happy=bool(rng.random() < 0.03),
            talk_rate=float(rng.lognormal(math.log(0.7), 0.6)) if talker else 0.004,
            user_agent=USER_AGENTS[int(rng.integers(len(USER_AGENTS)))],
            viewport=VIEWPORTS[int(rng.integers(len(VIEWPORTS)))],
            language=LANGUAGES[int(rng.integers(len(LANGUAGES)))],
            utc_offset=int(rng.choice([-60, 0, 0, 60, 120, 300, 240, -330, -480, 480])) * 60,
        )

    def add_logged(self) -> Volunteer:
        """A newly registered volunteer (when the regulars have seen everything on offer)."""
        rng = self.rng
        taken_ids = {v.user_id for v in self.logged}
        uid = int(rng.integers(2_700_000, 2_900_000))
        while uid in taken_ids:
            uid = int(rng.integers(2_700_000, 2_900_000))
        v = self._make(_username(rng, self.taken), uid, [_fake_ip(rng)])
        self.logged.append(v)
        self.raw_weights.append(float(rng.pareto(1.1) + 1.0))
        w = np.asarray(self.raw_weights)
        self.weights = w / w.sum()
        return v

    def pick_logged(self) -> Volunteer:
        return self.logged[int(self.rng.choice(len(self.logged), p=self.weights))]

    def new_anonymous(self) -> Volunteer:
        rng = self.rng
        if self.anon_ips and rng.random() < 0.05:  # a shared IP (classroom, library): the same anonymous name
            ip = self.anon_ips[int(rng.integers(len(self.anon_ips)))]
        else:
            ip = _fake_ip(rng)
            while ip in self._anon_ip_set:  # IPv6 half of the draws: never exhausted
                ip = _fake_ip(rng)
            self.anon_ips.append(ip)
            self._anon_ip_set.add(ip)
        name = "not-logged-in-" + hashlib.sha1(f"{self.seed}|{ip}".encode()).hexdigest()[:20]
        if name not in self.anon:
            self.anon[name] = self._make(name, None, [ip])
        return self.anon[name]


def _make_pages(rng: np.random.Generator, subject_ids: np.ndarray, exposures: tuple[int, int]) -> list[list[int]]:
    n = len(subject_ids)
    if n < PAGE_SIZE:
        raise ValueError(f"need at least {PAGE_SIZE} subjects to make a {PAGE_SIZE}-image page, got {n}")
    target = rng.integers(exposures[0], exposures[1] + 1, size=n)
    pages: list[list[int]] = []
    for r in range(int(target.max())):
        eligible = subject_ids[target > r]
        if len(eligible) == 0:
            break
        eligible = rng.permutation(eligible)
        for start in range(0, len(eligible), PAGE_SIZE):
            page = list(int(s) for s in eligible[start : start + PAGE_SIZE])
            if len(page) < PAGE_SIZE:  # pad the last page with other subjects
                pool = np.setdiff1d(subject_ids, np.asarray(page))
                page += [int(s) for s in rng.choice(pool, size=PAGE_SIZE - len(page), replace=False)]
            pages.append(page)
    order = rng.permutation(len(pages))
    return [pages[i] for i in order]


def _next_page(queue: list[list[int]], vol: Volunteer, look_ahead: int = 64) -> int | None:
    """Index of the first queued page with no subject the volunteer has seen (None: none within reach)."""
    for qi in range(min(look_ahead, len(queue))):
        if vol.seen.isdisjoint(queue[qi]):
            return qi
    return None


def _session_start(rng: np.random.Generator, days: float) -> datetime:
    if rng.random() < 0.5:  # launch burst
        d = min(rng.exponential(6.0), days)
    else:
        d = rng.uniform(0, days)
    # more people in the European / American evening
    hour_shift = rng.normal(0, 3.0)
    return LAUNCH + timedelta(days=float(d), hours=float(hour_shift))


def simulate_exports(subjects: list[dict], out_dir: Path, rng: np.random.Generator, *, seed: int,
                     exposures: tuple[int, int] = (15, 25), days: float = 150.0,
                     anonymous_session_fraction: float = 0.46, anonymous_target: float = 0.30,
                     repeat_fraction: float = 0.03) -> dict:
    """Simulate the volunteers on ``subjects`` and write the five export files into ``out_dir``.

    ``subjects``: dicts with subject_id, object_id, ra, dec, index, batch, label, interest, subject_set_id,
    also_in_favourites, created_at (datetime). Returns counts for the manifest.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    by_id = {s["subject_id"]: s for s in subjects}
    sids = np.array(sorted(by_id), dtype=np.int64)
    queue = _make_pages(rng, sids, exposures)
    n_pages = len(queue)
    pop = _Population(rng, max(20, n_pages // 8), seed)

    # ---- sessions ---------------------------------------------------------------------------------------------
    shown: list[dict] = []  # one per page shown (before repeats)
    n_anon_pages = 0
    while queue:
        # anonymous sessions are shorter; steer towards ~30% anonymous pages (logged-in volunteers who have seen
        # most of a small sample run out of pages, which would otherwise leave the rest to anonymous visitors)
        on_target = n_anon_pages <= anonymous_target * max(len(shown), 1)
        anon = rng.random() < (anonymous_session_fraction if on_target else 0.05)
        vol = pop.new_anonymous() if anon else pop.pick_logged()
        if not anon and _next_page(queue, vol) is None:
            vol = pop.add_logged()  # the regular has seen everything on offer: someone new signs up
        n_in_session = int(rng.geometric(1 / 2.5 if anon else 1 / 5.0))
        t = _session_start(rng, days)
        session = hashlib.sha256(f"{seed}|{vol.key}|{len(shown)}".encode()).hexdigest()
        for _ in range(n_in_session):
            pick = _next_page(queue, vol)
            if pick is None:
                break
            page = queue.pop(pick)
            vol.seen.update(page)
            duration = float(np.clip(rng.lognormal(math.log(45), 0.6), 6, 900))
            t = t + timedelta(seconds=duration + float(rng.exponential(5.0)))
            shown.append({"vol": vol, "page": page, "t": t, "duration": duration, "session": session})
            n_anon_pages += vol.user_id is None
            if not queue:
                break

    # ---- clicks -----------------------------------------------------------------------------------------------
    def clicks_for(vol: Volunteer, page: list[int]) -> list[tuple[int, int]]:
        out = []
        for idx, sid in enumerate(page):
            s = by_id[sid]
            if vol.click_happy:
                p = 0.4
            elif s["label"] == "normal":
                p = CLICK_PROB["normal"] * vol.trigger * s["interest"]
            else:
                p = CLICK_PROB[s["label"]] * (0.35 + vol.attentiveness)
            if rng.random() < min(p, 0.97):
                out.append((idx, sid))
        order = rng.permutation(len(out))
        return [out[i] for i in order]

    for row in shown:
        row["clicks"] = clicks_for(row["vol"], row["page"])

    # ---- repeat submissions -----------------------------------------------------------------------------------
    n_rep = int(round(repeat_fraction * len(shown)))
    rows = list(shown)
    for i in sorted(rng.choice(len(shown), size=n_rep, replace=False).tolist()) if n_rep else []:
        src = shown[i]
        rep = dict(src)
        rep["t"] = src["t"] + timedelta(seconds=float(rng.uniform(2, 900)))
        rep["repeat_of"] = i
        if rng.random() < 0.5:
            rep["clicks"] = clicks_for(src["vol"], src["page"])
        rows.append(rep)
    rows.sort(key=lambda r: (r["t"], r["vol"].key))

    # group subjects: one per page shown (a repeat re-submits the same group subject)
    group_ids = {}
    next_group = 84_100_000
    next_sg = 1_500
    for r in rows:
        key = id(r["page"])
        if key not in group_ids:
            next_group += int(rng.integers(1, 40))
            next_sg += 1
            group_ids[key] = (next_group, next_sg)
        r["group_subject_id"], r["subject_group_id"] = group_ids[key]

    # ---- classifications CSV ----------------------------------------------------------------------------------
    minor_switch = LAUNCH + timedelta(days=20)
    cid = 451_000_000
    n_anon = 0
    exposures_count = {int(s): 0 for s in sids}
    retire_at: dict[int, datetime] = {}
    last_seen: dict[int, datetime] = {}
    with (out_dir / "weird-and-wonderful-classifications.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(CLASSIFICATION_COLUMNS)
        for r in rows:
            cid += int(rng.integers(1, 300))
            r["classification_id"] = cid
            vol: Volunteer = r["vol"]
            t: datetime = r["t"]
            version = f"{WORKFLOW_MAJOR}.{WORKFLOW_MINORS[0] if t < minor_switch else WORKFLOW_MINORS[1]}"
            started = t - timedelta(seconds=r["duration"])
            metadata = {
                "source": "api",
                "session": r["session"],
                "viewport": {"width": vol.viewport[0], "height": vol.viewport[1]},
                "started_at": _iso(started),
                "user_agent": vol.user_agent,
                "utc_offset": str(vol.utc_offset),
                "finished_at": _iso(t - timedelta(milliseconds=int(rng.integers(200, 1500)))),
                "live_project": True,
                "interventions": {"opt_in": True, "messageShown": False},
                "user_language": vol.language,
                "subject_dimensions": [{"clientWidth": 180, "clientHeight": 180, "naturalWidth": 96,
                                        "naturalHeight": 96}] * PAGE_SIZE,
                "subject_selection_state": {
                    "retired": False, "selected_at": _iso(started - timedelta(seconds=1.5)),
                    "already_seen": "repeat_of" in r, "selection_state": "normal",
                    "finished_workflow": False, "user_has_finished_workflow": False,
                },
                "workflow_version": version,
            }
            annotations = [{"task": "T0", "value": [{"index": i, "subject": str(s)} for i, s in r["clicks"]]}]
            gsid = r["group_subject_id"]
            subject_data = {str(gsid): {"retired": None, "#subject_group_id": r["subject_group_id"],
                                        "#group_subject_ids": "-".join(str(s) for s in r["page"])}}
            if vol.user_id is None:
                n_anon += 1
            w.writerow([
                cid, vol.user_name, "" if vol.user_id is None else vol.user_id,
                vol.ips[0], WORKFLOW_ID, WORKFLOW_NAME, version, _ts(t), "", "",
                _dumps(metadata), _dumps(annotations), _dumps(subject_data), str(gsid),
            ])
            for s in r["page"]:
                exposures_count[s] += 1
                last_seen[s] = t
                if exposures_count[s] == 20 and s not in retire_at:
                    retire_at[s] = t

    # ---- subjects CSV -----------------------------------------------------------------------------------------
    n_subject_rows = 0
    with (out_dir / "weird-and-wonderful-subjects.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(SUBJECT_COLUMNS)
        for sid in sids.tolist():
            s = by_id[sid]
            meta = {"object_id": s["object_id"], "ra": round(s["ra"], 6), "dec": round(s["dec"], 6),
                    "#index": s["index"], "image": f"{s['object_id']}.png", "batch": s["batch"]}
            loc = {"0": f"https://panoptes-uploads.zooniverse.org/subject_location/{s['location_uuid']}.png"}
            sets = [s["subject_set_id"]] + ([FAVOURITES_SET_ID] if s["also_in_favourites"] else [])
            retired = retire_at.get(sid)
            updated = retired or last_seen.get(sid, s["created_at"])
            for set_id in sets:
                w.writerow([
                    sid, PROJECT_ID, WORKFLOW_ID, set_id, _dumps(meta), _dumps(loc), exposures_count[sid],
                    _ts(retired) if retired else "", "classification_count" if retired else "",
                    _ts(s["created_at"]), _ts(updated),
                ])
                n_subject_rows += 1

    # ---- workflows CSV ----------------------------------------------------------------------------------------
    questions = [
        "Click on any images you find interesting, weird or wonderful. There are no wrong answers!",
        "Click on any of the images that you think are interesting, weird or wonderful. You can click as many or "
        "as few as you like, including none.",
    ]
    with (out_dir / "weird-and-wonderful-workflows.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(WORKFLOW_COLUMNS)
        for minor, question in zip(WORKFLOW_MINORS, questions):
            help_text = ("Look at all 16 galaxies and click the ones that catch your eye. Press Done when "
                         "finished, or Done & Talk to discuss one of them.")
            tasks = {"T0": {"help": "T0.help", "type": "subjectGroupComparison", "details": [],
                            "question": "T0.question"}}
            strings = {"tasks.T0.help": help_text, "tasks.T0.question": question}
            retirement = {"criteria": "classification_count", "options": {"count": 20}}
            w.writerow([
                WORKFLOW_ID, WORKFLOW_NAME, WORKFLOW_MAJOR, "true", len(rows), "false", "true", "false", "en",
                "T0", "", len(retire_at), _dumps(tasks), _dumps(retirement), _dumps(strings), minor,
            ])

    # ---- Talk -------------------------------------------------------------------------------------------------
    comments, tags = _talk(rng, rows, by_id, pop)
    with (out_dir / f"project-{PROJECT_ID}-comments.json").open("w", encoding="utf-8") as fh:
        json.dump(comments, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    with (out_dir / f"project-{PROJECT_ID}-tags.json").open("w", encoding="utf-8") as fh:
        json.dump(tags, fh, indent=1, ensure_ascii=False)
        fh.write("\n")

    volunteers = {r["vol"].key for r in rows}
    return {
        "n_pages": n_pages,
        "n_classifications": len(rows),
        "n_repeat_submissions": n_rep,
        "n_anonymous_classifications": n_anon,
        "n_volunteers": len(volunteers),
        "n_logged_in_volunteers": len({r["vol"].key for r in rows if r["vol"].user_id is not None}),
        "n_subject_rows": n_subject_rows,
        "n_retired": len(retire_at),
        "n_comments": len(comments),
        "n_tags": len(tags),
        "project_id": PROJECT_ID,
        "workflow_id": WORKFLOW_ID,
    }


def _talk(rng: np.random.Generator, rows: list[dict], by_id: dict, pop: _Population):
    """Talk comments and tags from the classification rows (logged-in volunteers only)."""
    boards = BOARDS
    discussions: dict = {}  # key -> (discussion_id, board, title)
    next_disc = [310_000]
    comments: list[dict] = []
    tags: list[dict] = []
    next_comment = 2_400_000
    next_tag = 880_000
    logins = [v.user_name for v in pop.logged]

    def discussion(key, board, title):
        if key not in discussions:
            next_disc[0] += int(rng.integers(1, 25))
            discussions[key] = (next_disc[0], board, title)
        return discussions[key]

    events = []  # (time, vol, sid or None, label, clicked)
    for r in rows:
        vol: Volunteer = r["vol"]
        if vol.user_id is None or "repeat_of" in r:
            continue
        clicked = {s for _, s in r["clicks"]}
        for sid in r["page"]:
            label = by_id[sid]["label"]
            p = vol.talk_rate * TALK_WEIGHT[label] * (1.0 if sid in clicked else 0.25)
            if rng.random() < min(p, 0.9):
                events.append((r["t"] + timedelta(seconds=float(rng.uniform(10, 600))), vol, sid, label))
    # a few questions on the Help board
    for _ in range(max(1, len(events) // 40)):
        vol = pop.pick_logged()
        events.append((_session_start(rng, 150.0), vol, None, None))
    events.sort(key=lambda e: (e[0], e[1].key, -1 if e[2] is None else e[2]))

    for t, vol, sid, label in events:
        next_comment += int(rng.integers(1, 50))
        if sid is None:
            board = boards[2]
            q = HELP_QUESTIONS[int(rng.integers(len(HELP_QUESTIONS)))]
            disc_id, _, title = discussion(("help", q), board, q[:60])
            body = q
            focus_id, focus_type = None, None
        else:
            # most comments go to the subject's own Notes discussion, some to a themed discussion
            themed = [d for d in THEMED_DISCUSSIONS if label in d[2]]
            if themed and rng.random() < 0.25:
                bi, title, _ = themed[0]
                disc_id, board, title = discussion(("theme", title), boards[bi], title)
            else:
                board = boards[0]
                disc_id, _, title = discussion(("subject", sid), board, f"Subject {sid}")
            true_label = label
            if label != "normal" and rng.random() < 0.1:  # a wrong guess now and then
                true_label = ["merger", "ring", "lens", "irregular"][int(rng.integers(4))]
            phrases = PHRASES[true_label]
            text = phrases[int(rng.integers(len(phrases)))].format(
                x=["spiral", "elliptical", "disk"][int(rng.integers(3))])
            pool = HASHTAGS[true_label]
            n_tags = int(rng.choice([0, 1, 1, 2, 2, 3]))
            chosen: list[str] = []
            if n_tags:
                chosen.append(FIRST_TAG[true_label])
                for extra in rng.permutation(pool)[: n_tags - 1]:
                    if str(extra) not in chosen:
                        chosen.append(str(extra))
            body = text + ("" if not chosen else " " + " ".join("#" + c for c in chosen))
            if rng.random() < 0.08:
                other = logins[int(rng.integers(len(logins)))]
                if other != vol.user_name:
                    body = f"@{other} " + body
            if board[0] != 5101 and rng.random() < 0.5:
                body += f" ^S{sid}"
            focus_id, focus_type = sid, "Subject"
            for name in chosen:
                next_tag += int(rng.integers(1, 5))
                tags.append({
                    "id": next_tag, "name": name, "section": f"project-{PROJECT_ID}", "created_at": _iso(t),
                    "user_id": vol.user_id, "comment_id": next_comment, "taggable_id": sid,
                    "taggable_type": "Subject", "project_id": PROJECT_ID, "user_login": vol.user_name,
                })
        comments.append({
            "board_id": board[0], "board_title": board[1], "board_description": board[2],
            "discussion_id": disc_id, "discussion_title": title, "comment_id": next_comment,
            "comment_body": body, "comment_focus_id": focus_id, "comment_focus_type": focus_type,
            "comment_user_id": vol.user_id, "comment_user_login": vol.user_name, "comment_created_at": _iso(t),
        })
    return comments, tags


def location_uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))
