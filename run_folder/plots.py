"""Figures of a run (``losses.png``, ``metrics.png``) and of several runs overlaid.

Figures one could put in a report: metrics in percent, readable legend names
outside the axes (never over a curve), integer epochs, the same epoch axis
in both figures of a run, the best epoch and the schedule's reloads of the
best weights marked (they explain the jumps of the curves). The rows are
``metrics.csv`` rows: ``{'epoch': 3, 'loss_Total': ..., 'test_R@1': fraction}``.
"""
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from run_folder.history import is_metric_column  # noqa: E402
from utils.io import atomic_write  # noqa: E402

FIGURE_SIZE = (8, 4.5)
DPI = 110


def legend_name(column, columns=()):
    """``test_R@1`` -> ``R@1 (test)``; ``loss_MPN0`` -> ``MPN`` (``MPN layer 1`` when there are several)."""
    if column.startswith("loss_"):
        term = column[len("loss_"):]
        if term.startswith("MPN"):
            several = sum(other.startswith("loss_MPN") for other in columns) > 1
            return f"MPN layer {int(term[3:]) + 1}" if several and term[3:].isdigit() else "MPN"
        return term.lower()
    split, _, metric = column.partition("_")
    return f"{metric} ({split})" if metric else column


def schedule_events(lr_drop_epochs, epochs):
    """``[(epoch, label)]`` of the reloads of the best weights that happened within ``epochs``."""
    reached = [epoch for epoch in lr_drop_epochs if epoch in set(epochs)]
    return [(epoch, "best weights reloaded, lr / 10" if index == 0 else "best weights reloaded")
            for index, epoch in enumerate(reached)]


def plot_run(run_dir, rows, loss_columns, metric_columns, title, metric_split, selection_column=None,
             best_epoch=None, events=()):
    """``losses.png`` and ``metrics.png`` of one run, on the same epoch axis.

    The losses are always those of the training classes; the metrics are
    those of ``metric_split`` ('test' or 'val'), so each title names its own.
    """
    epochs = [row["epoch"] for row in rows]
    if not epochs:
        return
    epoch_range = (min(epochs), max(epochs))
    figure, axis = plt.subplots(figsize=FIGURE_SIZE)
    for column in loss_columns:
        _plot_column(axis, rows, column, legend_name(column, loss_columns))
    _finish_axis(axis, epoch_range, "loss (epoch mean)", f"Training loss, training classes — {title}", events)
    _save(figure, run_dir / "losses.png")

    figure, axis = plt.subplots(figsize=FIGURE_SIZE)
    for column in metric_columns:
        _plot_column(axis, rows, column, legend_name(column), scale=100.0)
    if selection_column is not None and best_epoch:
        _mark_best(axis, rows, selection_column, best_epoch)
    _finish_axis(axis, epoch_range, "%", f"Recall@K and NMI, {metric_split} classes — {title}",
                 events)
    _save(figure, run_dir / "metrics.png")


def plot_runs(runs, path, title):
    """Several runs overlaid: one panel per metric (and the total loss), one colour per run.

    ``runs`` is a list of ``(name, rows, best_epoch)``; ``path`` is a new file, never replaced.
    """
    metrics = []
    for _, rows, _ in runs:
        for row in rows:
            metrics.extend(column for column in row if is_metric_column(column) and column not in metrics)
    panels = metrics + ["loss_Total"]
    columns = min(3, len(panels))
    panel_rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(panel_rows, columns, figsize=(4.2 * columns, 3.2 * panel_rows), squeeze=False)
    all_epochs = [row["epoch"] for _, rows, _ in runs for row in rows]
    epoch_range = (min(all_epochs), max(all_epochs)) if all_epochs else (0, 1)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for panel, axis in zip(panels, axes.flat):
        for index, (name, rows, best_epoch) in enumerate(runs):
            colour = colours[index % len(colours)]
            scale = 1.0 if panel.startswith("loss_") else 100.0
            _plot_column(axis, rows, panel, name, scale=scale, color=colour)
            if best_epoch and not panel.startswith("loss_"):
                _mark_best(axis, rows, panel, best_epoch, color=colour, annotate=False)
        axis.set_title("total loss" if panel == "loss_Total" else legend_name(panel))
        _epoch_axis(axis, epoch_range)
        axis.set_ylabel("loss" if panel == "loss_Total" else "%")
        axis.grid(True, alpha=0.4)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(runs), 3), bbox_to_anchor=(0.5, 0.0),
                  frameon=False)
    figure.suptitle(f"{title} (stars: best epoch of each)")
    figure.tight_layout(rect=(0, 0.06 + 0.03 * ((len(runs) - 1) // 3), 1, 1))
    _save(figure, path, replace=False)


def _points(rows, column):
    points = [(row["epoch"], row[column]) for row in rows if row.get(column) not in (None, "")]
    return zip(*points) if points else ((), ())


def _plot_column(axis, rows, column, label, scale=1.0, **style):
    epochs, values = _points(rows, column)
    if epochs:
        axis.plot(epochs, [float(value) * scale for value in values], marker="o", markersize=3.5, label=label,
                  **style)


def _mark_best(axis, rows, column, best_epoch, color="black", annotate=True):
    """A star on the selection metric at the best epoch."""
    value = next((float(row[column]) * 100 for row in rows
                  if row["epoch"] == best_epoch and row.get(column) not in (None, "")), None)
    if value is None:
        return
    axis.plot([best_epoch], [value], marker="*", markersize=14, color=color, linestyle="none",
              label=f"best epoch {best_epoch}: {legend_name(column)} {value:.2f}" if annotate else None, zorder=5)


def _epoch_axis(axis, epoch_range):
    """Whole epochs only, with half an epoch of margin (a one-epoch run gets no 0.96, 0.98, ... ticks)."""
    first, last = epoch_range
    axis.set_xlim(first - 0.5, last + 0.5)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axis.set_xlabel("epoch")


def _finish_axis(axis, epoch_range, ylabel, title, events):
    for index, (epoch, label) in enumerate(events):
        # Between the epoch before and the epoch that starts from the reloaded weights.
        axis.axvline(epoch - 0.5, color="grey", linestyle="--" if index == 0 else ":", linewidth=1.2,
                     label=label if label not in [event[1] for event in events[:index]] else None)
    _epoch_axis(axis, epoch_range)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.grid(True, alpha=0.4)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=9)


def _save(figure, path, replace=True):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    atomic_write(path, buffer.getvalue(), replace=replace)


def plot_bars(names, panels, path, title):
    """One bar chart per panel, a bar per name with its std as error bar.

    ``panels`` maps a panel title to one ``(mean, std)`` per name, in percent;
    a missing mean leaves its bar out, a missing std its error bar.
    """
    figure, axes = plt.subplots(1, len(panels), figsize=(max(4.0, 1.1 * len(names)) * len(panels), 4.2),
                                squeeze=False)
    for axis, (panel, values) in zip(axes.flat, panels.items()):
        positions = [index for index, (mean, _) in enumerate(values) if mean is not None]
        means = [values[index][0] for index in positions]
        errors = [values[index][1] or 0.0 for index in positions]
        axis.bar(positions, means, yerr=errors, capsize=5, color="tab:blue", alpha=0.8)
        for position, mean, error in zip(positions, means, errors):
            # Above the error bar's cap, which would otherwise cross the number.
            axis.annotate(f"{mean:.1f}", (position, mean + error), textcoords="offset points", xytext=(0, 3),
                          ha="center", fontsize=8)
        axis.set_xticks(range(len(names)), names, rotation=20)
        axis.set_ylabel("%")
        axis.set_title(panel, fontsize=10)
        axis.grid(True, axis="y", alpha=0.4)
    figure.suptitle(f"{title} (error bars: std over seeds)", fontsize=10)
    figure.tight_layout()
    _save(figure, path)
