"""Time-outs and retries of every HTTP call the live source makes (Panoptes, Talk, presigned downloads).

Two layers, one policy (urllib3's ``Retry``, built by :func:`retry_policy`):

* HTTP: the policy mounted on the requests session (:class:`RetryingAdapter`). Connection failures, time-outs
  before the answer, 429 and 5xx answers are retried with exponential backoff and random jitter, and a
  ``Retry-After`` the server sends is honoured. panoptes-client retries only some GETs, 5 s apart and without
  jitter; here every verb is retried, POSTs too, as the pull always did: a repeated export or Talk request is
  refused or coalesced by the server (one per resource per 24 h), and a login or token POST changes nothing.
  An answer still failing after the last try raises :class:`RetriesExhausted` (a TransientError), so the client
  never parses an error page. Every request gets a time-out; the client sets none.
* Above HTTP: :func:`call_with_retries` retries a whole call for what the HTTP layer cannot see: a body that breaks
  off or a gzip stream cut short after the answer began, an HTML page where JSON was due. It counts and backs off
  with the same policy, and says what was being done when it gives up.

No log line carries a URL's query (urllib3's retry lines are filtered): a presigned URL's query is its signature.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Callable, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from ww_assets.zooniverse.errors import TransientError, ZooniverseError

__all__ = ["RETRY_STATUSES", "MAX_WAIT_S", "RetriesExhausted", "RetryingAdapter", "retry_policy",
           "retrying_session", "call_with_retries"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Answers worth asking again: too many requests, and every server error.
RETRY_STATUSES = frozenset({429, *range(500, 600)})
#: The longest wait between two tries, whether from the backoff or from a server's Retry-After (seconds).
MAX_WAIT_S = 120


class _WithoutUrlQueries(logging.Filter):
    """Removes URL queries from urllib3's log lines: a presigned download URL's query is its signature, and
    urllib3 logs the URL of every retry (WARNING for a broken connection)."""

    _QUERY = re.compile(r"\?[^\s'\"),]*")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = self._QUERY.sub("?<query removed>", message), ()
        return True


_REDACT = _WithoutUrlQueries()


def _redact_urllib3_logs() -> None:
    for name in ("urllib3.connectionpool", "urllib3.util.retry"):
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)


class RetriesExhausted(TransientError):
    """A request still failed (5xx / 429 / no connection / time-out) after every try the policy allows."""

    def __init__(self, message: str, tries: int):
        super().__init__(message)
        self.tries = tries


def retry_policy(attempts: int, backoff_s: float) -> Retry:
    """``attempts`` tries in all. urllib3 sends the first retry at once; retry n >= 2 waits
    ``backoff_s * 2**(n-1)`` plus a random jitter of up to ``backoff_s``, or the server's Retry-After, at most
    :data:`MAX_WAIT_S`."""
    return Retry(
        total=attempts - 1, status_forcelist=RETRY_STATUSES, allowed_methods=None,
        backoff_factor=backoff_s, backoff_jitter=backoff_s, backoff_max=MAX_WAIT_S,
        respect_retry_after_header=True, retry_after_max=MAX_WAIT_S, raise_on_status=False)


class RetryingAdapter(HTTPAdapter):
    """An HTTP adapter with :func:`retry_policy`, a default time-out, and failures outlasting it raised."""

    def __init__(self, *, timeout: float, attempts: int, backoff_s: float):
        self.timeout = timeout
        self.attempts = attempts
        _redact_urllib3_logs()
        super().__init__(max_retries=retry_policy(attempts, backoff_s))

    def send(self, request, stream=False, timeout=None, **kwargs):
        where = f"{request.method} {urlsplit(request.url).path}"   # never the query: it may hold a signature
        try:
            response = super().send(request, stream=stream, timeout=self.timeout if timeout is None else timeout,
                                    **kwargs)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.RetryError) as exc:
            raise RetriesExhausted(f"{type(exc).__name__} from {where}", tries=self.attempts) from exc
        if response.status_code in RETRY_STATUSES:
            history = getattr(response.raw.retries, "history", ()) if response.raw is not None else ()
            response.close()
            raise RetriesExhausted(f"HTTP {response.status_code} from {where}", tries=len(history) + 1)
        return response


def retrying_session(*, timeout: float, attempts: int, backoff_s: float,
                     session: requests.Session | None = None) -> requests.Session:
    """``session`` (a new one by default) with a :class:`RetryingAdapter` for http and https."""
    session = session or requests.Session()
    adapter = RetryingAdapter(timeout=timeout, attempts=attempts, backoff_s=backoff_s)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _transient_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is worth another try of the whole call (None when it is not)."""
    if isinstance(exc, TransientError):
        return str(exc)
    if isinstance(exc, (requests.exceptions.Timeout, requests.exceptions.ConnectionError,
                        requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError,
                        requests.exceptions.JSONDecodeError)):     # the last: an HTML error page from a proxy
        return f"{type(exc).__name__}: {exc}"
    return None


def call_with_retries(what: str, fn: Callable[[], T], *, attempts: int, backoff_s: float,
                      sleep: Callable[[float], None] = time.sleep,
                      passthrough: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``fn``; on a transient failure back off and call it again, ``attempts`` times in all.

    Gives up with TransientError ``"<what>: still failing after N tries: ..."``, also when the HTTP layer below has
    already spent its tries. ``passthrough`` types and other ZooniverseErrors are re-raised untouched; any other
    exception is wrapped in a ZooniverseError saying what was being done.
    """
    policy = retry_policy(attempts, backoff_s)
    for tries in range(1, attempts + 1):
        try:
            return fn()
        except passthrough:
            raise
        except RetriesExhausted as exc:
            raise TransientError(f"{what}: still failing after {exc.tries} tries: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - classify, then re-raise with context
            reason = _transient_reason(exc)
            if reason is None:
                if isinstance(exc, ZooniverseError):
                    raise
                raise ZooniverseError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
            try:  # the policy counts the tries and draws the backoff, as it does for single requests
                policy = policy.increment(url=what, error=exc)
            except MaxRetryError:
                raise TransientError(f"{what}: still failing after {tries} tries: {reason}") from exc
            delay = policy.get_backoff_time()
            log.warning("%s: transient failure (%s); retry %d/%d in %.1f s", what, reason[:200], tries,
                        attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable: the policy allows attempts - 1 retries")
