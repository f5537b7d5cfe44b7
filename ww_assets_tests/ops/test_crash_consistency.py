"""Crash consistency of the atomic writes, proved by killing the writer: at every step of a partition write
(a crash hook in ``ww_assets.storage``) and at random moments (SIGKILL after a random delay), bounded.

Each kill is a forked writer replacing a real per-partition folder (a scores folder: scores.parquet, the release
CSV, latent_vectors.npy, score_config.json) with the next *generation*; every generation has its own row count,
ids and values, so a mix of two generations cannot pass for either. After each kill the folder a reader opens must
hold exactly the old generation or exactly the new one: never neither, never a mix. With ``RENAME_EXCHANGE``
(Linux) that holds at every instant; with the two-rename fallback it holds once ``recover_atomic_dir`` (run at
the start of the next write) has put an aside copy back, and the test counts how often a reader would have found
the folder missing in between.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ww_assets import storage
from ww_assets.scores import release

pytestmark = pytest.mark.slow

BATCH = "batch_000"
EXCHANGE_STEPS = ("body", "written", "files-synced", "exchanged", "done")
FALLBACK_STEPS = ("body", "written", "files-synced", "old-aside", "renamed", "done")
FILE_STEPS = ("body", "file-synced", "renamed")
RANDOM_KILLS = {"exchange": 14, "fallback": 8}
FIGURES: dict[str, int] = {"kills": 0, "old": 0, "new": 0, "lost": 0, "mixed": 0, "missing_before_recovery": 0}


# --------------------------------------------------------------------------------------------- the writer
def _table(gen: int) -> release.ScoreTable:
    n = 40 + gen                                   # each generation has its own length, ids and values
    ids = [f"g{gen}-{i}" for i in range(n)]
    value = np.full(n, float(gen))
    return release.ScoreTable(image_ids=ids, image_score=value, feature_score=value, anomaly_score=value,
                              latents=np.full((n, release.LATENT_DIM), gen, dtype=np.float32))


def _write(folder: str, gen: int, crash_at: str | None, exchange: bool, single_file: bool) -> None:
    """Runs in a forked child: replace ``folder`` (or one file) with generation ``gen``, SIGKILLing itself at
    ``crash_at`` (a step name of ``ww_assets.storage``) when given."""
    if not exchange:
        storage._renameat2 = None
    if crash_at is not None:
        def hook(step: str) -> None:
            if step == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
        storage.crash_point = hook
    table = _table(gen)
    if single_file:
        with storage.atomic_path(folder) as tmp:
            storage._step("body")
            table.frame(BATCH).to_parquet(tmp, index=False)
        return
    with storage.atomic_dir(folder) as tmp:
        storage._step("body")
        release.write_scores_folder(tmp, BATCH, table, {"generation": gen})


def observed(folder: Path, single_file: bool = False) -> int | None:
    """The generation a reader finds at ``folder`` (None: nothing there). Fails on anything but one whole
    generation."""
    if not folder.exists():
        return None
    if single_file:
        frame = pd.read_parquet(folder)
        gens = {int(v) for v in frame["anomaly_score"]}
        assert len(gens) == 1, f"{folder} mixes generations {gens}"
        gen = gens.pop()
        assert list(frame["image_id"]) == [f"g{gen}-{i}" for i in range(40 + gen)]
        return gen
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([storage.SCORES_FILE, storage.RELEASE_SCORES_FILE, storage.LATENTS_FILE,
                            storage.SCORE_CONFIG_FILE]), f"{folder} holds {names}"
    frame, latents, config = release.read_scores_folder(folder)
    gen = int(config["generation"])
    ids = [f"g{gen}-{i}" for i in range(40 + gen)]
    csv = pd.read_csv(folder / storage.RELEASE_SCORES_FILE, dtype={"image_identifier": str})
    assert list(frame["image_id"]) == ids and list(csv["image_identifier"]) == ids, f"{folder}: ids of a mix"
    assert set(frame["anomaly_score"]) == {float(gen)} and set(csv["anomaly_score"]) == {float(gen)}
    assert latents.shape == (len(ids), release.LATENT_DIM) and set(np.unique(latents)) == {float(gen)}
    assert json.loads((folder / storage.SCORE_CONFIG_FILE).read_text())["n_images"] == len(ids)
    return gen


@pytest.fixture(scope="module")
def forker():
    """Writers forked from a fork server that has imported the writer already (a kill costs milliseconds)."""
    if sys.platform != "linux":  # pragma: no cover
        pytest.skip("forkserver kills are a Linux test")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, "ww_assets.scores.release", "pandas", "pyarrow.parquet"])
    yield ctx
    print(f"\ncrash consistency: {FIGURES['kills']} kills, {FIGURES['old']} found the old generation, "
          f"{FIGURES['new']} the new one, {FIGURES['lost']} lost, {FIGURES['mixed']} mixed; "
          f"{FIGURES['missing_before_recovery']} fallback kills left the folder missing until recovery")


def _run(ctx, folder: Path, gen: int, *, crash_at=None, kill_after=None, exchange=True, single_file=False) -> int:
    proc = ctx.Process(target=_write, args=(str(folder), gen, crash_at, exchange, single_file))
    proc.start()
    if kill_after is not None:
        time.sleep(kill_after)
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the writer finished first: the kill came after the end of the write
            pass
    proc.join(60)
    assert proc.exitcode is not None, "writer hung"
    return proc.exitcode


def _after_kill(folder: Path, before: int, new: int, *, exchange: bool, single_file: bool) -> int:
    """Check what a reader finds after a kill, count it, and return the generation now committed."""
    FIGURES["kills"] += 1
    seen = observed(folder, single_file)
    if seen is None and not exchange and not single_file:
        FIGURES["missing_before_recovery"] += 1
        storage.recover_atomic_dir(folder)          # what the next write does first
        seen = observed(folder)
    if seen is None:
        FIGURES["lost"] += 1
    assert seen in (before, new), f"after a kill the folder holds generation {seen}, not {before} or {new}"
    FIGURES["old" if seen == before else "new"] += 1
    return seen


@pytest.mark.parametrize("mode", ["exchange", "fallback", "file"])
def test_a_writer_killed_at_every_step_leaves_the_old_or_the_new(forker, tmp_path, mode):
    exchange, single_file = mode != "fallback", mode == "file"
    if exchange and not single_file:
        assert storage._renameat2 is not None, "Linux should swap folders with renameat2(RENAME_EXCHANGE)"
    folder = tmp_path / (f"{BATCH}.parquet" if single_file else BATCH)
    assert _run(forker, folder, 1, exchange=exchange, single_file=single_file) == 0
    committed = observed(folder, single_file)
    assert committed == 1
    steps = FILE_STEPS if single_file else EXCHANGE_STEPS if exchange else FALLBACK_STEPS
    for step in steps:
        new = committed + 1
        code = _run(forker, folder, new, crash_at=step, exchange=exchange, single_file=single_file)
        assert code == -signal.SIGKILL, f"the writer never reached step {step!r} (exit {code})"
        committed = _after_kill(folder, committed, new, exchange=exchange, single_file=single_file)
        # before the swap the old generation stays; from the swap (exchange or last rename) on, the new one
        commit_step = "exchanged" if "exchanged" in steps else "renamed"
        expect_new = steps.index(step) >= steps.index(commit_step)
        assert committed == (new if expect_new else new - 1), (step, committed)
    # the next write finishes and cleans up whatever the kills left beside the folder
    assert _run(forker, folder, committed + 1, exchange=exchange, single_file=single_file) == 0
    assert observed(folder, single_file) == committed + 1
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_a_writer_killed_at_random_moments_leaves_the_old_or_the_new(forker, tmp_path, mode):
    exchange = mode == "exchange"
    folder = tmp_path / BATCH
    started = time.monotonic()
    assert _run(forker, folder, 1, exchange=exchange) == 0
    duration = time.monotonic() - started            # one whole write, fork included
    committed = observed(folder)
    rng = random.Random(20261202)
    outcomes = []
    for _ in range(RANDOM_KILLS[mode]):
        new = committed + 1
        _run(forker, folder, new, kill_after=rng.uniform(0.0, 1.2 * duration), exchange=exchange)
        committed = _after_kill(folder, committed, new, exchange=exchange, single_file=False)
        outcomes.append(committed == new)
    assert _run(forker, folder, committed + 1, exchange=exchange) == 0
    assert observed(folder) == committed + 1
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".")) == []
    print(f"{mode}: {len(outcomes)} random kills, {sum(outcomes)} after the swap, "
          f"{len(outcomes) - sum(outcomes)} before (one write: {duration * 1000:.0f} ms)")
