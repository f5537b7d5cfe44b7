"""Keyed pseudonyms for volunteers, and masking of @mentions in Talk text.

``volunteer_id`` = ``"v_"`` + the first 16 hex digits of SHA-256 over ``key + "|" + identity`` where identity is
``u:<user_id>`` for a logged-in volunteer (the same id in classifications, Talk comments and Talk tags, so one person
links across them) and ``a:<user_name>`` for an anonymous one (Panoptes names them ``not-logged-in-<hash>``, stable
per browser session). The key (``WW_PSEUDONYM_KEY``) keeps anyone without it from recomputing pseudonyms from
public user ids; without the key the pseudonyms cannot be linked back to a person.

The ingest computes the pseudonym inside DuckDB (:func:`sql_volunteer_id`) so no volunteer name ever leaves the
CSV reader; :func:`volunteer_pseudonym` is the Python twin and gives byte-identical output (a test checks it).
"""

from __future__ import annotations

import hashlib
import re
from typing import Mapping

from ww_assets import settings
from ww_assets.zooniverse.errors import PseudonymKeyMissing

__all__ = ["ENV_KEY", "SAMPLE_PSEUDONYM_KEY", "PSEUDONYM_HEX_DIGITS", "MENTION_MASK", "MENTION_SQL_PATTERN",
           "pseudonym_key", "volunteer_identity", "volunteer_pseudonym", "pseudonymise", "sql_identity",
           "sql_volunteer_id", "mask_mentions", "sql_mask_mentions"]

ENV_KEY = "WW_PSEUDONYM_KEY"

#: The fixed key used for the embedded (simulated) sample only, so its pseudonyms are reproducible. It protects
#: nobody, which is fine: the sample's volunteers are simulated. Real data must use a secret WW_PSEUDONYM_KEY.
SAMPLE_PSEUDONYM_KEY = "ww-embedded-sample-not-secret"

PSEUDONYM_HEX_DIGITS = 16

#: What an @mention in Talk text is replaced with.
MENTION_MASK = "@[volunteer]"
# Zooniverse logins are letters, digits, '_', '-' and '.'; an @ preceded by a word character is an e-mail
# address, also masked (the local part stays: it is text before the @, masked below as well).
_MENTION_RE = re.compile(r"@[A-Za-z0-9_.\-]+")
MENTION_SQL_PATTERN = r"@[A-Za-z0-9_.\-]+"


def pseudonym_key(source: str, env: Mapping[str, str] | None = None) -> str:
    """The key for a source: ``WW_PSEUDONYM_KEY`` when set; the documented sample key for ``source == "sample"``.

    ``env`` stands for the environment (``ww_assets.settings`` reads ``os.environ`` when it is None). A live pull
    or a hand-downloaded export folder without the key is refused: real volunteers' ids would otherwise be
    pseudonymised with a key anyone can read in this file.
    """
    key = settings.get(ENV_KEY, env)
    if key:
        return key
    if source == "sample":
        return SAMPLE_PSEUDONYM_KEY
    raise PseudonymKeyMissing(
        f"{ENV_KEY} is not set. Reading real Zooniverse data (source '{source}') replaces volunteer names and "
        f"IPs by keyed pseudonyms, and the key must be a secret of yours: set {ENV_KEY} to a long random string "
        f"(e.g. `export {ENV_KEY}=$(python -c 'import secrets; print(secrets.token_hex(32))')`) and keep it "
        f"the same between pulls so a volunteer keeps one pseudonym."
    )


def volunteer_identity(user_id: object, user_name: object) -> str | None:
    """``u:<id>`` for a logged-in volunteer, ``a:<name>`` for an anonymous one, None when neither is usable.

    An id must be a plain integer (``"1234"``; not ``"1234.0"``, ``"0012"`` or ``"12ab"``): the same rule the SQL
    ingest applies, where other ids send the row to quarantine. Surrounding spaces are ignored, as SQL ``trim``.
    """
    uid = "" if user_id is None else str(user_id).strip(" ")
    if uid:
        if re.fullmatch(r"-?[0-9]+", uid) and str(int(uid)) == uid:
            return f"u:{uid}"
        return None
    name = "" if user_name is None else str(user_name).strip(" ")
    return f"a:{name}" if name else None


def volunteer_pseudonym(key: str, identity: str) -> str:
    """``v_`` + 16 hex of SHA-256(key | identity): the Python twin of :func:`sql_volunteer_id`."""
    digest = hashlib.sha256(f"{key}|{identity}".encode("utf-8")).hexdigest()
    return "v_" + digest[:PSEUDONYM_HEX_DIGITS]


def pseudonymise(key: str, user_id: object, user_name: object = None) -> str | None:
    """The volunteer_id of a (user_id, user_name) pair, None when the volunteer cannot be identified."""
    identity = volunteer_identity(user_id, user_name)
    return None if identity is None else volunteer_pseudonym(key, identity)


def sql_identity(user_id_sql: str, user_name_sql: str | None = None) -> str:
    """SQL for the identity string; arguments are SQL expressions over VARCHAR columns (user_id may be empty)."""
    uid = f"try_cast(nullif(trim({user_id_sql}), '') AS BIGINT)"
    if user_name_sql is None:
        return f"('u:' || {uid}::VARCHAR)"
    return (f"CASE WHEN nullif(trim({user_id_sql}), '') IS NOT NULL THEN 'u:' || {uid}::VARCHAR "
            f"ELSE 'a:' || nullif(trim({user_name_sql}), '') END")


def sql_volunteer_id(key_param: str, identity_sql: str) -> str:
    """SQL for the pseudonym of ``identity_sql`` with the key bound as parameter ``key_param`` (e.g. ``$key``).

    The key is always a bound parameter, never spliced into SQL text (which DuckDB may echo in errors or plans).
    """
    return f"('v_' || left(sha256({key_param} || '|' || {identity_sql}), {PSEUDONYM_HEX_DIGITS}))"


def mask_mentions(text: str | None) -> str | None:
    """Replace every @login (and the domain of an e-mail address) in Talk text with ``@[volunteer]``."""
    if text is None:
        return None
    return _MENTION_RE.sub(MENTION_MASK, text)


def sql_mask_mentions(text_sql: str) -> str:
    """SQL twin of :func:`mask_mentions`."""
    return f"regexp_replace({text_sql}, '{MENTION_SQL_PATTERN}', '{MENTION_MASK}', 'g')"
