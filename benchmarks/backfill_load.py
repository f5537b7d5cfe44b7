"""Load: a backfill of many image-batch partitions, as the daemon runs it, measured.

Builds a scaled sample (default 120 batches of 64 simulated cutouts, npy), starts `dagster dev` (webserver,
daemon, code server) with the project's dagster.yaml (run queue, pools gpu = 1 and duckdb = 1) or with
deploy/dagster.yaml on a throw-away PostgreSQL (--postgres), launches one partition backfill of
cutouts + anomaly_scores + latent_vectors through the GraphQL API, and lets the queue run it: one run per
partition, each with the multiprocess executor. Prints the machine, wall time, partitions per minute, failed
runs (target 0), peak concurrent runs, and peak memory (resident memory of every process of the deployment
summed, sampled every 0.5 s, and the largest single process).

Scoring uses a CI-sized wGAN with random weights unless --model names a trained one (a folder with the three
.safetensors files): the benchmark is about orchestration, not the scores.

Run it as a module from the repository root (it imports only ``ww_assets``; the servers come from
``ww_assets.harness.services``):

    python -m benchmarks.backfill_load                       # 120 partitions, SQLite instance
    python -m benchmarks.backfill_load --batches 200 --postgres --max-runs 8 --json out.json
    python -m benchmarks.backfill_load --batches 2 --batch-size 32  # a smoke run (a few minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from ww_assets.harness.services import REPO_ROOT
from ww_assets.machine import machine_info


def machine() -> dict:
    import dagster

    return {**machine_info(), "dagster": dagster.__version__}


class MemorySampler(threading.Thread):
    """Peak summed RSS of a process tree (and the largest single process), sampled every ``interval`` s."""

    def __init__(self, root_pid: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.root_pid, self.interval = root_pid, interval
        self.peak_total = self.peak_single = 0
        self.peak_processes = 0
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        while not self._halt.is_set():
            try:
                root = psutil.Process(self.root_pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += rss
                self.peak_single = max(self.peak_single, rss)
            self.peak_total = max(self.peak_total, total)
            self.peak_processes = max(self.peak_processes, len(procs))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def peak_overlap(spans) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    peak = cur = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.backfill_load", description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=120, help="image-batch partitions (default 120)")
    ap.add_argument("--batch-size", type=int, default=64, help="cutouts per batch (default 64)")
    ap.add_argument("--assets", default="cutouts,anomaly_scores,latent_vectors")
    ap.add_argument("--max-runs", type=int, default=None,
                    help="max concurrent runs (default: the instance yaml's, 4 locally / 8 in deploy/)")
    ap.add_argument("--step-processes", type=int, default=None,
                    help="multiprocess executor max_concurrent per run (default: Dagster's, = CPU count)")
    ap.add_argument("--postgres", action="store_true", help="deploy/dagster.yaml on a throw-away PostgreSQL")
    ap.add_argument("--model", default=None, help="folder with a trained wGAN (default: random CI-sized weights)")
    ap.add_argument("--device", default="cpu", help="scoring device (cpu, cuda, auto)")
    ap.add_argument("--work", default=None, help="working folder (default: a temp dir, removed afterwards)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)

    import contextlib

    import dagster as dg
    import yaml

    from ww_assets.harness import services as ops

    info = {"machine": machine(), "params": vars(args).copy()}
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ww-backfill-load-"))
    work.mkdir(parents=True, exist_ok=True)
    home, root, logs = work / "home", work / "data", work / "logs"
    root.mkdir(exist_ok=True)

    t = time.monotonic()
    from ww_assets.simulation.sample import build_sample

    sample = work / "sample"
    if not (sample / "sample.json").exists():
        build_sample(sample, size=args.batches * args.batch_size, n_batches=args.batches,
                     batch_size=args.batch_size, cutout_format="npy", thumbnails=False)
    batches = sorted(p.name for p in (sample / "cutouts").iterdir() if p.is_dir())
    info["sample_build_s"] = round(time.monotonic() - t, 1)

    from ww_assets.storage import StorageLayout

    model_dir = StorageLayout(root).model_dir
    if args.model:
        shutil.copytree(args.model, model_dir, dirs_exist_ok=True)
    elif not model_dir.exists():
        import torch

        from ww_assets.model.checkpoints import save_wgan
        from ww_assets.model.networks import WGAN, WGANConfig

        torch.manual_seed(0)
        save_wgan(WGAN(WGANConfig.preset("ci")).eval(), model_dir, card={"note": "random weights (benchmark)"})

    with contextlib.ExitStack() as stack:
        extra = {}  # the image source goes in the run config: WW_IMAGES_SOURCE would also start the sensor
        if args.postgres:
            pg = stack.enter_context(ops.postgres_server(logs))
            home.mkdir(exist_ok=True)
            (home / "dagster.yaml").write_text((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
            extra.update(DAGSTER_PG_HOST=pg.host, DAGSTER_PG_PORT=str(pg.port), DAGSTER_PG_USERNAME=pg.user,
                         DAGSTER_PG_PASSWORD="", DAGSTER_PG_DB=pg.db)
        else:
            ops.write_instance_yaml(home)
        if args.max_runs:
            config = yaml.safe_load((home / "dagster.yaml").read_text())
            config["concurrency"]["runs"]["max_concurrent_runs"] = args.max_runs
            (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        max_runs = yaml.safe_load((home / "dagster.yaml").read_text())["concurrency"]["runs"]["max_concurrent_runs"]
        env = ops.dagster_env(home, root, **extra)
        os.environ.update({k: v for k, v in env.items() if k.startswith("DAGSTER_PG_")})
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        new = [b for b in batches if not instance.has_dynamic_partition("image_batches", b)]
        if new:
            instance.add_dynamic_partitions("image_batches", new)

        multiprocess = {"max_concurrent": args.step_processes} if args.step_processes else {}
        run_config = {"execution": {"config": {"multiprocess": multiprocess}},
                      "resources": {"images": {"config": {"source": str(sample / "cutouts")}}},
                      "ops": {"score_batch": {"config": {"device": args.device}}}}
        server = stack.enter_context(ops.dagster_dev(env, logs))
        sampler = MemorySampler(server.service.proc.pid)
        sampler.start()
        started = time.monotonic()
        backfill_id = ops.launch_asset_backfill(server, args.assets.split(","), batches, run_config=run_config,
                                                title=f"load benchmark: {len(batches)} partitions")

        def backfill_runs():
            return instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))

        def finished():
            runs = backfill_runs()
            done = [r for r in runs if r.dagster_run.is_finished]
            return runs if len(runs) >= len(batches) and len(done) == len(runs) else None

        timed_out = False
        try:
            runs = ops.wait_until(finished, args.timeout, f"{len(batches)} runs", interval=2.0,
                                  service=server.service)
        except TimeoutError:
            timed_out, runs = True, backfill_runs()   # report what finished in the time allowed
        finally:
            wall = time.monotonic() - started
            sampler.stop()

    done_runs = [r for r in runs if r.dagster_run.is_finished]
    failed = [r.dagster_run.run_id for r in done_runs if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
    info["timed_out"] = timed_out
    info["finished_runs"] = len(done_runs)
    info.update({
        "partitions": len(batches), "images": len(batches) * args.batch_size, "runs": len(runs),
        "failed_runs": len(failed), "failed_run_ids": failed[:20],
        "wall_s": round(wall, 1), "partitions_per_min": round(len(done_runs) / wall * 60, 1),
        "peak_concurrent_runs": peak_overlap([(r.start_time, r.end_time) for r in done_runs if r.start_time]),
        "max_concurrent_runs_allowed": max_runs,
        "peak_rss_total_mib": round(sampler.peak_total / 2**20), "peak_rss_single_mib": round(sampler.peak_single / 2**20),
        "peak_processes": sampler.peak_processes,
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "storage": "postgres" if args.postgres else "sqlite",
    })
    m = info["machine"]
    print(f"machine: {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, load {m['load_average']} at "
          f"start -> {info['load_avg_at_end']} at end; Python {m['python']}, Dagster {m['dagster']}")
    print(f"backfill: {info['partitions']} partitions x {args.batch_size} images ({args.assets}), "
          f"{info['storage']} instance, queue limit {max_runs} runs, multiprocess executor per run")
    if timed_out:
        print(f"TIMED OUT after {info['wall_s']} s: {len(done_runs)} of {len(batches)} runs finished")
    print(f"wall time {info['wall_s']} s ({info['partitions_per_min']} partitions/min); failed runs "
          f"{info['failed_runs']} of {len(done_runs)} finished; peak {info['peak_concurrent_runs']} runs at once")
    print(f"peak memory: {info['peak_rss_total_mib']} MiB resident over all {info['peak_processes']} processes "
          f"(largest single process {info['peak_rss_single_mib']} MiB)")
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed or timed_out else 0


if __name__ == "__main__":
    sys.exit(main())
