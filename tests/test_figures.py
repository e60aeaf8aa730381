"""A run's PNGs: drawn over kept backgrounds, they must be exactly what a fresh figure draws."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vgtrack.artifacts import write_history
from vgtrack.figures import RunFigures, decades, thin


def _columns(layers: int, epochs: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    columns = {"epoch": np.arange(epochs)}
    for name in ("train_accuracy", "test_accuracy"):
        columns[name] = rng.uniform(0.4, 0.9, epochs)
    for i in range(layers):
        columns[f"grad_mean_abs/layer_{i + 1:02d}"] = 10.0 ** rng.uniform(-6 + i / 4, -3 + i / 4, epochs)
    return columns


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"))


def test_a_reused_renderer_draws_exactly_what_a_fresh_one_draws(tmp_path):
    shallow, deep = _columns(3, 40, seed=1), _columns(21, 300, seed=2)
    for name in ("fresh", "deep", "reused"):
        (tmp_path / name).mkdir()
    RunFigures().write(shallow, tmp_path / "fresh")
    figures = RunFigures()
    figures.write(deep, tmp_path / "deep")
    figures.write(shallow, tmp_path / "reused")  # after a deeper run: none of its 21 lines may remain
    for name in ("accuracy.png", "gradients.png"):
        fresh, reused = _pixels(tmp_path / "fresh" / name), _pixels(tmp_path / "reused" / name)
        assert fresh.shape == (320, 480, 4)
        np.testing.assert_array_equal(reused, fresh)
        assert len(np.unique(fresh.reshape(-1, 4), axis=0)) > 20  # lines, text and colours, not a blank page
    assert not np.array_equal(_pixels(tmp_path / "deep" / "gradients.png"), _pixels(tmp_path / "fresh" / "gradients.png"))


def test_the_pieces_drawn_apart_add_up_to_the_whole_figure(tmp_path):
    """The background without the y axis, the y axis of each range, the lines: together they are
    what matplotlib draws of the whole figure at once, for every range the figure has seen (but
    for the few pixels where a line crosses a y tick: blitted, the line is on top)."""
    figures = RunFigures()
    for layers, epochs, seed in ((3, 40, 1), (21, 300, 2), (6, 300, 3), (3, 40, 4)):
        figures.write(_columns(layers, epochs, seed), tmp_path)
        for panel, curves in ((figures._accuracy, figures._accuracy.lines[:2]), (figures._gradients, [figures._gradients.curves])):
            blitted = np.array(panel.canvas.buffer_rgba())
            shown = [panel.ax.yaxis, *curves]
            for artist in shown:
                artist.set_animated(False)
            panel.canvas.draw()
            whole = np.array(panel.canvas.buffer_rgba())
            for artist in shown:
                artist.set_animated(True)
            if panel is figures._accuracy:  # its legend is pasted over the lines; the whole figure has none
                whole, blitted = whole[:220], blitted[:220]
            differ = np.argwhere((whole != blitted).any(axis=2))
            assert len(differ) < 10 and set(differ[:, 1]) <= {67}, (panel.ax.get_title(), layers, differ[:5])
    assert len(figures._gradients._backgrounds) >= 3


@pytest.mark.parametrize(("values", "expected"), [
    ([3e-5, 0.2], (1e-6, 1.0)),
    ([2e-19, 3e-4], (1e-21, 1e-3)),  # a vanishing gradient: every third power of ten
    ([1e-3, 1e-3], (1e-3, 1.0)),  # a flat line still gets three decades
    ([5.0, 40.0], (1.0, 1e3)),
    ([0.0, -1.0, np.nan, np.inf], (1e-9, 1.0)),  # nothing a log axis can show
])
def test_gradient_axis_snaps_to_every_third_power_of_ten(values, expected):
    assert decades(values) == pytest.approx(expected)


def test_runs_of_any_depth_in_one_range_share_one_background(tmp_path):
    """The colour bar, not a legend of layer names, tells the layers apart: a shallow and a deep
    run whose gradients lie in the same decades are drawn over the same background."""
    figures = RunFigures()
    for layers in (2, 6, 21):
        columns = _columns(layers, 50, seed=layers)
        for name in [c for c in columns if c.startswith("grad_mean_abs/")]:
            columns[name] = np.clip(columns[name], 2e-6, 0.5)
        (tmp_path / str(layers)).mkdir()
        figures.write(columns, tmp_path / str(layers))
    assert len(figures._gradients._backgrounds) == 1
    assert len(figures._accuracy._backgrounds) == 1


def test_thinning_keeps_the_last_epoch():
    assert list(thin(5)) == [0, 1, 2, 3, 4]
    index = thin(501)
    assert len(index) <= 252 and index[0] == 0 and index[-1] == 500


def test_history_parquet_reads_back_as_written(tmp_path):
    columns = _columns(4, 7, seed=3)
    write_history(columns, tmp_path / "history.parquet")
    frame = pq.read_table(tmp_path / "history.parquet").to_pandas()
    assert list(frame.columns) == list(columns)
    for name, values in columns.items():
        np.testing.assert_array_equal(frame[name].to_numpy(), values)
