"""Loading user losses: modules named under ``plugins:`` in a config, and the ``lossbench.losses`` entry points.

A plugin is any module that applies ``@register_loss`` when imported: an importable module name
(``my_pkg.losses``) or a path to a ``.py`` file (relative to the working directory).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path


def load_plugins(plugins: Iterable[str]) -> None:
    """Import each plugin once (and every ``lossbench.losses`` entry point); errors say which plugin."""
    for ep in entry_points(group="lossbench.losses"):
        ep.load()
    for plugin in plugins:
        if str(plugin).endswith(".py"):
            path = Path(plugin).resolve()
            if not path.is_file():
                raise ValueError(f"plugin file {plugin!r} does not exist")
            name = f"lossbench_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}"
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception:
                del sys.modules[name]
                raise
        else:
            try:
                importlib.import_module(plugin)
            except ModuleNotFoundError as e:
                raise ValueError(f"plugin module {plugin!r} cannot be imported: {e}") from None
