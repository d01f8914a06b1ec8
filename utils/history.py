"""One row per epoch: metrics.csv and the loss / metric plots beside it."""
import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from utils.io import atomic_write, atomic_write_text  # noqa: E402


# Recall@K, NMI, and the extra metrics of eval_params.metrics (MAP@R, R-precision, P@1).
METRIC_PREFIXES = ("R@", "NMI", "MAP@R", "RP", "P@1")


def is_metric_column(column):
    """``test_R@1``, ``val_NMI``, ``val_MAP@R``, ...: evaluation results, as fractions."""
    return column.split("_", 1)[-1].startswith(METRIC_PREFIXES)


def column_group(column):
    if column == "epoch":
        return 0
    if column.startswith("loss_"):
        return 1
    return 2 if is_metric_column(column) else 3


class History:
    """Rows of ``{column: value}``; written whole and atomically after each epoch."""

    def __init__(self, rows=None):
        self.rows = list(rows or [])

    def append(self, row):
        self.rows.append(dict(row))

    def columns(self):
        """Every column seen, grouped: epoch, losses, metrics, then the rest (first-seen order)."""
        columns = []
        for row in self.rows:
            columns.extend(key for key in row if key not in columns)
        return sorted(columns, key=column_group)

    def write_csv(self, path):
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns(), restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(path, buffer.getvalue())

    def plot(self, run_dir, loss_columns, metric_columns):
        """``losses.png`` and ``metrics.png`` against the epoch."""
        run_dir = Path(run_dir)
        self._plot_columns(run_dir / "losses.png", loss_columns, "loss", "Training loss (epoch mean)")
        self._plot_columns(run_dir / "metrics.png", metric_columns, "%", "Evaluation")

    def _plot_columns(self, path, columns, ylabel, title):
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for column in columns:
            points = [(row["epoch"], row[column]) for row in self.rows if row.get(column) not in (None, "")]
            if points:
                epochs, values = zip(*points)
                scale = 100.0 if ylabel == "%" else 1.0
                axis.plot(epochs, [value * scale for value in values], marker="o", label=column)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(ylabel)
        axis.set_title(title)
        axis.grid(True)
        if axis.lines:
            axis.legend()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        atomic_write(path, buffer.getvalue())
