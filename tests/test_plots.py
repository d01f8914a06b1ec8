"""Issue 22: run figures one could put in a report, and `python -m tools.plot` overlaying runs."""
import csv
import json

import matplotlib.image
import pytest

from tools import plot as plot_tool
from run_folder.plots import legend_name, plot_run, schedule_events


def rows_of(epochs, scale=1.0):
    return [{"epoch": epoch, **({"loss_Total": 3.0 - epoch / 10, "loss_MPN0": 1.0} if epoch else {}),
             "test_R@1": scale * (0.3 + epoch / 100), "test_NMI": 0.5, "lr": 0.1} for epoch in epochs]


def write_run(folder, rows, best_epoch=None):
    folder.mkdir(parents=True)
    with open(folder / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[-1]), restval="")
        writer.writeheader()
        writer.writerows(rows)
    (folder / "config.yaml").write_text("mode: train\ndataset:\n  dataset_short: cub\n")
    if best_epoch is not None:
        (folder / "summary.json").write_text(json.dumps({"best_epoch": best_epoch}))
    return folder


def test_legend_names_are_readable():
    assert legend_name("test_R@1") == "R@1 (test)" and legend_name("val_NMI") == "NMI (val)"
    assert legend_name("loss_Total") == "total" and legend_name("loss_Backbone") == "backbone"
    assert legend_name("loss_MPN0", ["loss_MPN0"]) == "MPN"
    assert legend_name("loss_MPN1", ["loss_MPN0", "loss_MPN1"]) == "MPN layer 2"


def test_schedule_events_mark_the_reloads_that_happened():
    assert schedule_events([31, 51], range(0, 40)) == [(31, "best weights reloaded, lr / 10")]
    assert schedule_events([2, 3], [1, 2, 3]) == [(2, "best weights reloaded, lr / 10"),
                                                  (3, "best weights reloaded")]


@pytest.mark.parametrize("epochs", [[1], [0, 1], [0, 1, 2, 3]])
def test_both_run_figures_share_the_epoch_axis_with_integer_ticks(tmp_path, monkeypatch, epochs):
    axes = []
    import run_folder.plots
    real_epoch_axis = run_folder.plots._epoch_axis

    def recording_epoch_axis(axis, epoch_range):
        real_epoch_axis(axis, epoch_range)
        axes.append(axis)
    monkeypatch.setattr(run_folder.plots, "_epoch_axis", recording_epoch_axis)
    plot_run(tmp_path, rows_of(epochs), ["loss_Total", "loss_MPN0"], ["test_R@1", "test_NMI"], "cub\nrun",
             "test", selection_column="test_R@1", best_epoch=1, events=[(1, "best weights reloaded, lr / 10")])
    losses, metrics = axes
    assert "training classes" in losses.get_title() and "test" not in losses.get_title()
    assert "test classes" in metrics.get_title()
    assert losses.get_xlim() == metrics.get_xlim() == (epochs[0] - 0.5, epochs[-1] + 0.5)
    for axis in (losses, metrics):
        ticks = [tick for tick in axis.get_xticks() if epochs[0] - 0.5 <= tick <= epochs[-1] + 0.5]
        assert ticks and all(float(tick).is_integer() for tick in ticks)
    labels = metrics.get_legend_handles_labels()[1]
    assert labels[:2] == ["R@1 (test)", "NMI (test)"]
    assert "best epoch 1: R@1 (test) 31.00" in labels and "best weights reloaded, lr / 10" in labels
    legend_box = metrics.get_legend().get_window_extent()
    assert legend_box.x0 >= metrics.get_window_extent().x1, "the legend sits beside the curves, not over them"
    assert (tmp_path / "losses.png").is_file() and (tmp_path / "metrics.png").is_file()


def test_tools_plot_overlays_two_runs_in_one_png(tmp_path):
    first = write_run(tmp_path / "runs" / "a", rows_of([0, 1, 2]), best_epoch=2)
    second = write_run(tmp_path / "runs" / "b", rows_of([1, 2, 3], scale=0.5))
    output = tmp_path / "both.png"
    assert plot_tool.main([str(first), str(second), "--output", str(output)]) == 0
    height, width, _ = matplotlib.image.imread(output).shape
    assert width > 600 and height > 300


def test_tools_plot_never_replaces_a_file(tmp_path, monkeypatch, caplog):
    """--output naming a file of the user's replaced it; without --output the next free name is taken."""
    run = write_run(tmp_path / "runs" / "a", rows_of([0, 1, 2]))
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's picture")
    assert plot_tool.main([str(run), "--output", str(mine)]) == 2
    assert mine.read_bytes() == b"the user's picture" and "already exists" in caplog.text
    monkeypatch.chdir(tmp_path)
    for _ in range(3):
        assert plot_tool.main([str(run)]) == 0
    assert sorted(path.name for path in tmp_path.glob("runs_compared*.png")) == [
        "runs_compared.png", "runs_compared_1.png", "runs_compared_2.png"]


def test_tools_plot_takes_the_best_epoch_from_the_curve_of_an_unfinished_run(tmp_path):
    run = write_run(tmp_path / "run", rows_of([0, 1, 2]))
    assert plot_tool.best_epoch(run, plot_tool.read_rows(run)) == 2


def test_tools_plot_refuses_a_folder_without_metrics(tmp_path, caplog):
    assert plot_tool.main([str(tmp_path), "--output", str(tmp_path / "x.png")]) == 2
    assert "has no metrics.csv" in caplog.text
    assert not (tmp_path / "x.png").exists()


def test_bar_numbers_sit_above_their_error_bars(tmp_path, monkeypatch):
    import run_folder.plots
    figures = []
    monkeypatch.setattr(run_folder.plots, "_save", lambda figure, path: figures.append(figure))
    run_folder.plots.plot_bars(["a", "b"], {"R@1": [(50.0, 4.0), (40.0, None)]}, tmp_path / "bars.png", "t")
    labels = {text.get_text(): text.xy for text in figures[0].axes[0].texts}
    assert labels == {"50.0": (0, 54.0), "40.0": (1, 40.0)}
