"""Presenting results: JSON files, terminal tables, the comparison's markdown report and its figures.

Everything here renders data it is given; nothing measures or trains. The markdown report is rendered from the
same dictionary that is written as ``report.json``, so the two cannot disagree. Figures use matplotlib's
object-oriented API on the Agg canvas (no pyplot, no global state) and are written atomically.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stereodeploy.data.io import atomic_write, colorize, error_map, to_jsonable
from stereodeploy.frameworks import FRAMEWORKS, label

if TYPE_CHECKING:
    from stereodeploy.engine.shipped import ShippedModel
    from stereodeploy.study.evaluate import EvalResult



def difference_formula(reference: str, other: str) -> str:
    """How Table I's difference of framework ``other`` against ``reference`` (keys) is computed, in words."""
    ref, oth = label(reference), label(other)
    return f"100 × (T_{oth} − T_{ref}) / T_{ref}; positive: {oth} took longer than {ref}"


# --------------------------------------------------------------------------------------------------------------
# Number formatting shared by the terminal and markdown tables


def fmt(value: float | None, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals; ``n/a`` for a missing or undefined number."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_signed(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}"


# --------------------------------------------------------------------------------------------------------------
# Terminal


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, align: str = "",
               width: int | None = None, key_columns: int = 1, footer: Sequence[Sequence[str]] = (),
               title: str = "", caption: str = "") -> str:
    """A plain-text table that never cuts a cell: columns padded to their widest cell, separated by two spaces.

    ``width`` ``None``: one block however wide (for pipes and files). With a ``width``, columns that do not fit
    go to further blocks below, each repeating the first ``key_columns`` columns (the row names), so every
    line fits unless a single column with the keys is wider than ``width`` itself; the title and caption
    wrap at ``width``. ``align`` has one letter per column, ``l`` or ``r`` (default: first left, others
    right); ``footer`` rows come after a rule (averages, totals).
    """
    import textwrap

    n = len(headers)
    align = align or "l" + "r" * (n - 1)
    if len(align) != n or any(len(r) != n for r in (*rows, *footer)):
        raise ValueError("every row and the align string need one entry per header")
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, *footer)]
    keys = list(range(min(key_columns, n)))
    blocks: list[list[int]] = []
    for col in range(len(keys), n):
        current = blocks[-1] if blocks else None
        used = sum(widths[c] + 2 for c in keys + (current or [])) + widths[col]
        if current is not None and (width is None or used <= width):
            current.append(col)
        else:
            blocks.append([col])
    if not blocks:
        blocks = [[]]

    def line(cells: Sequence[str], cols: list[int]) -> str:
        parts = [str(cells[c]).ljust(widths[c]) if align[c] == "l" else str(cells[c]).rjust(widths[c])
                 for c in cols]
        return "  ".join(parts).rstrip()

    def wrap(text: str) -> list[str]:
        if not text:
            return []
        return textwrap.wrap(text, width) if width else [text]

    out = wrap(title)
    for i, block in enumerate(blocks):
        cols = keys + block
        if i or out:
            out.append("")
        rule = "  ".join("-" * widths[c] for c in cols)
        out += [line(headers, cols), rule] + [line(r, cols) for r in rows]
        if footer:
            out += [rule] + [line(r, cols) for r in footer]
    if caption:
        out += [""] + wrap(caption)
    return "\n".join(out) + "\n"


def render_eval_table(result: EvalResult, width: int | None = None, terminal: bool | None = None) -> str:
    """One evaluation as text for the terminal or a pipe: a row per frame, then the averages and mean times.

    No number is ever cut short. ``terminal`` (default: whether stdout is a terminal) picks the layout: on a
    terminal the table wraps at ``width`` (default: the terminal's width) by moving columns to further blocks
    that repeat the frame names (:func:`text_table`); otherwise it is one plain block with every column, for
    ``grep``, ``column -t`` and files. Headers are ASCII: ``>=3`` is the study's rule on the best ground truth,
    ``>3 noc`` / ``D1 noc`` KITTI's rules on non-occluded (and ``occ`` all) ground truth, ``>=3 valid`` the
    study's rule on the pixels the matcher answered itself (not filled), ``dens`` the percentage of those, times
    in seconds.
    """
    width = _text_width(width, terminal)
    t = f"{result.threshold:g}"
    kinds = [k for k in ("noc", "occ") if any(f"kitti_{k}" in i.metrics for i in result.images)]
    headers = ["frame", "D", f">={t}", f">={t} valid"]
    for kind in kinds:
        headers += [f">{t} {kind}", f"D1 {kind}"]
    headers += ["dens", "feat", "match", "total"]
    stages = ("features", "matching", "total")
    rows = []
    for img in result.images:
        cells = [img.name, str(img.max_disp), fmt(img.error_rate), fmt(img.metrics.get("error_rate_valid"))]
        for kind in kinds:
            cells += [fmt(img.metrics.get(f"kitti_{kind}")), fmt(img.metrics.get(f"d1_{kind}"))]
        rows.append(cells + [fmt(img.density, 1)] + [fmt(img.seconds.get(k), 3) for k in stages])
    avg, sec = result.averages(), result.mean_stage_seconds()
    mean = [f"mean of {len(result.images)}", "", fmt(result.average_error_rate), fmt(avg.get("error_rate_valid"))]
    for kind in kinds:
        mean += [fmt(avg.get(f"kitti_{kind}")), fmt(avg.get(f"d1_{kind}"))]
    mean += [fmt(avg.get("density"), 1)] + [fmt(sec.get(k), 3) for k in stages]
    caption = (f"error rates in %: >={t} the study's rule on the best ground truth"
               + (f", >{t} KITTI and D1 KITTI 2015 on {'/'.join(kinds)} ground truth" if kinds else "")
               + f"; >={t} valid: the same on the pixels the matcher answered itself (not filled after the "
               "left-right check); dens = % of pixels so answered; D = max disparity; times in seconds")
    return text_table(headers, rows, footer=[mean], width=width,
                      title=f"{result.model} - {result.backend} - post-processing {result.postprocess}",
                      caption=caption)


# --------------------------------------------------------------------------------------------------------------
# Comparison tables (plain data, shared by report.json and report.md)


def models_table(models: Sequence[ShippedModel], width: int | None = 80) -> str:
    """The text `stereodeploy models` prints: one row per model (see :func:`text_table`), wrapped at ``width``,
    then the folder the files are in on a line of its own (whole, so that it can be copied, however long)."""
    headers = ["name", "from", "weights", "max disp", "network", "frames", "size"]
    rows = [[m.name + (" (default)" if m.default else ""), m.source_framework, "int8" if m.quantization else "float32",
             str(m.max_disp), m.network_short, str(m.training_frames), f"{m.size_bytes / 1e6:.2f} MB"]
            for m in models]
    text = text_table(headers, rows, align="lllrlrr", width=width,
                      caption="from: the framework that trained it; network: layers x maps, kernel; frames: "
                              "training frames. --model takes a name (e.g. mccnn_fast_torch) or a path; the default "
                              "is used when --model is not given (STEREODEPLOY_MODEL overrides it). The files are in:")
    folders = sorted({str(m.path.parent) for m in models})
    return text + "".join(f"{folder}\n" for folder in folders)


def interleaved_line(report: Mapping[str, Any]) -> str:
    """The frameworks' median step times measured taking turns (comparable on a shared machine), or ""."""
    bench = report.get("interleaved_steps")
    if not bench or not bench.get("rounds"):
        return ""
    labels = {r["key"]: r["framework"] for r in report.get("table1", {}).get("rows", []) if "key" in r}
    times = ", ".join(f"{labels.get(k, k)} {fmt(1000 * t, 1)} ms" for k, t in bench["median_step_seconds"].items()
                      if t is not None)
    load = bench.get("load_average") or [None, None]
    threads = report.get("configuration", {}).get("threads", {}).get("text", "")
    return (f"Interleaved step time (median of {bench['rounds']} rounds, the frameworks taking turns on the same "
            f"batches, load average {fmt(load[0], 1)} -> {fmt(load[-1], 1)}{'; ' + threads if threads else ''}): "
            f"{times}")


def comparison_text(report: Mapping[str, Any], width: int | None = None, terminal: bool | None = None) -> str:
    """Table I (training time) and Table II (error rate and time per depth map) of a comparison report as text,
    laid out as :func:`render_eval_table` does (no number cut; wrapped on a terminal, one block in a pipe);
    :func:`markdown` writes the full report."""
    width = _text_width(width, terminal)
    rows1 = [[r["framework"], fmt(r["total_seconds"]), fmt(r["mean_epoch_seconds"], 3),
              fmt(1000 * r["mean_step_seconds"], 3)] for r in report["table1"]["rows"]]
    diff = report["table1"]["difference_percent"]
    t1 = text_table(["framework", "total (s)", "mean epoch (s)", "mean step (ms)"], rows1, width=width,
                    footer=[["difference (%)", *(fmt_signed(diff.get(k)) for k in TABLE1_KEYS)]],
                    title="Table I: training time")
    if interleaved_line(report):
        t1 += "".join(line + "\n" for line in (textwrap.wrap(interleaved_line(report), width) if width else
                                                [interleaved_line(report)]))
    times = {(r["runtime"], r["postprocess"]): r["mean_seconds"] for r in report["execution_time"]["rows"]}
    rows2 = [[r["runtime"], r["postprocess"], fmt(r["single_image_error"]), fmt(r["average_error_rate"]),
              fmt(times[(r["runtime"], r["postprocess"])], 3)] for r in report["table2"]["rows"]]
    t2 = text_table(["runtime", "post-processing", report["table2"]["single_image"], "whole set", "time (s)"], rows2,
                    align="llrrr", width=width, key_columns=2,
                    title="Table II: error rate (%) and time per depth map")
    return t1 + "\n" + t2


def _text_width(width: int | None, terminal: bool | None) -> int | None:
    """The width a text table wraps at: None (one block) unless writing to a terminal, whose width is the
    default."""
    import shutil
    import sys

    if terminal is None:
        terminal = sys.stdout.isatty()
    if not terminal:
        return None
    return width if width is not None else shutil.get_terminal_size().columns


def percent_difference(value: float | None, reference: float | None) -> float | None:
    """``100 * (value - reference) / reference`` (see :func:`difference_formula`); ``None`` when undefined."""
    if value is None or reference is None or not reference:
        return None
    return 100.0 * (value - reference) / reference


TABLE1_KEYS = ("total_seconds", "mean_epoch_seconds", "mean_step_seconds")


def training_table(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Table I: total training time, mean epoch time and mean network + optimisation step time per framework,
    and the percentage difference of every other framework against the reference, the first of the registry
    (:data:`~stereodeploy.frameworks.FRAMEWORKS`) that has a summary.

    ``differences`` maps each other framework's key to its differences; ``difference_percent`` and
    ``difference_formula`` are those of the first other framework (the one difference row of two frameworks).
    """
    rows = [{"framework": label(key), "key": key,
             **{k: s.get(k) for k in (*TABLE1_KEYS, "examples_per_second", "epochs", "device")}}
            for key, s in summaries.items()]
    present = [key for key in FRAMEWORKS if key in summaries]
    differences: dict[str, dict[str, float | None]] = {}
    formulas: dict[str, str] = {}
    if len(present) > 1:
        reference = present[0]
        for other in present[1:]:
            differences[other] = {k: percent_difference(summaries[other].get(k), summaries[reference].get(k))
                                  for k in TABLE1_KEYS}
            formulas[other] = difference_formula(reference, other)
    first = next(iter(differences), None)
    return {"rows": rows, "difference_percent": differences.get(first, {}),
            "difference_formula": formulas.get(first, ""), "differences": differences,
            "difference_formulas": formulas}


# --------------------------------------------------------------------------------------------------------------
# Markdown


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks[a] for a in align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _kv_lines(data: Mapping[str, Any]) -> list[str]:
    return [f"- {k}: {json.dumps(to_jsonable(v)) if isinstance(v, (dict, list)) else v}" for k, v in data.items()]


def markdown(report: Mapping[str, Any]) -> str:
    """Render the comparison report (the dictionary written as report.json) as markdown."""
    out = [f"# {report.get('title', 'Comparison')}", ""]
    out += [f"Created {report.get('created', '')} with stereodeploy {report.get('stereodeploy', '')}.", ""]
    data = report.get("data", {})
    if data:
        out += [(f"Trained on {len(data.get('train_frames', []))} frames ({data.get('train_examples', 'n/a')} "
                 f"examples); evaluated on {len(data.get('eval_frames', []))} frames: "
                 f"{', '.join(data.get('eval_frames', []))}.")]
        if data.get("overlap"):
            out += [f"**Warning:** evaluation frames also used for training: {', '.join(data['overlap'])}."]
        out += [""]
    for warning in report.get("warnings", []):
        out += [f"**Warning:** {warning}.", ""]

    t1 = report.get("table1")
    if t1:
        out += ["## Table I: training time", ""]
        rows = [[r["framework"], fmt(r.get("total_seconds"), 2), fmt(r.get("mean_epoch_seconds"), 3),
                 fmt(None if r.get("mean_step_seconds") is None else 1000 * r["mean_step_seconds"], 3),
                 fmt(r.get("examples_per_second"), 0)] for r in t1["rows"]]
        differences = t1.get("differences") or (
            {"": t1["difference_percent"]} if t1.get("difference_percent") else {})
        formulas = t1.get("difference_formulas") or {"": t1.get("difference_formula", "")}
        for key, diff in differences.items():
            name = "Difference (%)" if len(differences) == 1 else f"Difference {label(key)} (%)"
            rows.append([name, *(fmt_signed(diff.get(k), 1) for k in TABLE1_KEYS), ""])
        out += _md_table(["Framework", "Total (s)", "Mean epoch (s)", "Mean step (ms)", "Examples/s"], rows)
        said = "; ".join(f for f in formulas.values() if f)
        out += [((f"Difference = {said}. " if said else "") + "A step is one network forward, "
                 "backward and SGD update on a batch, timed after the device synchronised; the epoch and total times "
                 "include batch assembly but not validation."), ""]
        if interleaved_line(report):
            out += [interleaved_line(report) + ".", ""]
    figures = report.get("figures", {})
    if figures.get("accuracy"):
        out += [f"![Patch accuracy per epoch]({figures['accuracy']})", ""]

    t2 = report.get("table2")
    if t2:
        single = t2.get("single_image", "")
        n = t2.get("images", 0)
        threshold = report.get("configuration", {}).get("threshold", 3)
        out += [f"## Table II: error rate (%), |d − gt| ≥ {threshold:g} px", ""]
        rows = [[r["runtime"], r["postprocess"], fmt(r.get("single_image_error")), fmt(r.get("average_error_rate")),
                 fmt(r.get("kitti_average")), fmt(r.get("d1_average")), fmt(r.get("density"), 1)]
                for r in t2["rows"]]
        out += _md_table(["Runtime", "Post-processing", f"{single} (single image)", f"Whole set ({n} images)",
                          "> 3 px (KITTI)", "D1 (KITTI 2015)", "Density (%)"], rows, "llrrrrr")
        out += [(f"Error: the study's rule (|d − gt| ≥ 3 px counts as wrong) over the pixels with ground truth "
                 f"({t2.get('ground_truth', 'non-occluded where known')}); missing predictions count as wrong. "
                 "The whole-set value is the mean of the per-image rates. KITTI columns use the "
                 f"{t2.get('kitti_kind', 'noc')} ground truth."), ""]

    tt = report.get("execution_time")
    if tt:
        out += ["## Execution time per depth map (s)", ""]
        rows = [[r["runtime"], r["postprocess"], fmt(r.get("mean_seconds"), 3), fmt(r.get("features_seconds"), 3),
                 fmt(r.get("matching_seconds"), 3)] for r in tt["rows"]]
        out += _md_table(["Runtime", "Post-processing", "Total", "Features", "Matching"], rows, "llrrr")
        out += [(f"Mean over the {tt.get('images', 0)} evaluation images at their own size, after one untimed "
                 "warm-up frame; features = the network on both images, matching = cost volume, winner-take-all and "
                 "any post-processing."), ""]

    if figures.get("disparity") or figures.get("error"):
        out += ["## Figures", ""]
        if figures.get("disparity"):
            single = report.get("table2", {}).get("single_image", "")
            out += [f"![Disparity of {single} per runtime]({figures['disparity']})", ""]
        if figures.get("error"):
            out += [f"![Error maps]({figures['error']})", ""]

    exported = report.get("export")
    if exported:
        out += ["## Export", ""]
        out += [f"- {label(k)} → `{v['path']}`: largest difference against native "
                f"{label(k)} features {v['max_abs_diff']:.2e}" for k, v in exported.items()]
        out += [""]
    for section, title in (("machine", "Machine"), ("versions", "Versions"), ("configuration", "Configuration")):
        if report.get(section):
            out += [f"## {title}", "", *_kv_lines(report[section]), ""]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------------------------------------------
# Figures


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _save(fig: Any, path: str | Path, overwrite: bool) -> Path:
    with atomic_write(path, overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def plot_accuracy(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path,
                  overwrite: bool = False) -> Path:
    """Patch accuracy per epoch of every framework on one plot (and validation error, where logged).

    ``histories`` maps a framework key (``torch``/``tf``) to its metrics.jsonl rows.
    """
    from matplotlib.ticker import MaxNLocator

    fig = _figure(6.4, 4.6)
    ax = fig.add_subplot()
    ax2 = None
    # distinct markers and dashes, so identical curves (same weights, same batches) stay visible
    styles = [("o", "-", 7), ("x", "--", 9), ("s", ":", 6), ("+", "-.", 9)]
    for i, (key, rows) in enumerate(histories.items()):
        name = label(key)
        marker, dash, size = styles[i % len(styles)]
        epochs = [r["epoch"] + 1 for r in rows]
        ax.plot(epochs, [100 * r["accuracy"] for r in rows], marker=marker, linestyle=dash, markersize=size,
                color=f"C{i}", label=f"{name} patch accuracy")
        val = [r.get("validation_error") for r in rows]
        if any(v is not None for v in val):
            ax2 = ax2 or ax.twinx()
            ax2.plot(epochs, [math.nan if v is None else v for v in val], marker=marker, linestyle=dash,
                     markersize=size, color=f"C{i + 2}", alpha=0.8, label=f"{name} validation error")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("patch accuracy (%)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if ax2 is not None:
        ax2.set_ylabel("validation error ≥3 px (%)")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.set_title("MC-CNN fast: accuracy per epoch")
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))  # room for the legend below the axes
    return _save(fig, path, overwrite)


def _grid(n_rows: int, n_cols: int, tile_w: float, tile_h: float):
    fig = _figure(max(3.0, n_cols * tile_w), max(2.0, n_rows * tile_h + 0.4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def plot_disparities(gt: np.ndarray, disparities: Mapping[tuple[str, str], np.ndarray], max_disp: float,
                     path: str | Path, title: str = "", overwrite: bool = False) -> Path:
    """One row per post-processing setting: the ground truth, then each runtime's disparity, same colour scale.

    ``disparities`` maps ``(runtime, postprocess)`` to an ``(H, W)`` map; unknown pixels are black.
    """
    settings = list(dict.fromkeys(pp for _, pp in disparities))
    runtimes = list(dict.fromkeys(rt for rt, _ in disparities))
    h, w = gt.shape
    fig, axes = _grid(len(settings), len(runtimes) + 1, 3.2, 3.2 * h / w + 0.35)
    for r, pp in enumerate(settings):
        axes[r, 0].imshow(colorize(gt, max_disp))
        axes[r, 0].set_title("ground truth", fontsize="small")
        for c, rt in enumerate(runtimes, start=1):
            disp = disparities.get((rt, pp))
            if disp is not None:
                axes[r, c].imshow(colorize(disp, max_disp))
            axes[r, c].set_title(f"{rt}, {pp}", fontsize="small")
    if title:
        fig.suptitle(title)
    _disparity_bar(fig, max_disp)
    return _save(fig, path, overwrite)


BAR_INCHES = 0.75  # room under the panels for the colour bar and its label


def _disparity_bar(fig: Any, max_disp: float) -> None:
    """Lay out the panels above a horizontal colour bar of :func:`colorize`'s ramp, 0 .. ``max_disp`` pixels."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    height = fig.get_figheight()
    fig.set_figheight(height + BAR_INCHES)
    bottom = BAR_INCHES / (height + BAR_INCHES)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    ramp = colorize(np.linspace(0, max_disp, 256, dtype=np.float32)[None], max_disp)[0] / 255.0
    bar = fig.add_axes((0.2, 0.6 * bottom, 0.6, 0.14 * bottom))
    fig.colorbar(ScalarMappable(Normalize(0, max_disp), ListedColormap(ramp)), cax=bar, orientation="horizontal",
                 label="disparity (px); black: no value")


def plot_errors(gt: np.ndarray, disparities: Mapping[tuple[str, str], np.ndarray], path: str | Path,
                threshold: float = 3.0, rates: Mapping[tuple[str, str], float] | None = None, title: str = "",
                overwrite: bool = False) -> Path:
    """Error maps (:func:`stereodeploy.data.io.error_map`: blue..yellow below ``threshold``, orange, red) per runtime,
    one row per post-processing setting; ``rates`` adds each map's error rate to its title."""
    settings = list(dict.fromkeys(pp for _, pp in disparities))
    runtimes = list(dict.fromkeys(rt for rt, _ in disparities))
    h, w = gt.shape
    fig, axes = _grid(len(settings), len(runtimes), 3.2, 3.2 * h / w + 0.35)
    for r, pp in enumerate(settings):
        for c, rt in enumerate(runtimes):
            disp = disparities.get((rt, pp))
            label = f"{rt}, {pp}"
            if disp is not None:
                axes[r, c].imshow(error_map(disp, gt, threshold))
                if rates and (rt, pp) in rates:
                    label += f": {fmt(rates[(rt, pp)], 1)}%"
            axes[r, c].set_title(label, fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, overwrite)
