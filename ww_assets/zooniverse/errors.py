"""Errors raised by the Zooniverse side of the pipeline.

Every message names what failed and where (file, export kind, endpoint path) and never carries a credential, a
volunteer name or an IP address.
"""

from __future__ import annotations

__all__ = ["ZooniverseError", "PseudonymKeyMissing", "CredentialsMissing", "ExportFileError", "ExportNotReady",
           "ExportFailed", "DownloadError", "TransientError"]


class ZooniverseError(RuntimeError):
    """Base class: something about pulling or reading Zooniverse data went wrong."""


class PseudonymKeyMissing(ZooniverseError):
    """A live pull or a hand-downloaded export folder was read without ``WW_PSEUDONYM_KEY`` set."""


class CredentialsMissing(ZooniverseError):
    """A live pull was asked for without Panoptes credentials in the environment."""


class ExportFileError(ZooniverseError):
    """An export file is missing, unreadable, or lacks a column the ingest cannot do without."""


class ExportNotReady(ZooniverseError):
    """An export (or Talk data request) did not become ready in time and nothing older could be used instead."""


class ExportFailed(ZooniverseError):
    """The server reported that generating an export or Talk data request failed."""


class DownloadError(ZooniverseError):
    """A presigned download could not be completed and checked (after retries)."""


class TransientError(ZooniverseError):
    """A failure worth retrying: 5xx, a time-out, a dropped connection, a truncated body."""
