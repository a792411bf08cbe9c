"""The benchmark's report: ``README.md`` and ``results.json`` from the measured results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lossbench.bench.losses import FLOOR_BOUND, MEMORY_RESOLUTION_MIB, REGION
from lossbench.io import write_json_atomic, write_text_atomic


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return format(v, spec)


def _md(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _where(shape: dict[str, Any]) -> str:
    s, d = shape["size"], shape.get("depth")
    return f"{s}²" if d is None else f"{d}×{s}×{s} (volumes)"


def _losses_md(shape: dict[str, Any]) -> list[str]:
    b, c, s, d = shape["b"], shape["c"], shape["size"], shape.get("depth")
    grid = f"{s}×{s}" if d is None else f"{d}×{s}×{s} volumes"
    parts = [f"## Losses at B={b}, C={c}, {grid} ({shape['device']})", ""]
    if shape.get("no_volume_form"):
        parts += ["References without a volume form (they raise on a 5-D input), left out here: "
                  + ", ".join(shape["no_volume_form"]) + ".", ""]  # fmt: skip
    rows = []
    for v in shape["verdicts"]:
        met = {True: "yes", False: "**no**", None: "—"}[v["met"]]
        rows.append(
            [
                f"`{v['definition']}`",
                _fmt(v["ours_ms"], ".1f"),
                f"{v['ref']} {_fmt(v['ref_ms'], '.1f')}" if v["ref"] else "—",
                _fmt(v["speed_ratio"]) + ("×" if v["speed_ratio"] is not None else ""),
                _fmt(v["floor_ratio"], ".1f") + "×",
                _fmt(v["ours_mib"], ".0f"),
                f"{_fmt(v['mem_ratio'])}× ({v['mem_ref']})" if v["mem_ratio"] is not None else "—",
                _fmt(v["max_value_diff"], ".1e"),
                met,
            ]
        )
    parts.append(
        _md(["definition", "ours ms", "fastest same-definition reference, ms", "speed ratio", "vs floor",
             "ours MiB", "memory ratio", "max \\|Δ value\\|", "target met"], rows)  # fmt: skip
    )
    parts += ["", "<details><summary>every implementation</summary>", ""]
    parts.append(
        _md(
            ["definition", "implementation", "same definition", "ms", "MiB", "value", "note"],
            [
                [f"`{r['definition']}`", r["impl"], "yes" if r["same"] else "no", _fmt(r["ms"], ".1f"),
                 _fmt(r["mib"], ".0f"), _fmt(r["value"], ".5f"), r["note"]]
                for r in shape["rows"]
            ],  # fmt: skip
        )
    )
    return parts + ["", "</details>", ""]


def _training_md(t: dict[str, Any]) -> list[str]:
    return [
        "## Training loop",
        "",
        f"`{t['config']}` ({t['model']}, batch {t['batch_size']}, {t['images_per_epoch']} images per epoch, "
        f"loss `dice`), {t['epochs']} epochs each, first epoch excluded; plain loop measured before and after.",
        "",
        _md(
            ["plain PyTorch loop, images/s", "lossbench train, images/s", "overhead", "target ≤ 10 %",
             "plain loop waiting for data"],
            [[_fmt(t["plain_images_per_s"], ".1f"), _fmt(t["lossbench_images_per_s"], ".1f"),
              f"{100 * t['overhead']:.1f} %", "yes" if t["met"] else "**no**", f"{100 * t['data_wait_share']:.1f} % of its time"]],
        ),  # fmt: skip
        "",
    ]


def _data_md(d: dict[str, Any]) -> list[str]:
    h, w = d["size"]
    rh, rw = d["resize"]
    return [
        "## Data pipeline",
        "",
        f"A folder dataset of {d['images']} RGB PNGs of {w}×{h} (11 classes and a void label), decoded once into the "
        f"cache, then read through the training transforms: resize to {rw}×{rh}, flip, rescale ×[0.75, 1.25], crop "
        f"{rw}×{rh}, normalisation; {d['workers']} loader workers (`num_workers: auto`); model of `{d['config']}`, "
        "loss `dice`, first epoch excluded.",
        "",
        _md(
            ["decode into the cache, images/s", "training loader alone, images/s", "training loop, images/s",
             "loop waiting for data", "target < 5 %"],
            [[_fmt(d["decode_images_per_s"], ".1f"), _fmt(d["loader_images_per_s"], ".1f"), _fmt(d["loop_images_per_s"], ".1f"),
              f"{100 * d['data_wait_share']:.1f} % of its time", "yes" if d["met"] else "**no**"]],
        ),  # fmt: skip
        "",
    ]


def _synthetic_md(rows: list[dict[str, Any]]) -> list[str]:
    return [
        "## Synthetic data",
        "",
        "Generation time per image of the synthetic set on one core (every shape drawn in its own bounding box).",
        "",
        _md(["image size", "ms per image", "target"],
            [[f"{r['size']}²", _fmt(r["ms_per_image"], ".2f"),
              "—" if r["met"] is None else f"≤ {r['target_ms']:g} ms: {'yes' if r['met'] else '**no**'}"] for r in rows]),  # fmt: skip
        "",
    ]


def _evaluation_md(e: dict[str, Any]) -> list[str]:
    h, w = e["size"]
    return [
        "## The test's metrics",
        "",
        f"What every test image costs beyond the forward pass — per-class counts, HD95 and NSD, focus-class objects — on "
        f"{e['images']} street scenes of {h}×{w} (12 classes, an early model's prediction: edges a few pixels off, 1 % "
        "speckle), best of three passes. Reference: SciPy's distance transform for every class, as before the k-d tree; "
        "the same numbers bit for bit.",
        "",
        _md(["ms per image", "reference ms per image", "ratio"],
            [[_fmt(e["ms_per_image"], ".1f"), _fmt(e["reference_ms_per_image"], ".1f"), f"{e['ratio']:.2f}×"]]),  # fmt: skip
        "",
    ]


def _verdict_md(results: dict[str, Any]) -> list[str]:
    t = results.get("training")
    misses = [f"`{v['definition']}` at {_where(sh)}" for sh in results["losses"] for v in sh["verdicts"] if v["met"] is False]
    if t and not t["met"]:
        misses.append("training overhead")
    if results.get("data") and not results["data"]["met"]:
        misses.append("data wait")
    misses += [f"synthetic data at {r['size']}²" for r in results.get("synthetic", []) if r["met"] is False]
    return ["## Verdict", "", "Every target is met." if not misses else "Not met: " + ", ".join(misses) + "."]


def _device_sections(results: dict[str, Any]) -> list[str]:
    parts = []
    for shape in results["losses"]:
        parts += _losses_md(shape)
    if results.get("training"):
        parts += _training_md(results["training"])
    if results.get("data"):
        parts += _data_md(results["data"])
    if results.get("evaluation"):
        parts += _evaluation_md(results["evaluation"])
    if results.get("synthetic"):
        parts += _synthetic_md(results["synthetic"])
    return parts + _verdict_md(results)


def write_bench_report(results: dict[str, Any], report: Path) -> Path:
    parts = [
        "# lossbench benchmark",
        "",
        f"Generated by `make bench` on {results['machine']}; torch {results['torch']}. All ratios come from "
        "measurements taken in the same run (cases interleaved), so they hold where absolute times do not. "
        "Forward + backward, best of the repeats; memory is the rise of peak memory during one call, measured "
        "in a fresh process.",
        "",
        "Targets: every loss at most 1.0× the fastest reference computing the same definition, and no more memory; "
        f"every region loss ({', '.join(REGION)}) and {' and '.join(d for d in FLOOR_BOUND if d not in REGION)} "
        "within 3× the floor (softmax + sum); "
        "lovasz_softmax at most 1.0× kornia's. Memory counts as met within the measurement's resolution "
        f"({MEMORY_RESOLUTION_MIB:.0f} MiB).",
        "",
    ]
    parts += _device_sections(results)
    for device, other in (results.get("other_devices") or {}).items():
        parts += ["", f"# On {device}: {other['machine']}, torch {other['torch']}", "",
                  "Measured by an earlier `make bench` on that machine, kept beside this run's rows.", ""]  # fmt: skip
        parts += _device_sections(other)
    if results.get("notes"):
        parts += ["", *results["notes"]]
    parts += ["", "Reproduce: `make bench` (or `.venv/bin/python -m lossbench.bench --report reports/bench`).", ""]
    report.mkdir(parents=True, exist_ok=True)
    write_text_atomic(report / "README.md", "\n".join(parts))
    write_json_atomic(report / "results.json", results)
    return report / "README.md"
