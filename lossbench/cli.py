"""The ``lossbench`` command: ``train`` one run, ``compare`` a suite, ``report`` results, list ``losses``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lossbench.config import ConfigError


def _split_list(text: str | None, cast=str) -> list | None:
    if text is None:
        return None
    try:
        return [cast(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"expected a comma-separated list, got {text!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="suite config (YAML), e.g. experiments/smoke.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. --set trainer.max_epochs=1 trainer.devices=2 trainer.strategy=ddp",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossbench",
        description="Train the same segmentation model once per loss on imbalanced data, and compare.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train and test one (loss, seed) run")
    _common(p)
    p.add_argument("--loss", required=True, help="registry name, or the label of an entry under losses: in the config")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--out", default=None, help="output root (default runs/<suite>); the run goes to <out>/<loss>/seed<seed>-<hash>")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser("compare", help="train every (loss, seed) of a suite, each in its own process, then report")
    _common(p)
    p.add_argument("--losses", help="comma-separated losses: labels from the config or any registered name (default: the config's)")
    p.add_argument("--seeds", help="comma-separated seeds (default: the config's seeds)")
    p.add_argument("--out", default=None, help="where runs go (default runs/<suite>); may be shared by several machines")
    p.add_argument("--report", default=None, help="where the report goes (default reports/<suite>)")
    p.add_argument("--jobs", type=int, default=None, help="runs at once (default: the config's jobs, else 1)")
    p.add_argument("--retry-failed", action="store_true", help="train failed runs again, from scratch")
    p.add_argument("--no-wandb", action="store_true", help="do not log the summary table to W&B")

    p = sub.add_parser("report", help="write the comparison report from the runs in --out")
    p.add_argument("--out", required=True, help="the runs folder of a suite")
    p.add_argument("--report", required=True, help="where to write README.md, results.csv and plots")
    p.add_argument("--no-wandb", action="store_true", help="do not log the summary table to W&B")

    sub.add_parser("losses", help="list the registered losses and their parameters")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from lossbench.config import load_config, loss_entry, run_config
    from lossbench.losses import get_loss_spec
    from lossbench.plugins import load_plugins
    from lossbench.run import run_dir_for, train_run

    cfg = load_config(args.config, args.overrides)
    load_plugins(cfg["plugins"])
    entries = [loss_entry(e) for e in cfg["losses"]]
    entry = next((e for e in entries if e["label"] == args.loss), None) or next(
        (e for e in entries if e["name"] == args.loss), None
    )
    entry = entry or loss_entry(args.loss)
    get_loss_spec(entry["name"])  # unknown names fail here, with the list of known ones
    run_cfg = run_config(cfg, entry, args.seed)
    out = Path(args.out or Path("runs") / cfg["suite"])
    run_dir = run_dir_for(out, run_cfg)
    record = train_run(run_cfg, run_dir, progress=not args.no_progress)
    if record["status"] == "ok":
        test = record["test"]
        print(f"{entry['label']} seed {args.seed}: test mIoU {test['miou']:.4f} -> {run_dir / 'metrics.json'}")
        for name, row in test["per_class"].items():
            print(f"  {name:>12}: IoU {row['iou']:.4f}  sensitivity {row['sensitivity']:.4f}  specificity {row['specificity']:.4f}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from lossbench.config import load_config
    from lossbench.report import write_report
    from lossbench.suite import run_suite

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out or Path("runs") / cfg["suite"])
    report = Path(args.report or Path("reports") / cfg["suite"])
    losses, seeds = _split_list(args.losses), _split_list(args.seeds, int)
    run_suite(cfg, args.config, args.overrides, out, losses, seeds, args.jobs, args.retry_failed)
    write_report(out, report, log_to_wandb=not args.no_wandb)
    print(f"report: {report / 'README.md'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lossbench.report import write_report

    write_report(Path(args.out), Path(args.report), log_to_wandb=not args.no_wandb)
    print(f"report: {Path(args.report) / 'README.md'}")
    return 0


def cmd_losses(args: argparse.Namespace) -> int:
    from lossbench.losses import get_loss_spec, list_losses

    for name in list_losses():
        spec = get_loss_spec(name)
        params = ", ".join(f"{k}={v!r}" for k, v in spec.defaults.items() if k != "ignore_index")
        print(f"{name:16} {spec.description}\n{'':16} params: {params or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_SILENT", "true")
    args = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "compare": cmd_compare, "report": cmd_report, "losses": cmd_losses}
    try:
        return handlers[args.command](args)
    except (ConfigError, ValueError) as e:
        print(f"lossbench: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"lossbench: run failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lossbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
