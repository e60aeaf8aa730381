"""The report's figures. Each ``plot_*`` draws tidy data onto the Axes it is given; each
``*_figure`` lays out a Figure around one or more of them. Nothing here reads MLflow.
"""

from __future__ import annotations

import numpy as np

from vgtrack.figures import layer_columns, plot_accuracy
from vgtrack.records import PERCENTILE_STATS


def _figure(rows: int = 1, cols: int = 1, width: float = 7.0, height: float = 4.5):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False)
    return figure, axes


def plot_dataset(data, ax) -> None:
    """The circles coloured by class, as the tutorials scatter them."""
    for label in (0, 1):
        points = data.x_all[data.y_all == label]
        ax.scatter(points[:, 0], points[:, 1], s=6, label=str(label))
    ax.set_aspect("equal")
    ax.legend(title="class")


def dataset_figure(data):
    figure, axes = _figure(width=5, height=5)
    plot_dataset(data, axes[0, 0])
    axes[0, 0].set_title("make_circles, scaled to [-1, 1]")
    return figure


def plot_accuracy_vs_depth(summary, ax, chance: float, colours: dict | None = None) -> None:
    """One line per configuration: seed-mean final test accuracy against depth, with its 95% band."""
    for config, part in summary.groupby("config", sort=True):
        part = part.sort_values("depth")
        colour = (colours or {}).get(config)
        ax.plot(part["depth"], part["mean"], marker="o", markersize=3, label=config, color=colour)
        ax.fill_between(part["depth"].astype(float), part["ci95_low"], part["ci95_high"], alpha=0.2, color=colour)
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("hidden layers")
    ax.set_ylabel("final test accuracy")
    ax.set_ylim(0.3, 1.0)


def accuracy_vs_depth_figure(summary, chance: float):
    """One panel per width, one colour per configuration in every panel, one legend beside them."""
    from matplotlib import colormaps

    widths = sorted(summary["width"].unique())
    configs = sorted(summary["config"].unique())
    palette = colormaps["tab10" if len(configs) <= 10 else "tab20"]
    colours = {config: palette(i % palette.N) for i, config in enumerate(configs)}
    figure, axes = _figure(1, len(widths), width=min(3.6 * len(widths) + 2.5, 18), height=4.5)
    for ax, width in zip(axes[0], widths):
        plot_accuracy_vs_depth(summary[summary["width"] == width], ax, chance, colours)
        ax.set_title(f"width {width}")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize="small")
    return figure


def plot_depth_width(summary_part, ax, figure) -> None:
    """Heatmap of mean test accuracy: depth across, width down."""
    table = summary_part.pivot_table(index="width", columns="depth", values="mean")
    image = ax.imshow(table.values, aspect="auto", origin="lower", vmin=0.4, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(table.columns)), [str(d) for d in table.columns], fontsize="small")
    ax.set_yticks(range(len(table.index)), [str(w) for w in table.index])
    ax.set_xlabel("hidden layers")
    ax.set_ylabel("width")
    figure.colorbar(image, ax=ax, label="mean test accuracy")


def depth_width_figure(summary):
    configs = sorted(summary["config"].unique())
    figure, axes = _figure(len(configs), 1, width=8, height=2.6 * len(configs))
    for ax, config in zip(axes[:, 0], configs):
        plot_depth_width(summary[summary["config"] == config], ax, figure)
        ax.set_title(config)
    return figure


def gradient_profile(history) -> dict[str, np.ndarray]:
    """Mean |gradient| per layer at the first, middle and last epoch of one history."""
    columns = layer_columns(history, "grad_mean_abs")
    picks = {"first epoch": 0, "middle epoch": len(history) // 2, "last epoch": len(history) - 1}
    return {name: history[columns].iloc[i].to_numpy(float) for name, i in picks.items()}


def plot_gradient_profile(history, ax) -> None:
    for name, values in gradient_profile(history).items():
        ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("layer (1 = first hidden, last = output)")
    ax.set_ylabel("mean |gradient|")
    ax.legend(fontsize="small")


def gradient_profile_figure(histories: dict, depth: int):
    configs = sorted(histories)
    figure, axes = _figure(1, len(configs), width=min(4.5 * len(configs), 16), height=4)
    for ax, config in zip(axes[0], configs):
        plot_gradient_profile(histories[config], ax)
        ax.set_title(f"{config}, depth {depth}")
    return figure


def plot_gradient_heatmap(history, ax, figure) -> None:
    """Layer x epoch image of log10 mean |gradient|."""
    columns = layer_columns(history, "grad_mean_abs")
    values = np.log10(np.clip(history[columns].to_numpy(float).T, 1e-12, None))
    image = ax.imshow(values, aspect="auto", origin="lower", cmap="magma",
                      extent=(history["epoch"].iloc[0] - 0.5, history["epoch"].iloc[-1] + 0.5, 0.5, len(columns) + 0.5))
    ax.set_xlabel("epoch")
    ax.set_ylabel("layer")
    figure.colorbar(image, ax=ax, label="log10 mean |gradient|")


def gradient_heatmap_figure(history, title: str):
    figure, axes = _figure(width=7, height=4)
    plot_gradient_heatmap(history, axes[0, 0], figure)
    axes[0, 0].set_title(title)
    return figure


def accuracy_figure(history, title: str):
    figure, axes = _figure(width=6, height=4)
    plot_accuracy(history, axes[0, 0])
    axes[0, 0].set_title(title)
    return figure


def plot_kernel_l1(history, ax) -> None:
    """Kernel L1 norm per layer over epochs: how much each layer changes (the tutorial's 'weight changes')."""
    for column in layer_columns(history, "kernel_l1"):
        ax.plot(history["epoch"], history[column], linewidth=1, label=column.split("/")[1])
    ax.set_xlabel("epoch")
    ax.set_ylabel("kernel L1 norm")
    ax.legend(fontsize="x-small", ncol=2)


def kernel_l1_figure(history, title: str):
    figure, axes = _figure(width=6, height=4)
    plot_kernel_l1(history, axes[0, 0])
    axes[0, 0].set_title(title)
    return figure


def percentile_bands(history, layer: str) -> np.ndarray:
    """``(9, epochs)``: the recorded percentiles of one layer's kernel gradient."""
    return np.stack([history[f"{stat}/{layer}"].to_numpy(float) for stat in PERCENTILE_STATS])


def plot_gradient_distribution(history, layer: str, ax) -> None:
    """TensorBoard-style bands: 0-100, 7-93, 16-84, 31-69 shaded, the median as a line."""
    bands = percentile_bands(history, layer)
    epochs = history["epoch"].to_numpy()
    for (low, high), alpha in zip(((0, 8), (1, 7), (2, 6), (3, 5)), (0.15, 0.25, 0.35, 0.45)):
        ax.fill_between(epochs, bands[low], bands[high], color="tab:orange", alpha=alpha, linewidth=0)
    ax.plot(epochs, bands[4], color="tab:red", linewidth=1)
    ax.set_title(layer, fontsize="small")
    ax.tick_params(labelsize="x-small")


def gradient_distribution_figure(history, title: str):
    layers = [c.split("/")[1] for c in layer_columns(history, PERCENTILE_STATS[4])]  # the median
    cols = min(3, len(layers))
    rows = -(-len(layers) // cols)
    figure, axes = _figure(rows, cols, width=4 * cols, height=2.2 * rows + 0.6)
    for ax, layer in zip(axes.flat, layers):
        plot_gradient_distribution(history, layer, ax)
    for ax in list(axes.flat)[len(layers):]:
        ax.set_visible(False)
    figure.suptitle(f"kernel gradient distribution over epochs: {title}")
    return figure
