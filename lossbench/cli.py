"""The ``lossbench`` command: ``init`` a config for your data, ``train`` one run, ``compare`` a suite,
``report`` results, ``status`` of a runs folder, list ``losses``."""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from pathlib import Path

from lossbench.config import LAUNCHERS, ConfigError, check_jobs
from lossbench.progress import plural


def _split_list(text: str | None, cast=str) -> list | None:
    if text is None:
        return None
    try:
        return [cast(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"expected a comma-separated list, got {text!r}") from None


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config values (YAML values; 1e-3 is a number), e.g. --set trainer.max_epochs=1 optim.lr=1e-3",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossbench",
        description="Train the same segmentation model once per loss on imbalanced data, and compare.",
    )
    parser.add_argument("--version", action="version", version=f"lossbench {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train and test one (loss, seed) run")
    p.add_argument("--config", help="suite config (YAML), e.g. experiments/smoke.yaml")
    _overrides(p)
    p.add_argument("--loss", help="a label of an entry under losses: in the config, or a registered loss name")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--out", default=None, help="runs folder (default runs/<suite>); the run goes to <out>/<label>/seed<seed>-<hash>")
    p.add_argument("--run-dir", default=None, help="instead of --config/--loss/--seed: train the run whose resolved config is RUN_DIR/config.yaml (what compare does)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser("compare", help="train every (loss, seed) of a suite, each in its own process, then report")
    p.add_argument("--config", required=True, help="suite config (YAML), e.g. experiments/default.yaml")
    _overrides(p)
    p.add_argument("--losses", help="comma-separated losses: labels from the config or registered names (default: the config's)")
    p.add_argument("--seeds", help="comma-separated seeds (default: the config's seeds)")
    p.add_argument("--out", default=None, help="where runs go (default runs/<suite>); may be shared by several machines")
    p.add_argument("--report", default=None, help="where the report goes (default reports/<suite>)")
    p.add_argument("--jobs", type=_jobs_arg, default=None,
                   help="runs at once on this machine: auto (one per GPU group of trainer.devices GPUs; one at a time "
                        "on the CPU), N, or -1 for one per CPU core (default: the config's jobs)")  # fmt: skip
    p.add_argument("--launcher", choices=LAUNCHERS, default=None,
                   help="where runs train: local processes, SLURM jobs (one job array, through submitit), or "
                        "submitit's local executor (default: the config's launcher.kind, local)")  # fmt: skip
    p.add_argument("--detach", action="store_true",
                   help="with --launcher slurm: return once the jobs are submitted (no report); "
                        "the same compare again waits for them and reports")  # fmt: skip
    p.add_argument("--retry-failed", action="store_true", help="train failed runs again, from scratch")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (the file with --set applied and every default filled in) and stop")
    p.add_argument("--dry-run", action="store_true",
                   help="check the config, read the data and build every loss, list the runs to train, and stop")  # fmt: skip
    p.add_argument("--no-wandb", action="store_true", help="do not log the summary table to W&B")

    p = sub.add_parser("status", help="show every run of a runs folder: queued, running, finished, failed")
    p.add_argument("--config", default=None, help="the suite config: --out defaults to runs/<suite>")
    _overrides(p)
    p.add_argument("--out", default=None, help="the runs folder of a suite (compare's --out)")

    p = sub.add_parser("report", help="write the comparison report from the runs in --out")
    p.add_argument("--config", default=None, help="the suite config: --out and --report default to runs/<suite> and reports/<suite>")
    _overrides(p)
    p.add_argument("--out", default=None, help="the runs folder of a suite")
    p.add_argument("--report", default=None, help="where to write README.md, results.csv and plots")
    p.add_argument("--no-wandb", action="store_true", help="do not log the summary table to W&B")

    p = sub.add_parser("init", help="write a commented suite config for your own data folder (classes, sizes, a measured time)")
    p.add_argument("--data", required=True, help="your data folder: train/ val/ test/, each with images/ and masks/")
    p.add_argument("--config", default=None, help="the config file to write (default ./<data folder name>.yaml)")
    p.add_argument("--minutes", type=_minutes_arg, default=None,
                   help="propose a plan that fits this long on this machine (epochs, input size, losses, seeds; what it gave up is said)")
    p.add_argument("--losses", default=None, help="your favourite losses, comma-separated: listed first and kept longest when --minutes trims")
    p.add_argument("--void", type=int, default=None, help="the mask value that marks void pixels (data.ignore_index)")
    p.add_argument("--no-estimate", action="store_true", help="skip the timed training steps (no time estimate)")
    p.add_argument("--force", action="store_true", help="replace the config file if it exists")

    p = sub.add_parser("losses", help="list the registered losses and their parameters")
    p.add_argument("--config", default=None, help="also list the losses of this suite config's plugins")
    return parser


def _minutes_arg(text: str) -> float:
    """``init --minutes``: a finite number of minutes above 0, told before any data is read."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes above 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of minutes above 0, got {text!r}")
    if value > MAX_INIT_MINUTES:  # 1e308 minutes overflowed the plan's arithmetic to NaN
        raise argparse.ArgumentTypeError(f"expected at most {MAX_INIT_MINUTES:,} minutes (a year), got {text!r}")
    return value


MAX_INIT_MINUTES = 525_600
"""The longest budget ``init --minutes`` plans for: a year."""


def _jobs_arg(text: str) -> int | str:
    """``--jobs``, checked by the rule of the config's ``jobs``."""
    try:
        value: int | str = int(text)
    except ValueError:
        value = text
    try:
        return check_jobs(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_train(args: argparse.Namespace) -> int:
    from lossbench.claim import TOKEN_ENV
    from lossbench.run import run_process

    token = os.environ.get(TOKEN_ENV)  # set by compare, which claimed the run for this process
    progress = not args.no_progress
    if args.run_dir:
        if args.config or args.loss:
            raise ConfigError("--run-dir trains the run described in its config.yaml; leave out --config and --loss")
        return run_process(Path(args.run_dir), token, progress)
    from lossbench.identity import run_config
    from lossbench.plan import resolve_losses
    from lossbench.plugins import load_plugins
    from lossbench.record import run_dir_for
    from lossbench.config import load_config

    if not args.config or not args.loss:
        raise ConfigError("train needs --config and --loss (or --run-dir)")
    cfg = load_config(args.config, args.overrides)
    load_plugins(cfg.plugins)
    (entry,) = resolve_losses(cfg, [args.loss])
    run_cfg = run_config(cfg, entry, args.seed)
    run_dir = run_dir_for(Path(args.out or Path("runs") / cfg.suite), run_cfg)
    return run_process(run_dir, token, progress, run_cfg)


def cmd_compare(args: argparse.Namespace) -> int:
    from lossbench.config import load_config
    from lossbench.launch import own_scratch

    cfg = load_config(args.config, args.overrides)
    if args.detach and (args.launcher or cfg.launcher.kind) == "local":  # it was silently ignored
        raise ConfigError("--detach needs jobs that outlive compare (--launcher slurm or submitit-local); the local "
                          "launcher trains in compare's own processes, so there is nothing to detach")  # fmt: skip
    if (args.launcher or cfg.launcher.kind) == "local":
        # the runs are this process's children: give them a temporary folder that a killed compare leaves as one
        # folder, which the next removes; jobs (SLURM, submitit) outlive a detached compare and keep their own TMPDIR
        own_scratch()
    from lossbench.record import FAILED, OK, read_status
    from lossbench.report import write_report
    from lossbench.suite import run_suite

    if args.print_config:
        from lossbench.config import dump_shown

        print(dump_shown(cfg), end="")
        return 0
    out = Path(args.out or Path("runs") / cfg.suite)
    report = Path(args.report or Path("reports") / cfg.suite)
    _check_writable(report, "--report", "the report")  # before any training: the report is written after it all
    losses, seeds = _split_list(args.losses), _split_list(args.seeds, int)
    if args.dry_run:
        return _dry_run(cfg, out, losses, seeds, args.retry_failed)
    runs = run_suite(cfg, out, losses, seeds, args.jobs, args.retry_failed, args.launcher, args.detach)
    if args.detach and any(read_status(run.run_dir) not in (OK, FAILED) for run in runs):
        return 0
    if cfg.race is not None and (losses or seeds):
        print("race: not run for a suite narrowed by --losses or --seeds; compare without them to race")
    elif cfg.race is not None:
        runs = _race(cfg, out, args, runs)
        if args.detach and any(read_status(run.run_dir) not in (OK, FAILED) for run in runs):
            return 0
    asked = ({run.label for run in runs}, {run.seed for run in runs}) if losses or seeds else None
    write_report(out, report, log_to_wandb=not args.no_wandb, asked=asked)
    print(f"report: {report / 'README.md'}")
    from lossbench.report.summary import offline_note

    note = offline_note(cfg, out)
    if note:
        print(note)
    from lossbench.plan import SEARCH

    statuses = {run.run_dir: read_status(run.run_dir) for run in runs}
    diverged = [run for run in runs if run.role == SEARCH and statuses[run.run_dir] == FAILED]
    if diverged:  # a setting a loss cannot train at is a finding of the search, not a failure of the suite
        print(f"{len(diverged)} search point(s) failed and could not be selected: {', '.join(map(str, diverged))}")
    not_ok = [run for run in runs if statuses[run.run_dir] != OK and run not in diverged]
    if not_ok:
        print(f"lossbench: {len(not_ok)} of {plural(len(runs), 'run')} did not finish ok: {', '.join(map(str, not_ok))}", file=sys.stderr)
        return 1
    return 0


def _race(cfg, out: Path, args: argparse.Namespace, runs: list) -> list:
    """A raced suite's later rounds (:mod:`lossbench.report.race`): judge the rounds whose runs exist, train what
    the next asks for — ordinary planned runs of the suite, so what is done is never trained again — until the
    race ends (detached: once a round is submitted; the next compare judges it)."""
    from lossbench.plan import race_seeds
    from lossbench.record import FAILED, OK, read_status
    from lossbench.report.analyse import analyse
    from lossbench.report.gather import collect_runs
    from lossbench.suite import run_suite

    asked = None
    while True:
        budgets = analyse(collect_runs(out)).budgets
        race = budgets[-1].race if budgets else None
        if race is None:
            print("race: no run of the last budget has evidence to race on")
            return runs
        for i, r in enumerate(race.rounds, 1):
            out_ = ", ".join(sorted(r.ruled_out)) or "none"
            print(f"race: round {i} ({r.seeds} seeds per loss, level {r.alpha:.4f}, {len(r.racing)} racing): ruled out {out_}")
        if race.next is None:
            print(f"race: ended ({race.ended}); best set: {', '.join(race.left)}")
            return runs
        if race.next == asked:  # the round's runs were asked for and are still not there
            print(f"race: round {len(race.rounds) + 1}'s runs did not end ok or failed; the race waits for them "
                  "(lossbench status shows why; rerun compare to go on)")  # fmt: skip
            return runs
        asked = race.next
        losses, n = race.next
        print(f"race: round {len(race.rounds) + 1} trains {n} seeds per loss for {plural(len(losses), 'loss', 'losses')}: "
              f"{', '.join(losses)}")  # fmt: skip
        more = run_suite(cfg, out, losses, race_seeds(cfg, n), args.jobs, args.retry_failed, args.launcher, args.detach)
        have = {run.run_dir for run in runs}
        runs = [*runs, *(run for run in more if run.run_dir not in have)]
        if args.detach and any(read_status(run.run_dir) not in (OK, FAILED) for run in more):
            return runs


def _dry_run(cfg, out: Path, losses: list[str] | None, seeds: list[int] | None, retry_failed: bool) -> int:
    """``compare --dry-run``: every check compare makes before training, then the runs it would train
    (:func:`lossbench.suite.runs_to_train`, which only reads); nothing is written under ``out``."""
    from lossbench.record import OK, read_status
    from lossbench.suite import checked_plan, runs_to_train

    narrowed = bool(losses or seeds)
    runs = checked_plan(cfg, out, losses, seeds)
    todo, _ = runs_to_train(runs, retry_failed, print)
    done = sum(read_status(run.run_dir) == OK for run in runs)
    losses, these = plural(len({r.label for r in runs}), "loss", "losses"), "this one" if len(todo) == 1 else f"these {len(todo)}"
    print(f"dry run: the config, the data and {losses} check{'s' if len({r.label for r in runs}) == 1 else ''} out; "
          f"{done} of {plural(len(runs), 'run')} {'is' if len(runs) == 1 else 'are'} done, {these} would train into {out}:")  # fmt: skip
    for run in todo:
        print(f"  {run}")
    if cfg.race is not None and not narrowed:
        from lossbench.plan import race_schedule

        schedule = race_schedule(cfg)
        most = sum(len({r.label for r in runs}) * (b - a) for a, b in zip(schedule, schedule[1:])) * len(cfg.budget_list())
        print(f"race: then rounds of {schedule} seeds per loss train more seeds only for the losses still in the best set "
              f"(at most {plural(most, 'more run')}" + (f", race.max_runs {cfg.race.max_runs} in all" if cfg.race.max_runs else "")
              + (f"; a round only when the pace so far leaves room within race.max_minutes {cfg.race.max_minutes:g}"
                 if cfg.race.max_minutes else "") + ")")  # fmt: skip
    if cfg.tune is not None:
        from lossbench.plan import resolve_seeds

        print(f"then each loss's selected point on seeds {resolve_seeds(cfg, seeds)}, once its search has finished "
              "(at most one run per loss and seed; none where the selected point is the suite's own settings)")  # fmt: skip
    return 0


def _suite_of(out: Path):
    """The suite a runs folder holds (``None``: none, or a damaged ``suite.yaml``)."""
    from lossbench.record import load_suite

    try:
        return load_suite(out)
    except ConfigError:
        return None


def _version() -> str:
    from lossbench import __version__

    return __version__


def _check_writable(folder: Path, flag: str, what: str) -> None:
    """One sentence, before any work, when ``folder`` cannot take files (:func:`lossbench.io.folder_problem`)."""
    from lossbench.io import folder_problem

    why = folder_problem(folder)
    if why:
        raise ConfigError(f"{flag} {folder}: {what} cannot be written there ({why}); choose another folder")


def cmd_report(args: argparse.Namespace) -> int:
    from lossbench.config import load_config
    from lossbench.record import load_suite, suite_path
    from lossbench.report import write_report

    out, report, settings = args.out, args.report, None
    if args.config:
        cfg = load_config(args.config, args.overrides)
        out, report = out or Path("runs") / cfg.suite, report or Path("reports") / cfg.suite
        folder = load_suite(Path(out))
        if folder is not None:
            from lossbench.suite import suite_differences

            differs = suite_differences(cfg, folder)
            if differs:
                raise ConfigError(f"--config {args.config} is not the suite whose runs are in {out} ({suite_path(Path(out))} "
                                  f"differs in {', '.join(differs)}): run compare with this config first, or report the "
                                  f"folder's own suite with --out {out} alone")  # fmt: skip
        settings = cfg.report
    elif args.overrides:
        bad = [o for o in args.overrides if not o.split("=", 1)[0].strip().startswith("report.")]
        if bad:
            raise ConfigError(f"report --set without --config changes only the report: section (report.focus, "
                              f"report.bootstrap, ...), got {bad[0]!r}; a run setting needs compare")  # fmt: skip
        if out and load_suite(Path(out)) is None:
            raise ConfigError(f"report --set needs the suite file {suite_path(Path(out))}, which is not there: pass --config")
        if out:
            settings = load_config(suite_path(Path(out)), args.overrides).report
    if not out or not report:
        raise ConfigError("report needs --out and --report, or --config to name the suite they default from")
    _check_writable(Path(report), "--report", "the report")
    write_report(Path(out), Path(report), log_to_wandb=not args.no_wandb, settings=settings)
    print(f"report: {Path(report) / 'README.md'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from lossbench.status import folder_status, format_status

    out = args.out
    if args.config and not out:
        from lossbench.config import load_config

        out = Path("runs") / load_config(args.config, args.overrides).suite
        if not out.is_dir():
            print(f"no runs yet: {out} does not exist (lossbench compare --config {args.config} creates it)")
            return 0
    if not out:
        raise ConfigError("status needs --out, or --config to name the suite whose runs/<suite> it reads")
    out = Path(out)
    if not out.is_dir():
        raise ConfigError(f"--out {out} is not a folder")
    print(format_status(folder_status(out), _suite_of(out)))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from lossbench.init import write_config

    print(f"lossbench init: reading {args.data} …", flush=True)
    favourites = _split_list(args.losses)
    if favourites:
        from lossbench.losses import list_losses

        known = [spec if isinstance(spec, str) else spec.name for spec in list_losses()]
        unknown = [k for k in favourites if k not in known]
        if unknown:
            raise ConfigError(f"--losses names {unknown[0]!r}, which is not a loss lossbench knows (lossbench losses lists them)")
        import inspect

        from lossbench.losses import get_loss_spec

        for name in favourites:  # P82: a recipe (`sum`, ...) needs its parts, which a bare name cannot give
            spec = get_loss_spec(name)
            needs = [p.name for p in list(inspect.signature(spec.cls.__init__).parameters.values())[1:]
                     if p.default is inspect.Parameter.empty and p.name != "num_classes"
                     and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]  # fmt: skip
            if needs:
                raise ConfigError(f"--losses names {name!r}, which needs {', '.join(needs)} (a recipe of other losses): "
                                  f"init writes bare names; add it to the config's losses: with its {needs[0]} "
                                  f"(lossbench losses {name} shows how)")  # fmt: skip
    path, note = write_config(args.data, args.config, args.minutes, args.force, not args.no_estimate, favourites, args.void)
    print(f"wrote {path}: {note}")
    print(f"next: lossbench compare --config {path} --dry-run   (checks everything, trains nothing); then without --dry-run")
    return 0


def cmd_losses(args: argparse.Namespace) -> int:
    from lossbench.losses import get_loss_spec, list_losses
    from lossbench.plugins import load_plugins

    plugins = []
    if args.config:
        from lossbench.config import load_config

        plugins = load_config(args.config).plugins
    load_plugins(plugins)  # and the lossbench.losses entry points
    for name in list_losses():
        spec = get_loss_spec(name)
        params = ", ".join(k if v is inspect.Parameter.empty else f"{k}={v!r}"  # a bare name: required
                           for k, v in spec.defaults.items() if k != "ignore_index")  # fmt: skip
        origin = "" if spec.cls.__module__.startswith("lossbench.losses.") else f"  [{spec.cls.__module__.removeprefix('lossbench_plugin_')}]"
        print(f"{name:16} {spec.description}{origin}\n{'':16} params: {params or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_SILENT", "true")
    args = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "compare": cmd_compare, "report": cmd_report, "status": cmd_status, "init": cmd_init,
                "losses": cmd_losses}  # fmt: skip
    from lossbench.errors import SuiteError, exit_status

    try:
        code = handlers[args.command](args)
        sys.stdout.flush()  # here, where a reader that left (a closed pipe) is caught, not at exit
        return code
    except SuiteError as e:
        print(f"lossbench: error: {e}", file=sys.stderr)
        return 1
    except (ConfigError, ValueError, FloatingPointError, KeyboardInterrupt) as e:
        return exit_status(e)
    except BrokenPipeError:  # `lossbench losses | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (PermissionError, IsADirectoryError, NotADirectoryError) as e:  # P68: a file or folder that cannot be read
        where = f" {e.filename}" if e.filename else ""
        print(f"lossbench: error: cannot use{where}: {e.strerror or e} — check its permissions (it must be readable, "
              "and a folder searchable, by this user)", file=sys.stderr)  # fmt: skip
        return 2
    except OSError as e:
        import errno

        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" at {e.filename}" if e.filename else ""  # P59: a data cache on a full disk
        print(f"lossbench: error: no space left{where}: free space there, or point data.cache_dir (or --out) at a disk "
              "with room, and run the same command again", file=sys.stderr)  # fmt: skip
        return 2
    except RuntimeError as e:
        if "Symlink loop" not in str(e):  # P69: pathlib's own words for a link that points back at itself
            raise
        print(f"lossbench: error: {str(e).split('from', 1)[-1].strip()} is a symbolic link loop (it points back at "
              "itself through other links); point it at a real file or folder", file=sys.stderr)  # fmt: skip
        return 2


if __name__ == "__main__":
    sys.exit(main())
