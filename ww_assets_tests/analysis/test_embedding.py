"""Reading latents from the partition files, and the UMAP map of them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ww_assets.analysis import embedding, latents
from ww_assets.storage import RELEASE_SCORES_FILE, StorageLayout


def write_batch(layout: StorageLayout, batch: str, ids, z) -> None:
    d = layout.scores_dir(batch)
    d.mkdir(parents=True, exist_ok=True)
    np.save(layout.latents_file(batch), np.asarray(z, np.float32))
    pd.DataFrame({"image_identifier": ids, "image score": 0.0, "feature score": 0.0, "anomaly score": 0.0}
                 ).to_csv(d / RELEASE_SCORES_FILE, index=False)


def test_load_latents_keeps_row_order_and_quarantines(tmp_path):
    layout = StorageLayout(tmp_path)
    z0 = np.arange(12, dtype=np.float32).reshape(3, 4)
    z1 = np.ones((3, 4), np.float32)
    z1[1, 2] = np.nan
    write_batch(layout, "a", ["001", "002", "003"], z0)
    write_batch(layout, "b", ["004", "005", "002"], z1)  # 005 non-finite, 002 already in batch a
    assert latents.score_batches(layout) == ["a", "b"]
    ls = latents.load_latents(layout)
    assert list(ls.index["image_id"]) == ["001", "002", "003", "004"]  # ids stay text: leading zeros kept
    np.testing.assert_array_equal(ls.latents[:3], z0)
    assert dict(zip(ls.dropped["image_id"], ls.dropped["reason"])) == {
        "005": "non-finite latent vector", "002": "image already read from an earlier batch"}
    write_batch(layout, "c", ["x", "y"], np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"batch 'c'.*shape \(3, 4\).*2 rows"):
        latents.load_latents(layout)
    with pytest.raises(FileNotFoundError, match="no latent vectors"):
        latents.load_latents(StorageLayout(tmp_path / "empty"))


def test_umap_keeps_clusters_and_neighbourhoods():
    """Properties with margins that mean something, not a figure measured on one release of umap-learn.

    Three clusters in 128-d must stay apart on the map, and the map must keep several times more of each point's
    latent neighbours than a random 2-d layout of the same points does (which keeps about k / N of them).
    """
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 128))
    lab = np.repeat([0, 1, 2], 100)
    x = np.tanh(0.6 * centres[lab] + rng.normal(scale=0.3, size=(300, 128))).astype(np.float32)
    cfg = embedding.UMAPConfig(backend="umap_learn", n_epochs=200, seed=4)
    res = embedding.fit_umap(x, cfg)
    assert res.backend == "umap_learn" and res.embedding.shape == (300, 2) and np.isfinite(res.embedding).all()
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=6).fit(res.embedding).kneighbors(res.embedding, return_distance=False)[:, 1:]
    assert (lab[nn] == lab[:, None]).mean() > 0.98
    # Seeded: the same run gives the same map.
    np.testing.assert_allclose(embedding.fit_umap(x, cfg).embedding, res.embedding, atol=1e-4)
    kept = embedding.neighbourhood_preservation(x, res.embedding, k=10, n_query=100)
    random_layout = rng.normal(size=(300, 2)).astype(np.float32)
    chance = embedding.neighbourhood_preservation(x, random_layout, k=10, n_query=100)
    assert chance < 0.1 and kept > 3 * chance, (kept, chance)


def test_config_is_checked():
    with pytest.raises(ValueError, match="backend"):
        embedding.fit_umap(np.zeros((10, 4), np.float32), embedding.UMAPConfig(backend="gpu-magic"))
    assert embedding.resolve_init(embedding.UMAPConfig(), 1_000_000) == "pca"
    assert embedding.resolve_init(embedding.UMAPConfig(), 5_000) == "spectral"
