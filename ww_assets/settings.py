"""Every environment variable the pipeline reads: its name, default, meaning and check, in one place.

Nothing else in the package reads ``os.environ`` for the pipeline's own settings (panoptes-client reads its
``PANOPTES_*`` variables itself, as documented). A value is read and checked when it is used, not when the
package is imported, so a bad ``WW_SAMPLE_SEED`` stops only what needs the sample, never the code location's
loading; the error names the variable and the value::

    SettingError: WW_SAMPLE_SEED='abc': expected a whole number (the embedded sample's seed)

The Dagster layer passes these to resources as ``dg.EnvVar`` (``ww_assets.defs.resources``), so the UI shows which
environment variable each resource setting comes from. ``python -m ww_assets.settings`` prints every setting with
its current value (secrets masked).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["Setting", "SettingError", "SETTINGS", "get", "raw", "is_set", "describe", "check_value"]


class SettingError(ValueError):
    """An environment variable (or the config value standing for it) holds a value the pipeline cannot use."""


@dataclass(frozen=True)
class Setting:
    """One environment variable: ``parse(text)`` returns the value or raises ValueError saying what it expects."""

    name: str
    default: str | None
    meaning: str
    parse: Callable[[str], Any] = str
    secret: bool = False


# ------------------------------------------------------------------------------------------------------------------
# parsers: each raises ValueError("expected ...") and never sees the variable's name (check_value adds it)
# ------------------------------------------------------------------------------------------------------------------
def whole_number(text: str, minimum: int | None = None) -> int:
    t = text.strip()
    if not re.fullmatch(r"[+-]?\d+", t):
        raise ValueError("expected a whole number")
    value = int(t)
    if minimum is not None and value < minimum:
        raise ValueError(f"expected a whole number >= {minimum}")
    return value


def positive_whole_number(text: str) -> int:
    return whole_number(text, minimum=1)


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        t = text.strip().lower()
        if t not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return t
    return parse


def flag(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("", "0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/true/yes/on or 0/false/no/off")


def sample_size(text: str) -> str | int:
    from ww_assets.simulation.sizes import SAMPLE_SIZES

    t = text.strip()
    if t.isdigit():
        if int(t) < 16:
            raise ValueError("expected a number of images >= 16")
        return int(t)
    if t not in SAMPLE_SIZES:
        raise ValueError(f"expected one of {', '.join(SAMPLE_SIZES)} or a number of images")
    return t


def memory_size(text: str) -> str:
    t = text.strip()
    if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", t, re.IGNORECASE):
        raise ValueError("expected a size DuckDB understands, e.g. 4GB or 512MB")
    return t


def project_ref(text: str) -> str:
    """A Zooniverse project: its numeric id, or its slug ``owner/name``."""
    t = text.strip()
    if re.fullmatch(r"\d+", t) and int(t) > 0:
        return t
    if re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*", t):
        return t
    raise ValueError("expected a project id (digits, e.g. 12345) or a slug 'owner/project-name'")


def keep_count(text: str) -> int | None:
    """How many downloads of each kind to keep: a whole number >= 0, or "all" (None: keep every one)."""
    t = text.strip().lower()
    if t == "all":
        return None
    if not re.fullmatch(r"\d+", t):
        raise ValueError("expected a whole number >= 0 or 'all'")
    return int(t)


def http_url(text: str) -> str:
    t = text.strip()
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", t):
        raise ValueError("expected an http(s) URL, e.g. https://www.zooniverse.org")
    return t.rstrip("/")


def existing_folder(text: str) -> Path:
    path = Path(text.strip()).expanduser()
    if not path.is_dir():
        raise ValueError("expected an existing folder (no such folder)")
    return path.resolve()


def existing_file(text: str) -> Path:
    path = Path(text.strip()).expanduser()
    if not path.is_file():
        raise ValueError("expected an existing file (no such file)")
    return path.resolve()


def images_source(text: str) -> str | Path:
    if text.strip().lower() in ("", "sample"):
        return "sample"
    return existing_folder(text)


def checkpoint(text: str) -> str | Path:
    t = text.strip()
    if t.lower() in ("auto", "none", "train", ""):
        return t.lower() or "auto"
    path = Path(t).expanduser()
    if not path.exists():
        raise ValueError("expected auto, none, or a checkpoint folder / file that exists")
    return path.resolve()


def cron(text: str) -> str:
    from dagster._utils.schedules import is_valid_cron_string

    t = text.strip()
    if not is_valid_cron_string(t):
        raise ValueError("expected a cron expression, e.g. '0 */6 * * *'")
    return t


def workflow_version(text: str) -> str:
    t = text.strip()
    if not re.fullmatch(r"\d+(\.\d+)?", t):
        raise ValueError("expected a workflow version 'major' or 'major.minor' as in the export, e.g. 160.317")
    return t


def nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a non-empty value")
    return text


# ------------------------------------------------------------------------------------------------------------------
# the settings
# ------------------------------------------------------------------------------------------------------------------
SETTINGS: dict[str, Setting] = {s.name: s for s in (
    # storage and the embedded sample
    Setting("WW_DATA_ROOT", "data", "the storage root every asset writes under", nonempty),
    Setting("WW_SAMPLE_SIZE", "small", "size of the embedded sample: tiny, small, medium, large or a number",
            sample_size),
    Setting("WW_SAMPLE_SEED", "20211", "the embedded sample's seed", whole_number),
    # the DuckDB warehouse
    Setting("WW_DUCKDB_MEMORY_LIMIT", None, "DuckDB memory limit of the warehouse (DuckDB's default: 80% of RAM)",
            memory_size),
    Setting("WW_DUCKDB_THREADS", None, "DuckDB threads of the warehouse (default: every core)",
            positive_whole_number),
    # Zooniverse
    Setting("WW_ZOONIVERSE_SOURCE", None, "sample, export_folder or live (default: live when a project is set, "
            "export_folder when a folder is set, else sample)", one_of("sample", "export_folder", "live")),
    Setting("WW_ZOONIVERSE_PROJECT", None, "the live project: id or owner/slug", project_ref),
    Setting("WW_ZOONIVERSE_EXPORT_FOLDER", None, "a folder of hand-downloaded exports", existing_folder),
    Setting("WW_ZOONIVERSE_TALK_ENDPOINT", None, "Talk API root (default https://talk.zooniverse.org/)", http_url),
    Setting("WW_ZOONIVERSE_PULL_CRON", "0 */6 * * *", "when the zooniverse_pull schedule re-pulls", cron),
    Setting("WW_ZOONIVERSE_TASK", "T0", "the workflow task whose answers are the clicks (the annotation read at "
            "ingest)", nonempty),
    Setting("WW_CONSENSUS_WORKFLOW_ID", None, "count only this workflow's classifications in the consensus "
            "(default: every workflow)", positive_whole_number),
    Setting("WW_CONSENSUS_MIN_WORKFLOW_VERSION", None, "count only classifications made with this workflow version "
            "or later, 'major' or 'major.minor' (default: every version)", workflow_version),
    Setting("WW_DOWNLOADS_KEEP", "2", "live pulls: downloads kept per export kind after a successful ingest, newest "
            "first (0: only the file just ingested; all: never delete); never one not yet ingested", keep_count),
    Setting("WW_CONSENSUS_GOLD_STANDARD", "include", "classifications flagged gold_standard in the export: include, "
            "exclude, or only them", one_of("include", "exclude", "only")),
    Setting("WW_CONSENSUS_EXPERT", "include", "classifications flagged expert in the export: include, exclude, or "
            "only them", one_of("include", "exclude", "only")),
    Setting("WW_PSEUDONYM_KEY", None, "secret key of the volunteer pseudonyms (required for real data)",
            nonempty, secret=True),
    Setting("PANOPTES_ENDPOINT", "https://www.zooniverse.org", "Panoptes API root", http_url),
    Setting("PANOPTES_USERNAME", None, "Zooniverse login (with PANOPTES_PASSWORD)", nonempty, secret=True),
    Setting("PANOPTES_PASSWORD", None, "Zooniverse password", nonempty, secret=True),
    Setting("PANOPTES_CLIENT_ID", None, "OAuth application id (with PANOPTES_CLIENT_SECRET)", nonempty, secret=True),
    Setting("PANOPTES_CLIENT_SECRET", None, "OAuth application secret", nonempty, secret=True),
    # images, model, release
    Setting("WW_IMAGES_SOURCE", "sample", "sample, or a folder whose sub-folders are image batches", images_source),
    Setting("WW_RELEASE_DIR", None, "a folder of the published W&W release (score CSVs + latent npy)",
            existing_folder),
    Setting("WW_WGAN_CHECKPOINT", "auto", "auto, none (train here), or a checkpoint folder to load", checkpoint),
    Setting("WW_WGAN_PRESET", "auto", "model preset when training: auto, reference, cpu, ci",
            one_of("auto", "reference", "cpu", "ci")),
    # running it
    Setting("WW_EXECUTOR", "multiprocess", "multiprocess, k8s or celery", one_of("multiprocess", "k8s", "celery")),
    Setting("WW_EXECUTOR_CONFIG", None, "YAML file with the k8s / celery executor settings", existing_file),
    Setting("WW_INGEST_PROFILE", "0", "print the time of each classifications-ingest step (benchmarks)", flag),
)}


def _setting(name: str) -> Setting:
    try:
        return SETTINGS[name]
    except KeyError:
        raise KeyError(f"{name} is not a setting of this pipeline (see ww_assets.settings.SETTINGS)") from None


def raw(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable's text as set (None when unset or empty), unchecked."""
    _setting(name)
    value = (os.environ if environ is None else environ).get(name)
    return value if value not in (None, "") else None


def is_set(name: str, environ: Mapping[str, str] | None = None) -> bool:
    return raw(name, environ) is not None


def check_value(name: str, text: Any, where: str | None = None) -> Any:
    """Parse ``text`` as the setting ``name`` would be; SettingError naming the variable and the value when bad.

    ``where`` names the config field that carried the value when it did not come from the environment
    (e.g. "resource 'sample', field seed").
    """
    setting = _setting(name)
    if not isinstance(text, str):
        text = str(text)
    try:
        return setting.parse(text)
    except ValueError as exc:
        shown = "<secret>" if setting.secret else repr(text)
        origin = f" ({where})" if where else ""
        raise SettingError(f"{name}={shown}{origin}: {exc} ({setting.meaning})") from None


def get(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The checked value of the variable, or of its default (None when it has none and is unset)."""
    text = raw(name, environ)
    if text is None:
        default = _setting(name).default
        return None if default is None else check_value(name, default)
    return check_value(name, text)


def describe(environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(name, value as set or '(default ...)', meaning) for every setting; secrets masked."""
    rows = []
    for s in SETTINGS.values():
        text = raw(s.name, environ)
        shown = ("<set>" if s.secret else text) if text is not None else f"(default {s.default})" if s.default \
            else "(unset)"
        rows.append((s.name, shown, s.meaning))
    return rows


def main() -> int:
    width = max(len(n) for n in SETTINGS)
    for name, shown, meaning in describe():
        print(f"{name:<{width}}  {shown:<28}  {meaning}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
