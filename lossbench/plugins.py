"""Loading user losses: modules named under ``plugins:`` in a config, and the ``lossbench.losses`` entry points.

A plugin is any module that applies ``@register_loss`` when imported: an importable module name
(``my_pkg.losses``) or a path to a ``.py`` file (written in a config file: relative to that file's
folder, as :func:`lossbench.config.load_config` reads it; otherwise relative to the working directory).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
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
            except Exception as e:
                del sys.modules[name]
                raise _plugin_error(plugin, e) from None
        else:
            try:
                importlib.import_module(plugin)
            except ModuleNotFoundError as e:
                raise ValueError(f"plugin module {plugin!r} cannot be imported: {e}") from None
            except Exception as e:
                raise _plugin_error(plugin, e) from None


def _plugin_error(plugin: str, e: Exception) -> ValueError:
    """One sentence naming the plugin, the file and line, and what went wrong."""
    if isinstance(e, SyntaxError):
        return ValueError(f"plugin {plugin!r} has a syntax error in {e.filename}, line {e.lineno}: {e.msg}")
    frames = traceback.extract_tb(e.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename] or frames
    where = f" ({user[-1].filename}, line {user[-1].lineno})" if user else ""
    return ValueError(f"plugin {plugin!r} failed while being imported{where}: {type(e).__name__}: {e}")
