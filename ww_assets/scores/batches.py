"""Scoring a whole image batch: chunks of a memory-mapped ``cutouts.npy`` streamed to the device.

The score itself is computed in ``ww_assets.scores.anomaly``; this module only feeds it: chunks are read from disk in
a background thread while the previous chunk is on the device, and on CUDA straight into reused pinned buffers.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

import numpy as np

__all__ = ["iter_chunks", "score_cutouts", "score_batch_folder", "has_images", "load_release_batch",
           "distribution_summary"]

def iter_chunks(images: np.ndarray, chunk: int, prefetch: int = 2,
                out: list[np.ndarray] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, images[start:start+chunk])`` as contiguous arrays, read ahead in a background thread.

    With a memory-mapped ``cutouts.npy`` this overlaps disk reads with whatever the caller does with the previous
    chunk (moving it to the GPU and scoring it); at most ``prefetch`` chunks wait. ``out``: optional reusable
    buffers (e.g. numpy views of pinned host memory), at least ``prefetch + 2`` of them, each holding ``chunk``
    images; chunks are then read into them round-robin and yielded as views. A buffer is refilled only after the
    consumer has asked for the chunk after the one it held, so a consumer must be done with a chunk (its
    asynchronous copies finished) before it asks for the next.
    """
    n = int(images.shape[0])
    if n == 0:
        return
    if chunk <= 0:
        raise ValueError("chunk must be positive")
    prefetch = max(1, prefetch)
    if out is not None:
        if len(out) < prefetch + 2:
            raise ValueError(f"need at least prefetch + 2 = {prefetch + 2} buffers, got {len(out)}")
        for buf in out:
            if buf.shape[0] < min(chunk, n) or buf.shape[1:] != tuple(images.shape[1:]) or buf.dtype != images.dtype:
                raise ValueError(f"buffer {buf.dtype} {buf.shape} cannot hold chunks of {chunk} x "
                                 f"{tuple(images.shape[1:])} {images.dtype}")
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def reader() -> None:
        try:
            for k, start in enumerate(range(0, n, chunk)):
                if stop.is_set():
                    return
                if out is None:
                    # a real copy (not a view of a memory map), so the disk read happens here, in this thread
                    block = np.array(images[start:start + chunk], copy=True, order="C")
                else:
                    m = min(chunk, n - start)
                    block = out[k % len(out)][:m]
                    np.copyto(block, images[start:start + m])
                q.put((start, block))
            q.put(None)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)

    thread = threading.Thread(target=reader, name="cutout-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)



def score_cutouts(wgan, images: np.ndarray, score_config, device, chunk: int = 8192, log=None, noise=None):
    """Score ``images`` (uint8 (N, 3, H, W), usually a memory-mapped cutouts.npy) chunk by chunk with
    ``ww_assets.scores.anomaly.score_images`` (the score math lives there; ``score_config`` is its ``ScoreConfig``).

    Chunks are read from disk in a background thread (:func:`iter_chunks`) while the previous chunk is on the
    device; on CUDA they are read straight into four reused pinned buffers, so each host-to-device copy is an
    asynchronous DMA with no extra copy. ``log(done, total, seconds)`` is called after each chunk.
    Returns (image, feature, anomaly scores float64 (N,), latents float32 (N, latent_dim), seconds).
    Imports torch lazily: reading cutouts does not need it.
    """
    import torch

    from ww_assets.scores.anomaly import score_images

    n = int(images.shape[0])
    buffers = None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True        # fixed batch shapes: let cuDNN pick the fastest kernels
    if device.type == "cuda" and n:
        shape = (min(chunk, n), *images.shape[1:])
        buffers = [torch.empty(shape, dtype=torch.uint8).pin_memory() for _ in range(4)]
    parts = {k: [] for k in ("image", "feature", "anomaly", "latents")}
    started = time.perf_counter()
    done = 0
    pinned = [b.numpy() for b in buffers] if buffers else None
    for start, block in iter_chunks(images, chunk, prefetch=2, out=pinned):
        x = torch.from_numpy(block) if buffers is None else _pinned_view(buffers, block)
        result = score_images(wgan, x, score_config, device=device, source="cutouts.npy",
                              noise=None if noise is None else noise[start:start + len(block)])
        parts["image"].append(result.image_score)
        parts["feature"].append(result.feature_score)
        parts["anomaly"].append(result.anomaly_score)
        parts["latents"].append(result.latents)
        done = start + len(block)
        if log is not None:
            elapsed = time.perf_counter() - started
            log(done, n, elapsed)
    seconds = time.perf_counter() - started
    if not n:
        return (np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, wgan.config.latent_dim), np.float32), seconds)
    return (np.concatenate(parts["image"]), np.concatenate(parts["feature"]), np.concatenate(parts["anomaly"]),
            np.concatenate(parts["latents"]), seconds)



def _pinned_view(buffers, block: np.ndarray):
    """The pinned torch tensor whose memory ``block`` (a numpy view from iter_chunks) lives in, cut to size."""
    for buf in buffers:
        if np.may_share_memory(buf.numpy(), block):
            return buf[: len(block)]
    raise RuntimeError("chunk is not in any pinned buffer")



def score_batch_folder(layout, batch: str, score_config, device, chunk: int = 8192, log=None):
    """Score one written image batch with the model in ``layout.model_dir``: (ScoreTable, record for
    score_config.json, images quarantined before scoring, the catalog's image ids in order)."""
    from ww_assets.images.cutouts import load_cutouts, load_quarantine
    from ww_assets.model.checkpoints import load_wgan, model_fingerprint
    from ww_assets.model.networks import device_name
    from ww_assets.scores.normalise import score_family
    from ww_assets.scores.release import ScoreTable

    from ww_assets.model.data import catalog_noise

    images, catalog = load_cutouts(layout.images_dir(batch))
    n_quarantined = len(load_quarantine(layout.images_dir(batch)))
    noise = catalog_noise(catalog)
    ids = catalog["image_id"].astype(str).to_numpy()
    if not layout.model_dir.exists():
        raise FileNotFoundError(f"no model at {layout.model_dir}: materialise `wgan` first")
    wgan = load_wgan(layout.model_dir, device=device)
    img, feat, anom, latents, seconds = score_cutouts(wgan, images, score_config, device, chunk, log, noise)
    table = ScoreTable(ids, img, feat, anom, latents)
    n = len(table)
    record = {"source": "model", **score_config.to_dict(), "model_dir": str(layout.model_dir),
              "model_fingerprint": model_fingerprint(layout.model_dir), "device": device_name(device),
              "seconds": round(seconds, 3), "images_per_second": round(n / seconds, 1) if seconds > 0 and n else None,
              "noise_measured_on_fluxes": int(np.isfinite(noise).all(1).sum())}
    record["score_family"] = score_family(record)
    return table, record, n_quarantined, ids


def has_images(layout, batch: str) -> bool:
    """True when the batch's written cutouts hold at least one image (a release batch's empty folder holds none)."""
    from ww_assets.images.batch import ImagingError
    from ww_assets.images.cutouts import load_cutouts

    try:
        return len(load_cutouts(layout.images_dir(batch))[1]) > 0
    except ImagingError:
        return False


def load_release_batch(run, release_name: str):
    """(ScoreTable, record) of a published-release run: its scores as published, not re-scored."""
    from ww_assets.scores.normalise import score_family
    from ww_assets.scores.release import read_release_run

    table = read_release_run(run.csv, run.npy)
    record = {"source": "release", "release_name": release_name, "csv": str(run.csv), "npy": str(run.npy),
              "formula": "as published", "description": "published W&W release scores", "device": "none (loaded)",
              "precision": "as published", "seconds": 0.0}
    record["score_family"] = score_family(record)
    return table, record


def distribution_summary(values: np.ndarray) -> dict:
    """n, mean, std, min, 1st / 50th / 90th / 99th percentiles and max of a batch's scores (or latent norms)."""
    v = np.asarray(values, dtype=np.float64)
    if not v.size:
        return {"n": 0}
    p = np.percentile(v, [1, 50, 90, 99])
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "p01": float(p[0]), "p50": float(p[1]), "p90": float(p[2]), "p99": float(p[3]), "max": float(v.max())}
