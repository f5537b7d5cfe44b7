"""The next volunteer round: ranking with exploration, the uploader's manifest, and the upload path
(``ww_assets.zooniverse.upload``) through the real panoptes-client against the loopback Zooniverse."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from ww_assets.analysis import next_round
from ww_assets.zooniverse import upload


def candidates(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame({
        "image_id": [str(40_000_000 + i) for i in range(n)],
        "batch": "b0",
        "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-5, 5, n),
        "predicted_interest": np.linspace(0.9, 0.01, n),
        "anomaly_score": rng.normal(size=n), "anomaly_score_sigma": rng.normal(size=n),
        "has_subject": np.arange(n) % 4 == 0,  # every fourth image is already a subject
    })


def fake_image(batch: str, image_id: str) -> np.ndarray:
    rng = np.random.default_rng(int(image_id) % 1000)
    return rng.integers(0, 255, size=(3, 96, 96), dtype=np.uint8)


def test_ranking_exploits_then_explores_only_unseen():
    t = candidates()
    picks = next_round.rank_candidates(t, 20, exploration=0.25, seed=1)
    assert len(picks) == 20 and list(picks["rank"]) == list(range(1, 21))
    assert not picks["has_subject"].any()
    exploit = picks[picks["selection"] == "exploit"]
    assert len(exploit) == 15
    unseen = t[~t["has_subject"]].sort_values("predicted_interest", ascending=False)
    assert list(exploit["image_id"]) == list(unseen["image_id"].head(15))
    assert (picks[picks["selection"] == "explore"]["predicted_interest"] < exploit["predicted_interest"].min()).all()
    pd.testing.assert_frame_equal(picks, next_round.rank_candidates(t, 20, exploration=0.25, seed=1))
    # Without an interest model the anomaly score ranks.
    fallback = next_round.rank_candidates(t.assign(predicted_interest=np.nan), 5, exploration=0.0)
    assert (fallback["ranking_basis"] == "anomaly_score").all()


def test_manifest_validates_against_the_uploader_rules(tmp_path):
    picks = next_round.rank_candidates(candidates(), 12, exploration=0.25, seed=1)
    manifest = next_round.write_manifest(picks, fake_image, tmp_path / "round", round_name="r1", image_scale=2)
    assert next_round.validate_manifest(manifest) == []
    headers, rows = next_round.read_manifest(manifest)
    assert headers == list(next_round.manifest_columns()) and headers[0] == "image"
    assert len(rows) == 12 and all(len(r.files) == 1 for r in rows)
    # Machine opinions are hidden from volunteers ('#'), the W&W identity is visible.
    assert {"object_id", "ra", "dec"} <= set(headers)
    assert all(h.startswith("#") for h in headers if "interest" in h or "anomaly" in h or h == "#selection")
    from PIL import Image

    with Image.open(rows[0].files[0]) as im:
        assert im.size == (192, 192) and im.mode == "RGB"
    # North up: the PNG's top row is the cutout's last (FITS) row.
    img = fake_image("b0", rows[0].metadata["object_id"]).transpose(1, 2, 0)
    with Image.open(rows[0].files[0]) as im:
        np.testing.assert_array_equal(np.asarray(im)[0, ::2], img[-1])
    # Re-writing replaces the folder whole (no stale images from a previous round).
    fewer = next_round.write_manifest(picks.head(3), fake_image, tmp_path / "round", round_name="r2")
    assert len(list(fewer.parent.glob("*.png"))) == 3


def test_manifest_keeps_positions_at_full_float64_precision(tmp_path):
    """RA/Dec in the manifest read back to the same doubles (it used to write .6g: 1e-3 deg, 3.6 arcsec)."""
    t = candidates(8)
    t["ra"] = [150.123456789012345, 359.99999999999994, 0.1 + 0.2, 1e-10, 12.5, 45.000000001, 200.0, 7.25]
    t["dec"] = [2.2000000000000002, -89.99999999999, -0.30000000000000004, 5e-324, 0.0, -1.0, 3.3, -4.4]
    t["has_subject"] = False
    picks = next_round.rank_candidates(t, 8, exploration=0.0)
    manifest = next_round.write_manifest(picks, fake_image, tmp_path / "round", round_name="r")
    back = pd.read_csv(manifest, dtype={"object_id": str}).set_index("object_id").loc[picks["image_id"]]
    np.testing.assert_array_equal(back["ra"].to_numpy(), picks["ra"].to_numpy(float))    # bit for bit
    np.testing.assert_array_equal(back["dec"].to_numpy(), picks["dec"].to_numpy(float))
    assert next_round._fmt(float("nan")) == "" and next_round._fmt(pd.NA) == "" and next_round._fmt(None) == ""
    assert next_round._fmt(np.float32(0.1)) == repr(float(np.float32(0.1)))   # the float32's exact value


def test_picks_file_has_no_null_strings_so_astropy_reads_it(tmp_path):
    from astropy.table import Table

    picks = candidates(6).assign(top_tag=["ring", None, None, "merger", np.nan, None], batch="b0")
    out = next_round.picks_for_file(picks)
    assert list(out["top_tag"]) == ["ring", "", "", "merger", "", ""]
    pd.testing.assert_frame_equal(out.drop(columns="top_tag"), picks.drop(columns="top_tag"))  # the rest as it was
    out.to_parquet(tmp_path / "picks.parquet", index=False)
    t = Table.read(tmp_path / "picks.parquet")                      # TypeError on a null string before
    assert list(t["top_tag"]) == ["ring", "", "", "merger", "", ""]
    picks.to_parquet(tmp_path / "raw.parquet", index=False)
    with pytest.raises(TypeError):                                  # what the fix is for
        Table.read(tmp_path / "raw.parquet")


def test_validation_catches_what_the_uploader_would_refuse(tmp_path):
    picks = next_round.rank_candidates(candidates(), 4, exploration=0.0)
    manifest = next_round.write_manifest(picks, fake_image, tmp_path / "m", round_name="r")
    rows = list(csv.reader(open(manifest)))
    first_png = manifest.parent / rows[1][0]
    first_png.write_bytes(b"")  # empty file
    (manifest.parent / rows[2][0]).write_bytes(b"\0" * (next_round.MAX_UPLOAD_BYTES + 1))  # too big
    (manifest.parent / rows[3][0]).unlink()  # missing
    rows[4][1] = rows[1][1]  # repeated object_id
    with open(manifest, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    problems = " | ".join(next_round.validate_manifest(manifest))
    assert "is empty" in problems and "over the" in problems and "no media file" in problems
    assert "repeats line" in problems


def test_upload_needs_credentials(monkeypatch, tmp_path):
    for k in ("PANOPTES_USERNAME", "PANOPTES_PASSWORD", "PANOPTES_CLIENT_ID", "PANOPTES_CLIENT_SECRET"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match="PANOPTES_USERNAME"):
        upload.connect_from_env()


# --- upload through the real panoptes-client against the loopback Zooniverse (fixtures: conftest) ----------


def with_subject_set_listing(server):
    """Add ``GET /api/subjects?subject_set_id=`` (what SubjectSet.subjects / Subject.where send on the real API)
    to the loopback server when it lacks it, so re-running an upload can find what the set already holds."""
    from ww_assets_tests.support import loopback_zooniverse as lz

    original = server._uploads_api

    def uploads_api(method, path, query, body):
        if method == "GET" and path == "/subjects" and "subject_set_id" in query:
            record = server.subject_sets.get(str(query["subject_set_id"]))
            members = record["links"]["subjects"] if record else []
            return lz._paged("subjects", [server.subjects[s] for s in members if s in server.subjects])
        return original(method, path, query, body)

    server._uploads_api = uploads_api
    return server


def test_upload_creates_set_uploads_images_links_and_resumes(loopback_zooniverse, tmp_path):
    import hashlib

    server = with_subject_set_listing(loopback_zooniverse)
    picks = next_round.rank_candidates(candidates(), 6, exploration=0.0)
    manifest = next_round.write_manifest(picks, fake_image, tmp_path / "round", round_name="r1")
    upload.connect_from_env()
    out = upload.upload_manifest(manifest, project_id=server.project_id, subject_set_name="W&W next round 1",
                                     link_batch=4)
    assert out.subject_set_created and out.created == 6 and out.skipped_existing == 0
    (set_id, record), = server.subject_sets.items()
    assert set_id == out.subject_set_id and record["display_name"] == "W&W next round 1"
    assert sorted(record["links"]["subjects"]) == sorted(out.subject_ids)
    assert record["links"]["project"] == str(server.project_id)
    # Every image went to its presigned URL as a PNG, byte for byte.
    sent = {u["subject_id"]: u for u in server.uploads}
    assert len(sent) == 6 and all(u["content_type"] == "image/png" for u in sent.values())
    for sid in out.subject_ids:
        meta = server.subjects[sid]["metadata"]
        png = manifest.parent / f"{meta['object_id']}.png"
        assert sent[sid]["sha256"] == hashlib.sha256(png.read_bytes()).hexdigest()
        assert meta["#round"] == "r1" and "#predicted_interest" in meta and meta["image"] == png.name
    # Re-running (say after an interruption) finds the set and adds nothing twice.
    again = upload.upload_manifest(manifest, project_id=server.project_id, subject_set_name="W&W next round 1")
    assert not again.subject_set_created and again.created == 0 and again.skipped_existing == 6
    assert len(server.subject_sets) == 1 and len(server.subjects) == 6 and len(server.uploads) == 6
    # A bigger manifest for the same round uploads only the new rows.
    more = next_round.write_manifest(next_round.rank_candidates(candidates(), 8, exploration=0.0), fake_image,
                                     tmp_path / "round", round_name="r1")
    third = upload.upload_manifest(more, project_id=server.project_id, subject_set_name="W&W next round 1")
    assert third.created == 2 and third.skipped_existing == 6
    assert len(server.subject_sets[set_id]["links"]["subjects"]) == 8


def test_upload_refuses_an_invalid_manifest(loopback_zooniverse, tmp_path):
    picks = next_round.rank_candidates(candidates(), 2, exploration=0.0)
    manifest = next_round.write_manifest(picks, fake_image, tmp_path / "round", round_name="r1")
    next(manifest.parent.glob("*.png")).unlink()
    with pytest.raises(ValueError, match="not valid"):
        upload.upload_manifest(manifest, project_id=loopback_zooniverse.project_id, subject_set_name="x")
    assert loopback_zooniverse.subject_sets == {}
