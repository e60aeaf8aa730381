"""Figures of one run's history: the two PNGs every run carries, and their drawing for reports.

``plot_accuracy`` only draws onto the Axes it is given (the report uses it). :class:`RunFigures`
writes a run's ``accuracy.png`` and ``gradients.png``; a sweep writes two for every run, so it
keeps one Figure per kind and draws only what changes from run to run (see its docstring).
Nothing here uses pyplot, so no display or global state is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAX_POINTS = 250  # more than a 480-pixel-wide axis can show
PNG = {"dpi": 80, "pil_kwargs": {"compress_level": 1}}
LAYER_COLOURS = "viridis"  # gradients.png: the input layer at 0 (dark), the output layer at 1 (light)
BACKGROUNDS = 32  # axis ranges whose drawn background a RunFigures keeps, per figure


def layer_columns(frame, stat: str) -> list[str]:
    """The ``<stat>/layer_NN`` columns of ``frame`` (a DataFrame or a dict of columns), input side first."""
    return sorted(c for c in frame if c.startswith(stat + "/"))


def thin(n: int) -> np.ndarray:
    """Indices of at most about ``MAX_POINTS`` of ``n`` points, evenly spaced, the last one included."""
    step = max(1, -(-n // MAX_POINTS))
    index = np.arange(0, n, step)
    return index if step == 1 or (n - 1) % step == 0 else np.append(index, n - 1)


def plot_accuracy(frame, ax) -> None:
    """Train and test accuracy over epochs, as the tutorial plots its history."""
    frame = frame.iloc[thin(len(frame))]
    ax.plot(frame["epoch"], frame["train_accuracy"], label="train")
    ax.plot(frame["epoch"], frame["test_accuracy"], label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")


def decades(values, step: int = 3) -> tuple[float, float]:
    """Log-axis limits: powers of ten around the positive finite ``values``, their exponents
    multiples of ``step`` ((1e-9, 1) if there are none).

    Coarse on purpose: a sweep's runs then share a few axis ranges, and each range is drawn once
    (see :class:`RunFigures`); a curve still spans at least a third of the axis.
    """
    values = np.asarray(values, dtype=float)
    positive = values[np.isfinite(values) & (values > 0)]
    if not positive.size:
        return 10.0 ** -(3 * step), 1.0
    low = step * math.floor(math.log10(positive.min()) / step)
    high = step * math.ceil(math.log10(positive.max()) / step)
    return 10.0**low, 10.0 ** max(high, low + step)


class _Panel:
    """One reusable Figure with one Axes: a background per axis range, lines drawn over it, a
    legend pasted over them from a cache of drawn legends. ``layers=True`` adds a colour bar from
    the input layer to the output layer (:data:`LAYER_COLOURS`), the same for every depth."""

    def __init__(self, title: str, ylabel: str, log: bool, layers: bool = False) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(6, 4), dpi=PNG["dpi"])
        self.canvas = FigureCanvasAgg(self.figure)
        # fixed margins and title position: layout engines and the title-overlap search cost more than the plot
        self.figure.subplots_adjust(left=0.14, right=0.84 if layers else 0.97, bottom=0.12, top=0.92)
        self.ax = self.figure.add_subplot()
        if layers:
            from matplotlib.cm import ScalarMappable
            from matplotlib.colors import Normalize

            bar = self.figure.colorbar(
                ScalarMappable(Normalize(0, 1), LAYER_COLOURS), cax=self.figure.add_axes((0.87, 0.12, 0.025, 0.80)), ticks=[0, 1]
            )
            bar.ax.set_yticklabels(["input", "output"])
            bar.set_label("layer", labelpad=-8)
        self.ax.set_title(title, y=1.0)
        self.ax.set_xlabel("epoch")
        self.ax.set_ylabel(ylabel)
        if log:
            from matplotlib.ticker import LogFormatter, NullLocator

            self.ax.set_yscale("log")
            # no minor ticks, plain "1e-05" labels: on a log axis these are most of the drawing time
            self.ax.yaxis.set_minor_locator(NullLocator())
            self.ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=True))
        # The y axis (ticks, their labels, its label) is drawn apart from the rest of the figure,
        # which a new y range leaves as it is: a new range costs its axis, not a whole figure.
        self.ax.yaxis.set_animated(True)
        self.lines: list = []
        self.curves = None  # the LineCollection of draw_curves, once it is used
        self._xlim: tuple[float, float] | None = None
        self._limits: tuple | None = None  # the (*xlim, *ylim) last set on the axes
        self._static = None  # everything but the y axis and the lines, for self._xlim
        self._backgrounds: dict[tuple, object] = {}  # (xlim, ylim) -> the static part with the y axis
        self._background = None  # the one painted for the current run
        self._legends: dict[tuple, object] = {}

    def start(self, epochs: np.ndarray, ylim: tuple[float, float]) -> None:
        """Set the axis range (x: the epochs with matplotlib's 5% margins) and paint its background."""
        span = float(epochs[-1] - epochs[0]) or 1.0
        xlim = (float(epochs[0]) - 0.05 * span, float(epochs[-1]) + 0.05 * span)
        key = (*xlim, *ylim)
        if key != self._limits:  # setting a limit costs about a millisecond, even an unchanged one
            self.ax.set_xlim(*xlim)
            self.ax.set_ylim(*ylim)
            self._limits = key
        if key not in self._backgrounds:
            if len(self._backgrounds) >= BACKGROUNDS:
                self._backgrounds.pop(next(iter(self._backgrounds)))
            if xlim != self._xlim:
                self.canvas.draw()  # everything but the animated: the y axis and the lines
                self._static, self._xlim = self.canvas.copy_from_bbox(self.figure.bbox), xlim
            else:
                self.canvas.restore_region(self._static)
            self.ax.draw_artist(self.ax.yaxis)
            self._backgrounds[key] = self.canvas.copy_from_bbox(self.figure.bbox)
        self._background = self._backgrounds[key]
        self.canvas.restore_region(self._background)

    def draw_line(self, i: int, x, y, label: str, **style) -> None:
        while len(self.lines) <= i:
            (line,) = self.ax.plot([], [], animated=True)
            self.lines.append(line)
        line = self.lines[i]
        line.set_data(x, y)
        line.set_label(label)
        line.set(**style)
        self.ax.draw_artist(line)

    def draw_curves(self, x, ys: Sequence[np.ndarray], colours, linewidth: float) -> None:
        """Many curves over the same ``x`` as one artist (a ``LineCollection``, drawn first to last):
        a deep run's 21 lines cost one artist's overhead instead of 21."""
        if self.curves is None:
            from matplotlib.collections import LineCollection

            # the caps and joins of a plotted line (rcParams lines.solid_*), not a collection's defaults
            self.curves = LineCollection([], animated=True, capstyle="projecting", joinstyle="round")
            self.ax.add_collection(self.curves, autolim=False)
        x = np.asarray(x, dtype=float)
        self.curves.set_segments([np.column_stack((x, y)) for y in ys])
        self.curves.set_color(colours)
        self.curves.set_linewidth(linewidth)
        self.ax.draw_artist(self.curves)

    def finish(self, path: str | Path, handles: Sequence = (), **legend) -> None:
        """Paste the legend of ``handles`` (if any) over the lines and write the PNG: 256 colours (a
        plot has fewer that matter; the file is half the size and written in half the time of an RGB one)."""
        if handles:
            key = (tuple((h.get_label(), h.get_color(), h.get_linewidth()) for h in handles), tuple(sorted(legend.items())))
            if key not in self._legends:
                self._legends[key] = self._draw_legend(list(handles), legend)
            self.canvas.restore_region(self._legends[key])
        self.image().save(path, format="png", **PNG["pil_kwargs"])

    def image(self):
        """What the canvas holds now, as the PNG gets it."""
        from PIL import Image

        rgba = Image.fromarray(np.asarray(self.canvas.buffer_rgba()))  # no copy: the canvas's own buffer
        return rgba.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)  # PIL drops alpha 6x faster than numpy

    def _draw_legend(self, handles: list, legend: dict):
        """The pixels of this legend (opaque, square corners) drawn on the bare background, to paste later."""
        drawn = self.canvas.copy_from_bbox(self.figure.bbox)  # the lines drawn so far
        self.canvas.restore_region(self._background)
        artist = self.ax.legend(handles=handles, framealpha=1, fancybox=False, **legend)
        artist.set_animated(True)
        self.ax.draw_artist(artist)
        patch = self.canvas.copy_from_bbox(artist.get_window_extent(self.canvas.get_renderer()).expanded(1.02, 1.05))
        artist.remove()
        self.canvas.restore_region(drawn)
        return patch


class RunFigures:
    """Writes a run's ``accuracy.png`` (train and test accuracy over epochs) and ``gradients.png``
    (mean |gradient| per layer over epochs, log scale, coloured from the input layer, dark, to the
    output layer, light, as the colour bar beside it shows for any depth).

    Most of matplotlib's drawing time goes to what is the same from run to run: axes, ticks,
    labels, title, colour bar. Each figure is drawn once per axis range (the gradient axis snaps
    to every third power of ten, so a sweep has few) and kept as a background; a run draws only
    its lines (and the accuracy legend, drawn once) over a copy of it (matplotlib's blitting).
    At most ``MAX_POINTS`` points per line; the history artifact has every epoch.

    Example:
        >>> figures = RunFigures()  # doctest: +SKIP
        >>> figures.write(history_columns(result.history), "artifacts/run-0")
    """

    def __init__(self) -> None:
        self._accuracy = _Panel("accuracy", "accuracy", log=False)
        self._gradients = _Panel("mean |gradient| per layer", "grad_mean_abs", log=True, layers=True)

    def write(self, columns, folder: str | Path) -> None:
        """Both PNGs into ``folder`` from ``columns`` (records.history_columns, or a DataFrame of the same)."""
        self.accuracy(columns, Path(folder) / "accuracy.png")
        self.gradients(columns, Path(folder) / "gradients.png")

    def accuracy(self, columns, path: str | Path) -> None:
        index = thin(len(columns["epoch"]))
        epochs = np.asarray(columns["epoch"])[index]
        panel = self._accuracy
        panel.start(epochs, (0.0, 1.0))
        for i, name in enumerate(("train", "test")):
            panel.draw_line(i, epochs, np.asarray(columns[f"{name}_accuracy"])[index], name, color=f"C{i}")
        panel.finish(path, panel.lines[:2], loc="lower right")

    def gradients(self, columns, path: str | Path) -> None:
        from matplotlib import colormaps

        index = thin(len(columns["epoch"]))
        epochs = np.asarray(columns["epoch"])[index]
        names = layer_columns(columns, "grad_mean_abs")
        series: Sequence[np.ndarray] = [np.asarray(columns[name])[index] for name in names]
        panel = self._gradients
        panel.start(epochs, decades(series))
        colours = colormaps[LAYER_COLOURS](np.arange(len(names)) / max(len(names) - 1, 1))
        panel.draw_curves(epochs, series, colours, linewidth=1)
        panel.finish(path)
