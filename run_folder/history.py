"""One row per epoch: metrics.csv (metrics as fractions; the figures are in utils/plots.py)."""
import csv
import io

from schema.options import EXTRA_METRIC_COLUMNS
from utils.io import atomic_write_text


# Recall@K, NMI, and the extra metrics of eval_params.metrics (MAP@R, R-precision, P@1).
METRIC_PREFIXES = ("R@", "NMI", *EXTRA_METRIC_COLUMNS.values())


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
