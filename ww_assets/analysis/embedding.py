"""UMAP of the wGAN latent vectors: a 2-d map of what the encoder thinks the images are.

Backends (``UMAPConfig.backend``):

* ``umap_learn``: umap-learn end to end (NNDescent neighbours, numba SGD). The reference, CPU only. Seeded runs
  are bit-reproducible but single-threaded in the layout step (umap-learn's rule); ``parallel=True`` trades that
  for all cores.
* ``umap_learn_torch_knn``: exact neighbours from ``similarity.knn`` in torch (GPU when present) fed to umap-learn
  as ``precomputed_knn``; graph and layout stay umap-learn's.
* ``cuml``: RAPIDS cuML's UMAP, used when it is importable and a GPU is present (not installed by default).
* ``auto``: ``cuml`` if available with a GPU, else ``umap_learn_torch_knn`` on a GPU, else ``umap_learn``.

The layout itself is always a library's (umap-learn or cuML): a hand-written torch layout was removed (12x slower
than umap-learn on the CPU, and its neighbourhood preservation moved with every dependency release).

``init="auto"`` is umap-learn's spectral initialisation up to ``spectral_max_n`` points and PCA above (the sparse
eigensolver dominates the run time at a million points). Every random draw is seeded by ``seed``.

No Dagster here: arrays in, arrays out. The latents come from ``latents.load_latents`` (the per-batch files).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ww_assets.analysis.similarity import cuda_available, knn

BACKENDS = ("auto", "umap_learn", "umap_learn_torch_knn", "cuml")
INITS = ("auto", "spectral", "pca", "random")

__all__ = [
    "BACKENDS", "INITS", "UMAPConfig", "UMAPResult", "cuml_available", "default_epochs", "fit_umap",
    "neighbourhood_preservation", "resolve_backend", "resolve_init", "umap_frame",
]


@dataclass
class UMAPConfig:
    """UMAP parameters. Defaults follow the W&W reference (n_neighbors 5-15, min_dist 0.1)."""

    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "euclidean"
    n_components: int = 2
    n_epochs: int | None = None  # umap-learn's default: 500 below 10k points, else 200
    negative_sample_rate: int = 5
    learning_rate: float = 1.0
    init: str = "auto"
    spectral_max_n: int = 200_000
    seed: int = 20211
    backend: str = "auto"
    parallel: bool = False  # umap_learn only: all cores, not bit-reproducible
    device: str | None = None  # umap_learn_torch_knn: "cuda", "cpu"; None = cuda when present

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"UMAP backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.init not in INITS:
            raise ValueError(f"UMAP init must be one of {INITS}, got {self.init!r}")
        if self.metric not in ("euclidean", "cosine"):
            raise ValueError(f"UMAP metric must be euclidean or cosine, got {self.metric!r}")
        if self.n_neighbors < 2:
            raise ValueError("n_neighbors must be at least 2")
        if not 0.0 <= self.min_dist <= 1.0:
            raise ValueError("min_dist must be in [0, 1]")


@dataclass
class UMAPResult:
    embedding: np.ndarray  # (N, n_components) float32
    backend: str
    device: str
    init: str
    n_epochs: int
    seconds: dict[str, float] = field(default_factory=dict)

    def info(self) -> dict:
        d = asdict(self)
        d.pop("embedding")
        return d


def cuml_available() -> bool:
    try:
        import cuml  # noqa: F401
    except Exception:
        return False
    return cuda_available()


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"UMAP backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if cuml_available():
        return "cuml"
    return "umap_learn_torch_knn" if cuda_available() else "umap_learn"


def resolve_init(config: UMAPConfig, n: int) -> str:
    if config.init != "auto":
        return config.init
    return "spectral" if n <= config.spectral_max_n else "pca"


def default_epochs(n: int) -> int:
    return 500 if n <= 10_000 else 200


def fit_umap(latents: np.ndarray, config: UMAPConfig | None = None, log=None) -> UMAPResult:
    """Embed ``latents`` (N, D) into ``config.n_components`` dimensions. ``log(msg)`` receives progress lines."""
    config = config or UMAPConfig()
    config.validate()
    x = np.ascontiguousarray(np.asarray(latents, dtype=np.float32))
    n = x.shape[0]
    if x.ndim != 2 or n < 3:
        raise ValueError(f"need at least 3 latent vectors (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("latent vectors contain NaN/inf; drop those rows first (latents.load_latents does)")
    n_neighbors = min(config.n_neighbors, n - 1)
    backend = resolve_backend(config.backend)
    if backend == "cuml" and not cuml_available():
        raise RuntimeError("UMAP backend 'cuml' asked for, but cuML or a GPU is not available")
    init = resolve_init(config, n)
    n_epochs = config.n_epochs or default_epochs(n)
    log = log or (lambda msg: None)
    log(f"UMAP of {n} x {x.shape[1]} latents: backend={backend}, init={init}, n_neighbors={n_neighbors}, "
        f"epochs={n_epochs}")
    if backend == "umap_learn":
        return _fit_umap_learn(x, config, n_neighbors, init, n_epochs, None, log)
    if backend == "umap_learn_torch_knn":
        t0 = time.perf_counter()
        res = knn(x, n_neighbors, metric=config.metric, backend="torch", exclude_self=False, device=config.device)
        t_knn = time.perf_counter() - t0
        log(f"exact kNN on {res.device}: {t_knn:.1f} s")
        out = _fit_umap_learn(x, config, n_neighbors, init, n_epochs, res, log)
        out.seconds = {"knn": t_knn, **out.seconds}
        out.device = res.device
        return out
    return _fit_cuml(x, config, n_neighbors, init, n_epochs, log)


def _fit_umap_learn(x, config, n_neighbors, init, n_epochs, knn_result, log) -> UMAPResult:
    import umap

    kwargs = dict(
        n_neighbors=n_neighbors, min_dist=config.min_dist, metric=config.metric, n_components=config.n_components,
        n_epochs=n_epochs, negative_sample_rate=config.negative_sample_rate, learning_rate=config.learning_rate,
        init=init, low_memory=True,
    )
    if config.parallel:
        np.random.seed(config.seed)  # umap-learn draws from the global RNG when random_state is None
        kwargs.update(random_state=None, n_jobs=-1)
    else:
        kwargs.update(random_state=config.seed, n_jobs=1)
    if knn_result is not None:
        kwargs["precomputed_knn"] = (knn_result.indices, knn_result.distances, None)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
        warnings.filterwarnings("ignore", message=".*precomputed_knn\\[2\\].*")
        warnings.filterwarnings("ignore", message=".*is not an NNDescent object.*")
        emb = umap.UMAP(**kwargs).fit_transform(x)
    t = time.perf_counter() - t0
    log(f"umap-learn fit: {t:.1f} s")
    return UMAPResult(embedding=np.asarray(emb, dtype=np.float32), backend="umap_learn" if knn_result is None
                      else "umap_learn_torch_knn", device="cpu", init=init, n_epochs=n_epochs,
                      seconds={"umap_learn": t})


def _fit_cuml(x, config, n_neighbors, init, n_epochs, log) -> UMAPResult:  # pragma: no cover - needs cuML + GPU
    from cuml.manifold import UMAP as CumlUMAP

    t0 = time.perf_counter()
    model = CumlUMAP(n_neighbors=n_neighbors, min_dist=config.min_dist, n_components=config.n_components,
                     n_epochs=n_epochs, negative_sample_rate=config.negative_sample_rate,
                     learning_rate=config.learning_rate, init="spectral" if init == "spectral" else "random",
                     metric=config.metric, random_state=config.seed)
    emb = model.fit_transform(x)
    emb = emb.get() if hasattr(emb, "get") else np.asarray(emb)
    t = time.perf_counter() - t0
    log(f"cuML UMAP: {t:.1f} s")
    return UMAPResult(embedding=np.asarray(emb, dtype=np.float32), backend="cuml", device="cuda", init=init,
                      n_epochs=n_epochs, seconds={"cuml": t})


def umap_frame(index: pd.DataFrame, result: UMAPResult) -> pd.DataFrame:
    """``image_id, batch, umap_x, umap_y`` (and ``umap_<i>`` beyond two components)."""
    out = index[["image_id", "batch"]].reset_index(drop=True).copy()
    emb = result.embedding
    names = ["umap_x", "umap_y"] + [f"umap_{i}" for i in range(2, emb.shape[1])]
    for i, name in enumerate(names[: emb.shape[1]]):
        out[name] = emb[:, i].astype(np.float32)
    return out


def neighbourhood_preservation(latents: np.ndarray, embedding: np.ndarray, k: int = 10, n_query: int = 2000,
                               seed: int = 0) -> float:
    """Mean share of each point's k latent-space neighbours that are also among its k map neighbours.

    Measured on ``n_query`` random points against all points: a quality figure that scales to 1M points.
    """
    n = latents.shape[0]
    rng = np.random.default_rng(seed)
    q = rng.choice(n, size=min(n_query, n), replace=False)
    hi = knn(latents, k + 1, queries=latents[q], backend="auto").indices
    lo = knn(embedding.astype(np.float32), k + 1, queries=embedding[q].astype(np.float32), backend="sklearn").indices
    shares = []
    for row, a_, b_ in zip(q, hi, lo):
        sa = set(a_.tolist()) - {row}
        sb = set(b_.tolist()) - {row}
        shares.append(len(sa & sb) / max(len(sa), 1))
    return float(np.mean(shares))
