"""The code location: everything under ``ww_assets/defs/`` (autoloaded), and the executor.

Loaded by ``dagster dev`` / ``dg dev`` (workspace.yaml, ``[tool.dg]`` in pyproject.toml) and by
``dagster asset materialize -m ww_assets.definitions``. The executor is the one place a deployment choice is made
(``WW_EXECUTOR``, ``ww_assets.defs.ops.executor``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import dagster as dg

from ww_assets.defs.ops.executor import executor_from_env, guarded_executor

PACKAGE_ROOT = Path(__file__).resolve().parent


def _load_defs() -> dg.Definitions:
    # In a checkout (or an editable install) [tool.dg] in pyproject.toml names the defs folder; an installed wheel
    # has no pyproject.toml beside it, so the same folder is loaded from the package itself.
    if (PACKAGE_ROOT.parent / "pyproject.toml").is_file():
        return dg.load_from_defs_folder(path_within_project=PACKAGE_ROOT.parent)
    tree = dg.ComponentTree.from_module(defs_module=importlib.import_module("ww_assets.defs"),
                                        project_root=PACKAGE_ROOT.parent)
    return tree.build_defs()


def _definitions() -> dg.Definitions:
    # Built in a function: Dagster's module discovery (`-m ww_assets.definitions`, workspace.yaml) refuses a module
    # holding more than one Definitions object at module scope.
    autoloaded = _load_defs()
    executor = guarded_executor(executor_from_env(assets=autoloaded.assets or ()))  # pool guard: ops/executor.py
    return dg.Definitions.merge(autoloaded, dg.Definitions(executor=executor))


defs = _definitions()
