"""Materialise every asset on the embedded sample: the README's first command (``make demo``).

Runs against the real Dagster instance (``DAGSTER_HOME``; the Makefile sets it to the repository root), so
``dagster dev`` afterwards shows every run, its logs, metadata and plots. The graph is walked in dependency
order: assets whose inputs are ready run together, unpartitioned ones in one run and partitioned ones in one run
per image batch, so the same code serves any graph shape.

    python -m ww_assets.demo [--size small] [--seed 20211] [--only-plan]
"""

from __future__ import annotations

import argparse
import sys
import time


def plan_phases(asset_graph) -> list[tuple[list, bool]]:
    """Group the graph's materialisable assets into phases: (keys, partitioned), in dependency order.

    Assets are taken in waves (every asset whose upstream assets are done); consecutive waves of the same kind
    (partitioned by image batch, or not) form one phase, run as one run (per batch when partitioned). A
    multi-asset's keys always stay together because they share their upstream assets.
    """
    keys = [k for k in asset_graph.toposorted_asset_keys if asset_graph.get(k).is_materializable]
    key_set = set(keys)
    remaining = set(keys)
    done: set = set()
    phases: list[tuple[list, bool]] = []
    while remaining:
        ready = [
            k for k in keys
            if k in remaining and all(p in done or p not in key_set for p in asset_graph.get(k).parent_keys)
        ]
        if not ready:  # pragma: no cover - a cycle would be a Dagster error long before this
            raise RuntimeError(f"cannot order assets: {sorted(k.to_user_string() for k in remaining)}")
        unpartitioned = [k for k in ready if asset_graph.get(k).partitions_def is None]
        chosen = unpartitioned or [k for k in ready if asset_graph.get(k).partitions_def is not None]
        partitioned = not unpartitioned
        if phases and phases[-1][1] == partitioned:  # one run can carry a whole chain of the same kind
            phases[-1][0].extend(chosen)
        else:
            phases.append((list(chosen), partitioned))
        done.update(chosen)
        remaining.difference_update(chosen)
    return phases


def run_config(size: str, seed: str) -> dict:
    """Quiet console logs, and the sample resource's size and seed (given as run config, so nothing here writes the
    environment)."""
    return {"loggers": {"console": {"config": {"log_level": "INFO"}}},
            "resources": {"sample": {"config": {"size": str(size), "seed": str(seed)}}}}


def main(argv: list[str] | None = None) -> int:
    from ww_assets import settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default=settings.raw("WW_SAMPLE_SIZE") or settings.SETTINGS["WW_SAMPLE_SIZE"].default,
                        help="embedded sample size: tiny, small (default), medium, large, or a number of images")
    parser.add_argument("--seed", default=settings.raw("WW_SAMPLE_SEED") or settings.SETTINGS["WW_SAMPLE_SEED"].default)
    parser.add_argument("--only-plan", action="store_true", help="print the phases and stop")
    args = parser.parse_args(argv)
    try:
        settings.check_value("WW_SAMPLE_SIZE", args.size, "--size")
        settings.check_value("WW_SAMPLE_SEED", args.seed, "--seed")
    except settings.SettingError as exc:
        parser.error(str(exc))

    import dagster as dg

    from ww_assets.defs.images.partitions import image_batches
    from ww_assets.definitions import defs
    from ww_assets.images.sources import batch_names

    graph = defs.resolve_asset_graph()
    phases = plan_phases(graph)
    for i, (keys, partitioned) in enumerate(phases, 1):
        print(f"phase {i} ({'per image batch' if partitioned else 'once'}): "
              + ", ".join(k.to_user_string() for k in keys))
    if args.only_plan:
        return 0

    from ww_assets.defs.ops.reclaim import reap_runs

    instance = dg.DagsterInstance.get()
    # execute_in_process bypasses the job's executor and its pool guard: hand back the slots of killed runs here
    for run_id, liveness in reap_runs(instance, by="make demo"):
        print(f"run {run_id} had died ({liveness.reason}): marked failed, its pool slots freed")
    job = defs.resolve_implicit_global_asset_job_def()
    resources = defs.resources
    sample = resources["sample"].model_copy(update={"size": str(args.size), "seed": str(args.seed)})
    layout = resources["storage"].layout
    layout.ensure_writable()
    sample.ensure(layout)
    config = run_config(args.size, args.seed)

    started = time.monotonic()
    for i, (keys, partitioned) in enumerate(phases, 1):
        if partitioned:
            images = resources["images"]
            batches = batch_names(images.images_root(layout, sample), images.release_dir())
            new = [b for b in batches if not instance.has_dynamic_partition(image_batches.name, b)]
            if new:
                instance.add_dynamic_partitions(image_batches.name, new)
            partition_keys = batches
        else:
            partition_keys = [None]
        for pk in partition_keys:
            label = ", ".join(k.to_user_string() for k in keys) + (f" [{pk}]" if pk else "")
            print(f"--> phase {i}: {label}", flush=True)
            result = job.execute_in_process(instance=instance, asset_selection=keys, partition_key=pk,
                                            run_config=config, raise_on_error=False)
            if not result.success:
                print(f"FAILED: {label} (run {result.run_id}); see the run's logs in `make ui`", file=sys.stderr)
                return 1
    print(f"every asset materialised on the '{args.size}' sample in {time.monotonic() - started:.0f} s; "
          f"open the UI with `make ui` (http://127.0.0.1:3000); plots are in {layout.plots_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
