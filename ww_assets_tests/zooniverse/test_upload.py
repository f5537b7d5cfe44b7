"""Parallel subject uploads (``ww_assets.zooniverse.upload``, ``workers``) give exactly what one at a time gives:
the same subjects with the same metadata and images, linked to the set in the same order and the same batches;
a failure links what was created, so a re-run completes the set without creating anything twice. Through the
real panoptes-client against the loopback Zooniverse."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pandas as pd
import pytest

from ww_assets.analysis import next_round
from ww_assets.zooniverse import upload


def _manifest(folder, n: int = 12):
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"image_id": [str(70_000_000 + i) for i in range(n)], "batch": "b0",
                          "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-5, 5, n),
                          "predicted_interest": np.linspace(0.9, 0.1, n), "anomaly_score": rng.normal(size=n),
                          "anomaly_score_sigma": rng.normal(size=n), "has_subject": False})
    picks = next_round.rank_candidates(table, n, exploration=0.0)

    def image(batch, image_id):
        return np.random.default_rng(int(image_id) % 997).integers(0, 255, (3, 96, 96), dtype=np.uint8)

    return next_round.write_manifest(picks, image, folder, round_name="r")


def _set_contents(server, set_id: str) -> list[tuple[str, str, str]]:
    """(object_id, image sha256, metadata as text) of the set's subjects, in link order."""
    sha = {u["subject_id"]: u["sha256"] for u in server.uploads}
    out = []
    for sid in server.subject_sets[set_id]["links"]["subjects"]:
        meta = server.subjects[sid]["metadata"]
        out.append((meta["object_id"], sha[sid], repr(sorted(meta.items()))))
    return out


def _in_flight_counter(server, path: str = "/api/subjects"):
    """Wrap the server's request handler to record the most ``POST path`` requests it served at once."""
    lock, state = threading.Lock(), {"now": 0, "max": 0}
    original = server.handle

    def handle(method, raw_path, headers, body):
        watched = method == "POST" and raw_path.split("?")[0] == path
        if watched:
            with lock:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
        try:
            return original(method, raw_path, headers, body)
        finally:
            if watched:
                with lock:
                    state["now"] -= 1

    server.handle = handle
    return state


def _link_calls(server, set_id: str) -> list:
    return [p for m, p, _ in server.requests if m == "POST" and p.endswith(f"/subject_sets/{set_id}/links/subjects")]


def test_parallel_upload_gives_the_serial_result(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    manifest = _manifest(tmp_path / "round")
    order = [r.metadata["object_id"] for r in next_round.read_manifest(manifest)[1]]
    in_flight = _in_flight_counter(server)
    server.slow_next(100, 0.1, path=r"^/api/subjects$")          # every subject POST takes 0.1 s: overlap shows
    upload.connect_from_env()
    serial = upload.upload_manifest(manifest, project_id=server.project_id, subject_set_name="serial",
                                    link_batch=5, workers=1)
    assert in_flight["max"] == 1
    in_flight["max"] = 0
    parallel = upload.upload_manifest(manifest, project_id=server.project_id, subject_set_name="parallel",
                                      link_batch=5, workers=4)
    assert in_flight["max"] > 1                                  # it did run subjects side by side
    assert serial.created == parallel.created == 12
    a, b = _set_contents(server, serial.subject_set_id), _set_contents(server, parallel.subject_set_id)
    assert a == b                                                # same subjects, metadata, images, link order
    assert [x[0] for x in a] == order                            # ... which is the manifest's order
    # the same link batches (5, 5, 2), in order
    assert len(_link_calls(server, serial.subject_set_id)) == len(_link_calls(server, parallel.subject_set_id)) == 3
    assert [str(s) for s in parallel.subject_ids] == server.subject_sets[parallel.subject_set_id]["links"]["subjects"]
    assert len(server.subjects) == 24 and len(server.uploads) == 24   # nothing created twice
    png = manifest.parent / f"{order[0]}.png"
    assert a[0][1] == hashlib.sha256(png.read_bytes()).hexdigest()


def test_a_failure_links_what_was_made_and_a_rerun_completes_without_duplicates(loopback_zooniverse, tmp_path,
                                                                              monkeypatch):
    from ww_assets_tests.analysis.test_next_round import with_subject_set_listing

    server = with_subject_set_listing(loopback_zooniverse)
    manifest = _manifest(tmp_path / "round")
    order = [r.metadata["object_id"] for r in next_round.read_manifest(manifest)[1]]
    real = upload._create_subject
    bad = order[6]

    def flaky(client, project_id, row):
        if row.metadata["object_id"] == bad:
            raise ConnectionError("injected: the network went away")
        return real(client, project_id, row)

    monkeypatch.setattr(upload, "_create_subject", flaky)
    upload.connect_from_env()
    with pytest.raises(ConnectionError, match="injected"):
        upload.upload_manifest(manifest, project_id=server.project_id, subject_set_name="s", link_batch=4, workers=3)
    (set_id, record), = server.subject_sets.items()
    linked = [server.subjects[s]["metadata"]["object_id"] for s in record["links"]["subjects"]]
    assert order[:6] == linked[:6] and bad not in linked         # everything before the failure is in the set
    assert len(server.subjects) == len(linked)                   # and every subject created is linked (no orphan)
    monkeypatch.setattr(upload, "_create_subject", real)
    again = upload.upload_manifest(manifest, project_id=server.project_id, subject_set_name="s", workers=3)
    assert not again.subject_set_created and again.skipped_existing == len(linked)
    final = [server.subjects[s]["metadata"]["object_id"] for s in server.subject_sets[set_id]["links"]["subjects"]]
    assert sorted(final) == sorted(order) and len(server.subjects) == 12     # complete, nothing twice


def test_workers_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        upload.upload_manifest(tmp_path / "none.csv", project_id=1, subject_set_name="x", workers=0)
