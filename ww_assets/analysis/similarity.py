"""Nearest neighbours in latent space: "which images does the model see as alike?".

Two exact backends give the same answer (up to float rounding and tie order):

* ``sklearn``: scikit-learn's exact search on the CPU; the default for small sets.
* ``torch``: tiled ``|q|^2 - 2 q.x + |x|^2`` distances with a running top-k merge, so memory stays bounded by
  ``tile_rows x tile_cols`` whatever N is; runs on the GPU when one is present (1M x 128 in seconds on an H100),
  in full fp32 (TF32 off) so near-duplicate order is not scrambled by reduced-precision matmuls.

``auto`` picks ``torch`` on a GPU, else ``sklearn``. Distances are Euclidean on the 128-d latent vectors (``cosine``
normalises the vectors first and returns ``1 - cos``).

No Dagster here: ``knn``, ``neighbour_table`` and ``more_like_this`` take arrays and frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

METRICS = ("euclidean", "cosine")
BACKENDS = ("auto", "sklearn", "torch")

__all__ = ["BACKENDS", "METRICS", "KNNResult", "cuda_available", "knn", "more_like_this", "neighbour_table",
           "resolve_backend"]


@dataclass(frozen=True)
class KNNResult:
    """``indices[i, j]`` is the row of the j-th nearest neighbour of row i; ``distances`` are ascending per row."""

    indices: np.ndarray  # (N, k) int64
    distances: np.ndarray  # (N, k) float32
    backend: str
    device: str


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"latent vectors must be 2-d (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise ValueError(f"latent vectors contain NaN/inf in {bad.size} rows (first rows: {bad[:5].tolist()})")
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(x)


def cuda_available() -> bool:
    """Whether torch is importable and sees a GPU (False, not an error, without torch or with a broken CUDA)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken CUDA install: CPU it is
        return False


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "torch" if cuda_available() else "sklearn"
    return backend


def knn(
    latents: np.ndarray,
    k: int,
    *,
    queries: np.ndarray | None = None,
    metric: str = "euclidean",
    backend: str = "auto",
    exclude_self: bool = True,
    device: str | None = None,
    tile_rows: int | None = None,
    tile_cols: int | None = None,
) -> KNNResult:
    """Exact k nearest neighbours of every row (or of ``queries``) among the rows of ``latents``.

    With ``queries=None`` the query set is ``latents`` itself. ``exclude_self=True`` drops each row from its own
    list (by index, so an exact duplicate of the query is still returned, at distance 0); ``False`` puts each row
    first in its own list at distance 0, which is what UMAP's neighbour graph expects.
    """
    base = _prepare(latents, metric)
    n = base.shape[0]
    self_query = queries is None
    q = base if self_query else _prepare(queries, metric)
    if q.shape[1] != base.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} dimensions, latents {base.shape[1]}")
    k_avail = n - 1 if (self_query and exclude_self) else n
    if k < 1 or k > k_avail:
        raise ValueError(f"k must be between 1 and {k_avail} for {n} latent vectors, got {k}")
    name = resolve_backend(backend)
    if name == "sklearn":
        idx, dist = _knn_sklearn(base, q, k, self_query, exclude_self)
        dev = "cpu"
    else:
        idx, dist, dev = _knn_torch(base, q, k, self_query, exclude_self, device, tile_rows, tile_cols)
    if metric == "cosine":
        dist = (dist.astype(np.float64) ** 2 / 2.0).astype(np.float32)  # |a-b|^2 = 2 - 2cos for unit vectors
    return KNNResult(indices=idx, distances=dist, backend=name, device=dev)


def _fix_self(idx: np.ndarray, dist: np.ndarray, k: int, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    """Given k+1 candidates per row (self-query), drop (or move first) the row itself, keeping order otherwise."""
    rows = np.arange(idx.shape[0])[:, None]
    is_self = idx == rows
    # Rows where self is missing among candidates (more than k+1 exact ties): treat the last candidate as dropped.
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    order = np.argsort(is_self, axis=1, kind="stable")  # non-self first, original order kept
    idx_ns = np.take_along_axis(idx, order, axis=1)[:, :k]
    dist_ns = np.take_along_axis(dist, order, axis=1)[:, :k]
    if exclude_self:
        return idx_ns, dist_ns
    out_idx = np.concatenate([rows.astype(idx.dtype), idx_ns[:, : k - 1]], axis=1)
    out_dist = np.concatenate([np.zeros((idx.shape[0], 1), dist.dtype), dist_ns[:, : k - 1]], axis=1)
    return out_idx, out_dist


def _knn_sklearn(base, q, k, self_query, exclude_self):
    from sklearn.neighbors import NearestNeighbors

    extra = 1 if self_query else 0
    nn = NearestNeighbors(n_neighbors=min(k + extra, base.shape[0]), algorithm="brute", metric="euclidean")
    nn.fit(base)
    dist, idx = nn.kneighbors(q)
    idx = idx.astype(np.int64)
    dist = dist.astype(np.float32)
    if self_query:
        idx, dist = _fix_self(idx, dist, k, exclude_self)
    return idx, dist


def _knn_torch(base, q, k, self_query, exclude_self, device, tile_rows, tile_cols):
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # Distance tiles of tile_rows x tile_cols float32: 4 GiB on a GPU, 256 MiB on the CPU.
    tile_rows = tile_rows or (4096 if dev.type == "cuda" else 1024)
    tile_cols = tile_cols or (262_144 if dev.type == "cuda" else 65_536)
    prev_tf32 = None
    if dev.type == "cuda":
        prev_tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        kk = k + (1 if self_query else 0)
        xb = torch.from_numpy(base).to(dev)
        xb_sq = (xb * xb).sum(dim=1)
        n = xb.shape[0]
        out_idx = np.empty((q.shape[0], kk), dtype=np.int64)
        out_dist = np.empty((q.shape[0], kk), dtype=np.float32)
        with torch.no_grad():
            for r0 in range(0, q.shape[0], tile_rows):
                xq = torch.from_numpy(q[r0 : r0 + tile_rows]).to(dev)
                xq_sq = (xq * xq).sum(dim=1, keepdim=True)
                best_d = best_i = None
                for c0 in range(0, n, tile_cols):
                    xc = xb[c0 : c0 + tile_cols]
                    # |q|^2 - 2 q.x + |x|^2 with one tile-sized buffer: addmm, then add in place.
                    d = torch.addmm(xb_sq[c0 : c0 + tile_cols].unsqueeze(0).expand(xq.shape[0], -1), xq, xc.T,
                                    beta=1.0, alpha=-2.0)
                    d.add_(xq_sq).clamp_(min=0.0)
                    kt = min(kk, d.shape[1])
                    td, ti = torch.topk(d, kt, dim=1, largest=False, sorted=False)
                    ti = ti + c0
                    if best_d is None:
                        best_d, best_i = td, ti
                    else:
                        cat_d = torch.cat([best_d, td], dim=1)
                        cat_i = torch.cat([best_i, ti], dim=1)
                        sel = torch.topk(cat_d, min(kk, cat_d.shape[1]), dim=1, largest=False, sorted=False).indices
                        best_d = torch.gather(cat_d, 1, sel)
                        best_i = torch.gather(cat_i, 1, sel)
                # Sort by (distance, index) so ties come out in a stable, reproducible order.
                order = torch.argsort(best_i, dim=1)
                best_d = torch.gather(best_d, 1, order)
                best_i = torch.gather(best_i, 1, order)
                order = torch.argsort(best_d, dim=1, stable=True)
                best_d = torch.gather(best_d, 1, order)
                best_i = torch.gather(best_i, 1, order)
                out_idx[r0 : r0 + tile_rows] = best_i.cpu().numpy()
                out_dist[r0 : r0 + tile_rows] = best_d.sqrt().cpu().numpy()
    finally:
        if prev_tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    if self_query:
        # Move the query's own row out (or first): with exact duplicates it need not come out first by distance.
        out_idx, out_dist = _fix_self(out_idx, out_dist, k, exclude_self)
    return out_idx, out_dist, str(dev)


def neighbour_table(image_ids: Sequence[str], result: KNNResult,
                    query_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Long table: one row per (image, neighbour) with ``rank`` 1..k, ``neighbour_id`` and latent ``distance``."""
    ids = np.asarray(image_ids, dtype=object)
    qids = ids if query_ids is None else np.asarray(query_ids, dtype=object)
    n, k = result.indices.shape
    if qids.shape[0] != n:
        raise ValueError(f"{qids.shape[0]} query ids for {n} neighbour rows")
    return pd.DataFrame(
        {
            "image_id": np.repeat(qids, k).astype(str),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
            "neighbour_id": ids[result.indices.ravel()].astype(str),
            "distance": result.distances.ravel().astype(np.float32),
        }
    )


def more_like_this(
    query_ids: Sequence[str],
    image_ids: Sequence[str],
    latents: np.ndarray,
    k: int = 16,
    *,
    metric: str = "euclidean",
    backend: str = "auto",
) -> pd.DataFrame:
    """The k images nearest to each query image (the query itself excluded), as a long table.

    Unknown ids raise ``KeyError`` naming them. Columns: ``query_id, rank, image_id, distance``.
    """
    ids = pd.Index(np.asarray(image_ids, dtype=str))
    if not ids.is_unique:
        dup = ids[ids.duplicated()].unique()[:5].tolist()
        raise ValueError(f"image ids are not unique (e.g. {dup})")
    queries = [str(q) for q in query_ids]
    missing = [q for q in queries if q not in ids]
    if missing:
        raise KeyError(f"image id(s) not among the {len(ids)} scored images: {missing[:10]}")
    rows = ids.get_indexer(queries)
    k = min(k, len(ids) - 1)
    res = knn(latents, k + 1, queries=np.asarray(latents)[rows], metric=metric, backend=backend)
    frames = []
    for qi, (row, q) in enumerate(zip(rows, queries)):
        keep = res.indices[qi] != row
        idx = res.indices[qi][keep][:k]
        dist = res.distances[qi][keep][:k]
        frames.append(
            pd.DataFrame(
                {"query_id": q, "rank": np.arange(1, len(idx) + 1, dtype=np.int32),
                 "image_id": ids.values[idx], "distance": dist}
            )
        )
    return pd.concat(frames, ignore_index=True)
