"""Reading suite configs: YAML (safely, with a bound on alias expansion), ``--set`` overrides, relative paths
anchored to the file that wrote them, the example suites shipped in the package, and writing configs back.

:func:`load_config` reads a file (or a packaged suite by name), applies overrides and validates the whole of
it against :class:`~lossbench.config.schema.SuiteConfig` before anything runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lossbench.config.schema import ConfigError, RunConfig, SuiteConfig, deep_merge, explain


# --- YAML -----------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-3`` is a number, not the string ``'1e-3'``."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


MAX_YAML_VALUES = 100_000
"""The most values a config may hold once its aliases are expanded (a config has hundreds)."""


class YamlTooLarge(yaml.YAMLError):
    """A YAML document whose aliases expand past :data:`MAX_YAML_VALUES` (a "billion laughs")."""

    def __init__(self, values: int):
        super().__init__(f"its aliases expand to more than {values:,} values (nested aliases of aliases); write the values out")
        self.problem = str(self)


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """How many values ``node`` holds with every alias expanded, counted without expanding anything (each
    node's count is computed once); stops with :class:`YamlTooLarge` past ``limit``."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        sizes[id(n)] = 1  # a node that contains itself (a recursive alias) counts once
        if isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in n.value)
        elif isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        else:
            total = 1
        if total > limit:
            raise YamlTooLarge(limit)
        sizes[id(n)] = total
        return total

    return size(node)


class DuplicateKey(yaml.YAMLError):
    """A mapping that names one key twice: YAML keeps the last silently (a second ``trainer:`` section replaced the
    first whole)."""

    def __init__(self, key: str, first: int, second: int):
        super().__init__(f"the key {key!r} appears twice, on lines {first} and {second}: the second would silently "
                         "replace the first; keep one (merge the two)")  # fmt: skip
        self.problem = str(self)


def _no_duplicate_keys(node: yaml.Node) -> None:
    """Refuse a mapping anywhere in ``node`` whose scalar keys repeat (``<<`` merge keys aside)."""
    seen_nodes: set[int] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if id(n) in seen_nodes:
            continue
        seen_nodes.add(id(n))
        if isinstance(n, yaml.MappingNode):
            lines: dict[str, int] = {}
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                    if k.value in lines:
                        raise DuplicateKey(k.value, lines[k.value], k.start_mark.line + 1)
                    lines[k.value] = k.start_mark.line + 1
                stack += [k, v]
        elif isinstance(n, yaml.SequenceNode):
            stack += n.value


def yaml_load(text: str) -> Any:
    """Parse YAML text as configs are parsed (YAML 1.2 numbers), refusing a document whose aliases expand
    past :data:`MAX_YAML_VALUES` values before anything expands them."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, MAX_YAML_VALUES)
        _no_duplicate_keys(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["trainer.max_epochs=1", "optim.lr=1e-3"]`` → nested dict; values are parsed as YAML (``1e-3`` is a number)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set expects key=value with a dotted key, got {item!r}")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with another --set on {part!r}")
        try:
            node[parts[-1]] = yaml_load(raw) if raw != "" else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({e.problem})") from None
    return out


SUITES_DIR = Path(__file__).parents[1] / "suites"
"""The example suites (``experiments/`` in the repository; shipped in the wheel): ``--config default``."""


def packaged_suites() -> list[str]:
    """The names of the example suites that ``--config NAME`` finds wherever lossbench is installed."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def find_config(path: str | Path) -> Path:
    """The config file ``path`` names: the file itself, else (a bare name such as ``default``) the
    packaged example suite of that name; otherwise a :class:`ConfigError` saying where it looked."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        raise ConfigError(f"--config {str(path)!r} is a folder; expected a suite's YAML file (a runs folder keeps its "
                          f"suite as {os.path.join(str(path), 'suite.yaml')})")  # fmt: skip
    if p.parent == Path(".") and not p.suffix and (SUITES_DIR / f"{p.name}.yaml").is_file():
        return SUITES_DIR / f"{p.name}.yaml"
    where = f" (resolved to {Path(os.path.abspath(p))})" if not p.is_absolute() else ""
    raise ConfigError(f"config file {str(path)!r} does not exist{where}; the packaged example suites are "
                      f"named {', '.join(packaged_suites())} (e.g. --config default)")  # fmt: skip


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file; a missing file, bad YAML or a non-mapping is a :class:`ConfigError`."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {str(p)!r} is a folder; expected a YAML file")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        raw = yaml_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    return raw


def anchor_paths(raw: Mapping[str, Any], base: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """``raw`` with its relative file paths — ``data.path`` and the ``.py`` entries of ``plugins`` —
    read from the folder ``base`` (a config file's folder, or the working directory for ``--set``);
    also ``{resolved: as written}`` for the messages. Other keys (``data.cache_dir``, like ``--out``)
    stay relative to the working directory."""
    out, written = dict(raw), {}

    def anchored(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        resolved = os.path.abspath(base / Path(value).expanduser())
        written[resolved] = value
        return resolved

    if isinstance(out.get("data"), Mapping) and "path" in out["data"]:
        out["data"] = {**out["data"], "path": anchored(out["data"]["path"])}
    if isinstance(out.get("plugins"), list):
        out["plugins"] = [anchored(p) if isinstance(p, str) and p.endswith(".py") else p for p in out["plugins"]]
    return out, written


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> SuiteConfig:
    """Read a suite config (a file, or a packaged example suite by name: :func:`find_config`), apply
    ``--set`` overrides and validate it; the suite name defaults to the file's stem.

    Relative paths written in the file are read from the file's folder, those given with ``--set``
    from the working directory (:func:`anchor_paths`), as Hydra and mmsegmentation read theirs.
    """
    written: dict[str, str] = {}
    raw: dict[str, Any] = {}
    if path is not None:
        path = find_config(path)
        raw, written = anchor_paths(read_yaml_mapping(path), path.parent)
    overrides = list(overrides)
    given, written_set = anchor_paths(parse_overrides(overrides), Path.cwd())
    raw = deep_merge(raw, given)
    written.update(written_set)
    raw.setdefault("suite", Path(path).stem if path is not None else "adhoc")
    source = f"config {str(path)!r}" if path is not None else "config"
    if overrides:
        source += " with --set " + " ".join(overrides)
    data = raw.get("data") if isinstance(raw.get("data"), Mapping) else {}
    folder = data.get("path")
    if data.get("kind") == "folder" and isinstance(folder, str) and folder and not Path(folder).is_dir():
        shown = written.get(folder, folder)
        where = f" (resolved to {folder})" if shown != folder else ""
        raise ConfigError(f"{source}: data.path {shown!r} does not exist{where}")
    return validate_config(raw, source)


def validate_config(raw: Mapping[str, Any], source: str = "config") -> SuiteConfig:
    """A :class:`SuiteConfig` from a mapping, or a :class:`ConfigError` naming ``source`` and the key."""
    try:
        return SuiteConfig.model_validate(dict(raw))
    except ValidationError as e:
        raise explain(e, source) from None


def load_run_config(path: str | Path) -> RunConfig:
    """A run's resolved ``config.yaml``."""
    try:
        return RunConfig.model_validate(read_yaml_mapping(path))
    except ValidationError as e:
        raise explain(e, f"run config {str(path)!r}") from None


def dump_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


_SYNTHETIC_KEYS = ("seed", "image_size", "num_train", "num_val", "num_test", "imbalance", "noise")
_DATA_KEYS_UNUSED = {
    "synthetic": ("path", "class_names", "ignore_index", "palette", "target", "kwargs", "volumes"),
    "folder": (*_SYNTHETIC_KEYS, "target", "kwargs", "volumes"),
    "python": (*_SYNTHETIC_KEYS, "path", "palette", "volumes"),
    "volumes": (*_SYNTHETIC_KEYS, "palette", "target", "kwargs", "resize", "crop", "augment", "normalize"),
    "synthetic_volumes": ("path", "class_names", "ignore_index", "palette", "target", "kwargs", "resize", "crop", "augment",
                          "normalize"),
}  # fmt: skip
"""The ``data`` keys each kind of data does not read (``--print-config`` leaves them out)."""


def dump_shown(config: SuiteConfig) -> str:
    """The resolved config as ``--print-config`` shows it: every key, except the ``data`` keys its kind of data does
    not read (a folder suite shows no synthetic image size)."""
    dumped = config.model_dump(mode="json")
    dumped["data"] = {k: v for k, v in dumped["data"].items() if k not in _DATA_KEYS_UNUSED[config.data.kind]}
    return yaml.safe_dump(dumped, sort_keys=False)
