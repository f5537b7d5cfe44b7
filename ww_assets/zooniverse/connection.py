"""Reaching Panoptes: the endpoint, the credentials (one order for every caller), and the live source's client.

Credentials come from the environment only, read through ``ww_assets.settings``, and are tried in one documented
order by :func:`panoptes_credentials`, for the live pull and the next-round upload alike:

1. ``PANOPTES_USERNAME`` and ``PANOPTES_PASSWORD`` (a project owner or collaborator);
2. else ``PANOPTES_CLIENT_ID`` and ``PANOPTES_CLIENT_SECRET`` (an OAuth application).

They go straight to panoptes-client and are never logged, printed or put in an error message. panoptes-client
also reads ``PANOPTES_*`` from the environment itself (its connection is per thread, and a client made in another
thread reads them again); that is expected, and why tests set ``PANOPTES_ENDPOINT`` rather than only passing it.

panoptes-client is imported lazily: importing it configures the root logger, which a module import should not do.
"""

from __future__ import annotations

import functools

from ww_assets import settings
from ww_assets.zooniverse.errors import CredentialsMissing
from ww_assets.zooniverse.retries import RetryingAdapter

__all__ = ["panoptes_endpoint", "panoptes_credentials", "credentials_kind", "retrying_client"]


def panoptes_endpoint(configured: str | None = None) -> str:
    """The Panoptes API root: ``configured`` when given, else ``PANOPTES_ENDPOINT`` (default www.zooniverse.org),
    checked (SettingError naming the variable and the value) and without a trailing slash."""
    if configured:
        return settings.check_value("PANOPTES_ENDPOINT", configured, where="the configured panoptes_endpoint")
    return settings.get("PANOPTES_ENDPOINT")


def panoptes_credentials(purpose: str = "reaching Zooniverse", environ=None) -> dict[str, str]:
    """The keyword arguments panoptes-client logs in with, in the order of this module's docstring.

    Raises CredentialsMissing naming the variables (never their values) when neither pair is set.
    """
    user, password = settings.get("PANOPTES_USERNAME", environ), settings.get("PANOPTES_PASSWORD", environ)
    if user and password:
        return {"username": user, "password": password}
    client_id, secret = settings.get("PANOPTES_CLIENT_ID", environ), settings.get("PANOPTES_CLIENT_SECRET", environ)
    if client_id and secret:
        return {"client_id": client_id, "client_secret": secret}
    raise CredentialsMissing(
        f"{purpose} needs credentials in the environment: PANOPTES_USERNAME and PANOPTES_PASSWORD "
        f"(a project owner or collaborator), or PANOPTES_CLIENT_ID and PANOPTES_CLIENT_SECRET")


def credentials_kind(credentials: dict) -> str:
    """What the credentials are, fit for a log line: "a user" or "an OAuth client"."""
    return "a user" if "username" in credentials else "an OAuth client"


@functools.cache
def _client_class():
    from panoptes_client import Panoptes

    class RetryingPanoptes(Panoptes):
        """panoptes-client's Panoptes with a :class:`RetryingAdapter` on its session."""

        def __init__(self, *args, adapter: RetryingAdapter, **kwargs):
            self._ww_adapter = adapter
            super().__init__(*args, **kwargs)

        def login(self, *args, **kwargs):
            # Panoptes.__init__ creates the session and logs in straight away: mount the adapter first.
            if self.session.get_adapter("https://") is not self._ww_adapter:
                self.session.mount("https://", self._ww_adapter)
                self.session.mount("http://", self._ww_adapter)
            return super().login(*args, **kwargs)

    return RetryingPanoptes


def retrying_client(endpoint: str, credentials: dict, *, http_timeout: float, attempts: int, backoff_s: float):
    """A logged-in ``Panoptes`` whose every request has ``http_timeout`` and ``retries.retry_policy``.

    It is not made the thread's client: use it as ``with client: ...`` around panoptes-client calls.
    """
    adapter = RetryingAdapter(timeout=http_timeout, attempts=attempts, backoff_s=backoff_s)
    return _client_class()(endpoint=endpoint, adapter=adapter, **credentials)
