"""Nearest neighbours in latent space on a constructed case: planted near-duplicates must come first."""

from __future__ import annotations

import numpy as np
import pytest

from ww_assets.analysis import similarity

EPS32 = float(np.finfo(np.float32).eps)


def sq_rounding(norm_sq_sum):
    """What a squared distance expanded as |q|^2 - 2 q.x + |x|^2 in float32 (the torch backend) can be off by: 16
    rounding units of |q|^2 + |x|^2. The largest error measured on the rows below is under 5 units; a neighbour
    that is not a near-duplicate (squared distance ~70) is millions of units away."""
    return 16 * EPS32 * norm_sq_sum


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(3)
    z = np.tanh(rng.normal(size=(500, 128))).astype(np.float32)
    # Query 10 has two near-duplicates (17: tiny offset, 400: exact copy); query 250 has one (251).
    z[17] = z[10] + 1e-3
    z[400] = z[10]
    z[251] = z[250] + 5e-3 * rng.normal(size=128).astype(np.float32)
    return z


@pytest.mark.parametrize("backend", ["sklearn", "torch"])
def test_near_duplicates_come_first(planted, backend):
    res = similarity.knn(planted, 5, backend=backend)
    assert res.indices.shape == (500, 5) and res.distances.shape == (500, 5)
    assert set(res.indices[10, :2]) == {17, 400}
    assert res.indices[250, 0] == 251 and res.indices[251, 0] == 250
    # The exact copy, at distance 0 up to float rounding. In float32 the expanded formula leaves 0 or the root of a
    # few rounding units of |q|^2 + |x|^2 for an exact copy (0 for about 60% of these rows, up to 7e-3 for the rest,
    # depending on the BLAS's summation order), so a fixed 1e-3 would pass or fail with the torch build.
    sq = (planted.astype(np.float64) ** 2).sum(axis=1)
    assert res.distances[10, 0] <= np.sqrt(sq_rounding(sq[10] + sq[400])) < res.distances[10, 2] / 100
    assert not (res.indices == np.arange(500)[:, None]).any()  # no image is its own neighbour
    assert (np.diff(res.distances, axis=1) >= -1e-6).all()


def test_backends_agree_and_self_first_for_umap(planted):
    a = similarity.knn(planted, 8, backend="sklearn")
    b = similarity.knn(planted, 8, backend="torch", tile_rows=64, tile_cols=96)  # tiles force the top-k merge
    # Same neighbour sets (tie order may differ), same distances to float precision.
    assert np.mean([set(x) == set(y) for x, y in zip(a.indices, b.indices)]) > 0.99
    # Same distances to float32 rounding, compared squared (what the torch backend computes). A fixed tolerance on the
    # distance does not fit both ends: near-duplicates (0.011 apart) come out up to 2.6e-3 off, far neighbours ~1e-6.
    sq = (planted.astype(np.float64) ** 2).sum(axis=1)
    err = np.abs(a.distances.astype(np.float64) ** 2 - b.distances.astype(np.float64) ** 2)
    tol = sq_rounding(sq[:, None] + np.maximum(sq[a.indices], sq[b.indices]))
    assert (err <= tol).all(), (err / tol).max()
    c = similarity.knn(planted, 8, backend="torch", exclude_self=False)
    assert (c.indices[:, 0] == np.arange(500)).all() and (c.distances[:, 0] == 0).all()


def test_more_like_this_and_neighbour_table(planted):
    ids = [f"obj{i}" for i in range(500)]
    hits = similarity.more_like_this(["obj10", "obj250"], ids, planted, k=4, backend="sklearn")
    first = hits[hits["query_id"] == "obj10"]
    assert list(first["rank"]) == [1, 2, 3, 4]
    assert set(first["image_id"].iloc[:2]) == {"obj17", "obj400"} and "obj10" not in set(first["image_id"])
    assert hits[hits["query_id"] == "obj250"]["image_id"].iloc[0] == "obj251"
    with pytest.raises(KeyError, match="nope"):
        similarity.more_like_this(["nope"], ids, planted, k=4)
    table = similarity.neighbour_table(ids, similarity.knn(planted, 3, backend="sklearn"))
    assert list(table.columns) == ["image_id", "rank", "neighbour_id", "distance"] and len(table) == 1500


def test_bad_input_is_named():
    z = np.zeros((10, 4), np.float32)
    z[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        similarity.knn(z, 2)
    with pytest.raises(ValueError, match="k must be"):
        similarity.knn(np.zeros((3, 4), np.float32), 5)
