"""The suite config: :mod:`~lossbench.config.schema` (the typed sections and the rules between them) and
:mod:`~lossbench.config.loading` (YAML, ``--set`` overrides, path anchoring, the packaged suites). Every public
name of both is importable from here, as it was when this was one module.

A suite config is a YAML file (the examples are ``experiments/``, shipped as ``lossbench/suites``
and found by name: ``--config default``). :func:`load_config` reads it, applies
``--set key=value`` overrides and validates the whole of it against :class:`SuiteConfig` before
anything runs: an unknown key (with the closest valid one), a wrong type, a value out of range, a
duplicate loss label or a trainer key ``lightning.Trainer`` does not take is one sentence naming the
file and the key. Defaults and their meaning live on the fields below.

A run's resolved config (:class:`RunConfig`, its ``config.yaml``) and its hash are
:mod:`lossbench.identity`'s; which losses and seeds a suite runs is :mod:`lossbench.plan`'s.
"""

from lossbench.config.schema import (
    GPU_ACCELERATORS,
    IGNORE_COLOUR_KEY,
    LAUNCHERS,
    SEED_LEVEL_MIN,
    SYNTHETIC_CLASSES,
    SYNTHETIC_VOLUME_CLASSES,
    TUNABLE_DATA_KEYS,
    TUNABLE_SECTIONS,
    AugmentConfig,
    ConfigError,
    DataConfig,
    LauncherConfig,
    LossEntry,
    ModelConfig,
    OptimConfig,
    RaceConfig,
    Range,
    ReportConfig,
    RunConfig,
    RunSections,
    SuiteConfig,
    TrainerConfig,
    TuneConfig,
    VolumeConfig,
    WandbConfig,
    check_jobs,
    check_jobs_per_gpu,
    deep_merge,
    explain,
    reject_duplicates,
    safe_name,
    trainer_arguments,
    with_settings,
)
from lossbench.config.loading import (
    MAX_YAML_VALUES,
    SUITES_DIR,
    YamlTooLarge,
    anchor_paths,
    dump_shown,
    dump_yaml,
    find_config,
    load_config,
    load_run_config,
    packaged_suites,
    parse_overrides,
    read_yaml_mapping,
    validate_config,
    yaml_load,
)
from lossbench.config.classes import read_class_list

__all__ = [
    "GPU_ACCELERATORS", "IGNORE_COLOUR_KEY", "LAUNCHERS", "MAX_YAML_VALUES", "SEED_LEVEL_MIN", "SUITES_DIR",
    "SYNTHETIC_CLASSES", "SYNTHETIC_VOLUME_CLASSES", "TUNABLE_DATA_KEYS", "TUNABLE_SECTIONS", "AugmentConfig",
    "ConfigError", "DataConfig", "LauncherConfig", "LossEntry", "ModelConfig", "OptimConfig", "RaceConfig", "Range",
    "ReportConfig", "RunConfig", "RunSections", "SuiteConfig", "TrainerConfig", "TuneConfig", "VolumeConfig",
    "WandbConfig", "YamlTooLarge", "anchor_paths", "check_jobs", "check_jobs_per_gpu", "deep_merge", "dump_shown",
    "dump_yaml", "explain", "find_config", "load_config", "load_run_config", "packaged_suites", "parse_overrides",
    "read_class_list", "read_yaml_mapping", "reject_duplicates", "safe_name", "trainer_arguments",
    "validate_config", "with_settings", "yaml_load",
]  # fmt: skip
