"""Per-run figures drawn from a history DataFrame (see records.history_frame).

Each ``plot_*`` only draws onto the Axes it is given; ``*_figure`` wraps one in a Figure.
Figures are built without pyplot, so nothing here needs a display or global state. A sweep
draws two per run, so they are kept cheap: at most ``MAX_POINTS`` points per line (the
history artifact has every epoch) and fast PNG compression.
"""

from __future__ import annotations

MAX_POINTS = 250  # more than a 480-pixel-wide axis can show
PNG = {"dpi": 80, "pil_kwargs": {"compress_level": 1}}


def layer_columns(frame, stat: str) -> list[str]:
    """The ``<stat>/layer_NN`` columns of ``frame``, input side first."""
    return sorted(c for c in frame.columns if c.startswith(stat + "/"))


def _thin(frame):
    step = max(1, -(-len(frame) // MAX_POINTS))
    return frame if step == 1 else frame.iloc[list(range(0, len(frame), step)) + ([len(frame) - 1] if (len(frame) - 1) % step else [])]


def plot_accuracy(frame, ax) -> None:
    """Train and test accuracy over epochs, as the tutorial plots its history."""
    frame = _thin(frame)
    ax.plot(frame["epoch"], frame["train_accuracy"], label="train")
    ax.plot(frame["epoch"], frame["test_accuracy"], label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")


def plot_layer_series(frame, stat: str, ax, log: bool = True) -> None:
    """One line per layer of ``stat`` over epochs, coloured from input (dark) to output (light);
    on a log scale a vanishing gradient shows as a gap between the first and the last layers."""
    from matplotlib import colormaps

    frame = _thin(frame)
    columns = layer_columns(frame, stat)
    colours = colormaps["viridis"].resampled(max(len(columns), 2))
    for i, column in enumerate(columns):
        label = column.split("/", 1)[1] if i in (0, len(columns) - 1) or len(columns) <= 8 else None
        ax.plot(frame["epoch"], frame[column], color=colours(i), linewidth=1, label=label)
    if log:
        from matplotlib.ticker import LogFormatter, NullLocator

        ax.set_yscale("log")
        # No minor ticks and plain "1e-05" labels: log-axis minor ticks and mathtext labels cost
        # more than the plot itself, and a sweep draws this figure for every run.
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(stat)
    ax.legend(fontsize="small", loc="best")


def _figure(title: str):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    figure.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.92)  # fixed margins: layout engines cost more than the plot
    ax = figure.add_subplot()
    ax.set_title(title, y=1.0)  # a fixed position skips matplotlib's title-overlap search
    return figure, ax


def accuracy_figure(frame):
    figure, ax = _figure("accuracy")
    plot_accuracy(frame, ax)
    return figure


def gradient_figure(frame):
    figure, ax = _figure("mean |gradient| per layer")
    plot_layer_series(frame, "grad_mean_abs", ax, log=True)
    return figure
