"""Uploading the next volunteer round: a manifest's images as subjects of a subject set, with panoptes-client.

``upload_manifest`` finds or creates the subject set in the project, creates one subject per manifest row that
the set does not already hold (matched on ``object_id``, so re-running never duplicates and an interrupted
upload resumes), uploads each image to the presigned URL the API returns, and links the new subjects to the set
in batches. Which images, and the manifest itself, are the analysis's business (``ww_assets.analysis.next_round``:
``write_manifest``, and ``validate_manifest``, which this checks first).

Subjects are created ``workers`` at a time (a bounded thread pool; each worker creates one subject and uploads
its image, on the caller's panoptes-client connection) and linked to the set in manifest order, in the same
batches as one at a time (``workers=1``): the set, its subjects and the order of links do not depend on
``workers``. A failure stops new subjects from starting, links every subject already created (so a re-run skips
them instead of creating them twice) and re-raises. panoptes-client's own ``Subject.async_saves()`` is not used:
it drops a failed save's error unless each subject is polled, and links nothing in order.

Log in first with :func:`connect_from_env`: the credentials are those of ``ww_assets.zooniverse.connection``
(username/password first, then OAuth client id/secret, the same order as the live pull), never printed or logged.
Unlike the live pull, uploads use panoptes-client's own HTTP handling: retrying a subject's POST after a time-out
could create the subject twice.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ww_assets.analysis.next_round import read_manifest, validate_manifest
from ww_assets.zooniverse.connection import panoptes_credentials, panoptes_endpoint

__all__ = ["UploadResult", "connect_from_env", "upload_manifest"]


@dataclass
class UploadResult:
    subject_set_id: str
    subject_set_created: bool
    created: int
    skipped_existing: int
    subject_ids: list[str]


def connect_from_env(endpoint: str | None = None):
    """Log in as this thread's panoptes-client connection, with the credentials in the environment.

    ``endpoint`` defaults to ``PANOPTES_ENDPOINT`` (else www.zooniverse.org). Raises CredentialsMissing (a
    RuntimeError) naming the variables when neither credential pair is set.
    """
    from panoptes_client import Panoptes

    credentials = panoptes_credentials("uploading subjects")
    return Panoptes.connect(endpoint=panoptes_endpoint(endpoint), **credentials)


def _find_or_create_set(project_id: int, name: str):
    from panoptes_client import SubjectSet

    for s in SubjectSet.where(project_id=project_id, display_name=name):
        project = str((s.raw.get("links") or {}).get("project", project_id))
        if str(s.display_name) == name and project == str(project_id):
            return s, False
    s = SubjectSet()
    s.links.project = project_id
    s.display_name = name
    s.save()
    return s, True


def _ids_in_set(subject_set, id_column: str) -> set[str]:
    from panoptes_client import Subject

    existing = set()
    for s in Subject.where(subject_set_id=subject_set.id):
        key = (s.metadata or {}).get(id_column)
        if key is not None:
            existing.add(str(key))
    return existing


#: subjects created at once by default (panoptes-client's own async_saves uses 5 threads)
DEFAULT_WORKERS = 5


def _create_subject(client, project_id: int, row):
    """One subject with its metadata and image(s), created and uploaded on ``client`` (in a worker thread)."""
    from panoptes_client import Subject

    with client:                                   # panoptes-client's connection is per thread
        subject = Subject()
        subject.links.project = project_id
        for f in row.files:
            subject.add_location(str(f))
        subject.metadata.update(row.metadata)
        subject.save()
    return subject


def upload_manifest(
    manifest: str | Path,
    *,
    project_id: int,
    subject_set_name: str,
    id_column: str = "object_id",
    link_batch: int = 50,
    workers: int = DEFAULT_WORKERS,
    log: Callable[[str], None] | None = None,
) -> UploadResult:
    """Upload a validated manifest as subjects of ``subject_set_name`` in ``project_id`` (connect first).

    ``workers`` subjects are created at a time (1: one after the other); links go in manifest order either way.
    Safe to re-run: subjects whose ``id_column`` the set already holds are skipped, so an interrupted upload
    resumes where it stopped.
    """
    from panoptes_client import Panoptes

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    log = log or (lambda msg: None)
    problems = validate_manifest(manifest, id_column=id_column)
    if problems:
        raise ValueError(f"manifest {manifest} is not valid: " + "; ".join(problems[:10]))
    _, rows = read_manifest(manifest)
    subject_set, created_set = _find_or_create_set(project_id, subject_set_name)
    existing = set() if created_set else _ids_in_set(subject_set, id_column)
    log(f"subject set {subject_set.id} ({'new' if created_set else 'existing'}; {len(existing)} subjects already)")
    todo = [r for r in rows if r.metadata.get(id_column) not in existing]
    new_ids: list[str] = []
    pending: list = []

    def link():
        if pending:
            subject_set.add(pending)
            new_ids.extend(str(s.id) for s in pending)
            pending.clear()

    client = Panoptes.client()
    pool = ThreadPoolExecutor(max_workers=min(workers, max(1, len(todo))), thread_name_prefix="subject-upload")
    futures = [pool.submit(_create_subject, client, project_id, r) for r in todo]
    try:
        for i, future in enumerate(futures, start=1):
            pending.append(future.result())
            if len(pending) >= link_batch:
                link()
                log(f"uploaded {i}/{len(todo)} subjects")
        link()
    except BaseException:
        for f in futures:
            f.cancel()
        pool.shutdown(wait=True)
        # link what was created (in manifest order), so a re-run skips it instead of creating it twice
        pending.extend(f.result() for f in futures[len(new_ids) + len(pending):]
                       if f.done() and not f.cancelled() and f.exception() is None)
        link()
        raise
    finally:
        pool.shutdown(wait=True)
    log(f"uploaded {len(new_ids)} subjects, skipped {len(rows) - len(todo)} already in the set")
    return UploadResult(subject_set_id=str(subject_set.id), subject_set_created=created_set, created=len(new_ids),
                        skipped_existing=len(rows) - len(todo), subject_ids=new_ids)
