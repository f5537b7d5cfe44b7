"""The sensor that notices new image batches, adds each as a partition and asks for its scoring."""

import json
import time

import dagster as dg

from ww_assets import settings
from ww_assets.defs.images.partitions import image_batches
from ww_assets.defs.resources import ImageSourceResource, SampleResource, StorageResource
from ww_assets.images.sources import scan_batches
from ww_assets.storage import StorageLayout

#: what a new batch runs: its cutouts and scores; a published-release batch has no images to read
SCORING_ASSETS = ("cutouts", "anomaly_scores", "latent_vectors")
RELEASE_ASSETS = ("anomaly_scores", "latent_vectors")


def _default_status() -> dg.DefaultSensorStatus:
    # Running by default only when the user pointed the pipeline at real data (presence only: the values are
    # checked when the sensor runs); the embedded sample is registered by the demo.
    configured = (settings.raw("WW_IMAGES_SOURCE") or "sample").strip().lower() != "sample" \
        or settings.is_set("WW_RELEASE_DIR")
    return dg.DefaultSensorStatus.RUNNING if configured else dg.DefaultSensorStatus.STOPPED


def evaluate_new_batches(instance: dg.DagsterInstance, cursor: str | None, images: ImageSourceResource,
                         layout: StorageLayout, sample: SampleResource | None, now: float | None = None):
    """The sensor's decision, as a function a test can call: (SensorResult or SkipReason, log lines)."""
    now = time.time() if now is None else now
    root = images.images_root(layout, sample) if (not images.is_sample or sample is not None
                                                  or images.sample_built(layout)) else None
    scan = scan_batches(root, images.release_dir())
    seen: dict[str, str] = json.loads(cursor) if cursor else {}
    registered = set(instance.get_dynamic_partitions(image_batches.name))
    try:
        scored = set(instance.get_materialized_partitions(dg.AssetKey("anomaly_scores")))
    except Exception:  # noqa: BLE001 - an instance that has never seen the asset
        scored = set()
    to_add, requests, settling = [], [], []
    new_cursor = dict(seen)
    for batch, (fp, newest, kind) in sorted(scan.batches.items()):
        if now - newest < images.settle_seconds:
            settling.append(batch)
            continue
        if batch not in registered:
            to_add.append(batch)
        if seen.get(batch) == fp:
            continue
        new_cursor[batch] = fp
        if batch not in seen and batch in scored:
            continue   # scored before the sensor knew it (e.g. by the demo): remember it, do not re-score
        assets = SCORING_ASSETS if kind == "images" else RELEASE_ASSETS
        requests.append(dg.RunRequest(run_key=f"{batch}:{fp}", partition_key=batch,
                                      asset_selection=[dg.AssetKey(a) for a in assets],
                                      tags={"ww/batch": batch, "ww/trigger": "new" if batch not in seen else "changed"}))
    logs = list(scan.problems)
    if images.is_sample and root is None:
        logs.append(f"images.source is 'sample' and no sample is built yet under {layout.sample_dir} "
                    "(`make demo` builds it)")
    if settling:
        logs.append(f"waiting for {len(settling)} batch folder(s) still changing: {', '.join(settling[:5])}")
    if not to_add and not requests:
        return dg.SkipReason("no new or changed image batches" + (f" ({'; '.join(logs)})" if logs else "")), logs
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[image_batches.build_add_request(to_add)] if to_add else [],
        cursor=json.dumps(new_cursor, sort_keys=True),
    ), logs


@dg.sensor(
    name="new_image_batches",
    job_name="score_image_batches",
    minimum_interval_seconds=60,
    default_status=_default_status(),
    description=(
        "Watches the image source for new (or changed) batch folders and the release folder for new CSV/npy pairs; "
        "adds each as an image_batches partition and requests its cutouts + scoring run. Batches scored before the "
        "sensor first saw them are remembered, not re-scored. Running by default only when WW_IMAGES_SOURCE or "
        "WW_RELEASE_DIR is set."),
)
def new_image_batches(context: dg.SensorEvaluationContext, storage: StorageResource, images: ImageSourceResource):
    # The sensor never builds the embedded sample (minutes of simulation in a sensor tick): with source "sample"
    # it registers the sample's batches once something (the demo, a cutouts run) has built it.
    result, logs = evaluate_new_batches(context.instance, context.cursor, images, storage.layout, None)
    for line in logs:
        context.log.warning(line)
    return result
