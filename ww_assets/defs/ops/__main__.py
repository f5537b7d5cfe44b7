"""``python -m ww_assets.defs.ops``: mark dead runs failed and free their pool slots, once (no daemon needed)."""

import sys

import dagster as dg

from ww_assets.defs.ops.sensors import is_single_host_instance, reap_dead_runs


def main() -> int:
    with dg.DagsterInstance.get() as instance:
        if not is_single_host_instance(instance):
            print("instance storage is not SQLite: runs may live on other machines; use Dagster's run monitoring "
                  "instead (deploy/README.md)", file=sys.stderr)
            return 2
        reaped = reap_dead_runs(instance)
        for r in reaped:
            print(f"{r.run_id}: {r.reason}; marked failed, pool slots freed")
        print(f"{len(reaped)} dead run(s) found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
