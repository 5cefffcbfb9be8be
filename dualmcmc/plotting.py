"""Pictures of a run: density maps and sample scatters for 2-D data, sample and reconstruction grids for images.

matplotlib is imported inside the functions and only its object-oriented Agg path is used (no pyplot, no global
backend switch), so the core package never needs it and plotting works on headless machines.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

Bounds = tuple[float, float]
SCATTER_STYLE = dict(s=1.5, alpha=0.5, linewidths=0)


def _figure(n_panels: int, size: float = 3.2):
    from matplotlib.figure import Figure  # lazy: plotting is optional

    fig = Figure(figsize=(size * n_panels, size + 0.3), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, axes


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _square(ax, bounds: Bounds, title: str) -> None:
    ax.set_xlim(*bounds)
    ax.set_ylim(*bounds)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)


def _density(ax, density, bounds: Bounds, title: str) -> None:
    """A grid of cell masses indexed [row = y, col = x] (dualmcmc.metrics.grid convention)."""
    ax.imshow(_array(density), origin="lower", extent=(*bounds, *bounds), cmap="viridis", interpolation="nearest")
    _square(ax, bounds, title)


def _scatter(ax, samples, bounds: Bounds, title: str, color: str) -> None:
    pts = _array(samples)
    ax.scatter(pts[:, 0], pts[:, 1], color=color, **SCATTER_STYLE)
    _square(ax, bounds, title)


def plot_2d_run(
    path: "str | Path",
    *,
    bounds: Bounds,
    data,
    ebm_samples,
    true_density=None,
    model_density=None,
    generator_samples=None,
    reconstructions=None,
    title: str = "",
) -> Path:
    """One row of panels: true density, EBM density, EBM samples, generator samples, data vs reconstructions.

    Panels whose input is None are left out. ``reconstructions`` pairs row by row with the first rows of ``data``.
    """
    panels = []
    if true_density is not None:
        panels.append(lambda ax: _density(ax, true_density, bounds, "true density"))
    if model_density is not None:
        panels.append(lambda ax: _density(ax, model_density, bounds, "EBM density (grid-normalised)"))
    panels.append(lambda ax: _scatter(ax, ebm_samples, bounds, "EBM samples", "tab:blue"))
    if generator_samples is not None:
        panels.append(lambda ax: _scatter(ax, generator_samples, bounds, "generator samples", "tab:orange"))
    if reconstructions is not None:
        def draw_reconstructions(ax):
            recon = _array(reconstructions)
            _scatter(ax, _array(data)[: len(recon)], bounds, "", "0.6")
            ax.scatter(recon[:, 0], recon[:, 1], color="tab:red", **SCATTER_STYLE)
            _square(ax, bounds, "data (grey) vs reconstructions")

        panels.append(draw_reconstructions)
    else:
        panels.append(lambda ax: _scatter(ax, data, bounds, "data", "0.4"))
    fig, axes = _figure(len(panels))
    for draw, ax in zip(panels, axes):
        draw(ax)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_samples_2d(path: "str | Path", samples, bounds: Optional[Bounds] = None, title: str = "samples") -> Path:
    pts = _array(samples)
    if bounds is None:
        finite = pts[np.isfinite(pts).all(axis=1)]
        span = float(np.abs(finite).max()) * 1.05 if len(finite) else 1.0
        bounds = (-span, span)
    fig, axes = _figure(1, size=4.0)
    _scatter(axes[0], pts, bounds, title, "tab:blue")
    return _save(fig, path)


def image_side(dim: int) -> Optional[int]:
    """The side of a square grey image with ``dim`` pixels (64 -> 8), or None."""
    side = math.isqrt(dim)
    return side if side * side == dim and side > 1 else None


def plot_image_grid(path: "str | Path", samples, side: Optional[int] = None, title: str = "samples",
                    columns: int = 10) -> Path:
    """The first ``columns**2`` images of ``samples`` in a grid.

    (N, C, H, W) with C = 1 or 3: images in the model's range [-1, 1], shown as [0, 1] with clipping (one scale for
    all, so a faint sample looks faint). (N, side*side) flat vectors (user arrays of unknown range): grey, each
    scaled to its own range.
    """
    images = _array(samples)
    if images.ndim == 4:
        return plot_image_panels(path, {title: images}, columns=columns)
    if images.ndim != 2 or side is None or images.shape[1] != side * side:
        raise ValueError(f"plot_image_grid: 'samples' must be (N, C, H, W) images, or (N, side*side) vectors with "
                         f"'side' given; got shape {images.shape} and side {side!r}")
    images = images[: columns * columns].reshape(-1, side, side)
    rows = math.ceil(len(images) / columns)
    canvas = np.full((rows * (side + 1), columns * (side + 1)), np.nan)
    for k, image in enumerate(images):
        lo, hi = np.nanmin(image), np.nanmax(image)
        r, c = divmod(k, columns)
        canvas[r * (side + 1): r * (side + 1) + side, c * (side + 1): c * (side + 1) + side] = (image - lo) / max(hi - lo, 1e-12)
    fig, axes = _figure(1, size=5.0)
    axes[0].imshow(canvas, cmap="gray", interpolation="nearest")
    axes[0].set_axis_off()
    axes[0].set_title(title, fontsize=10)
    return _save(fig, path)


def _image_canvas(images: np.ndarray, columns: int) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] tiled into one (rows*(H+1), columns*(W+1), C) canvas in [0, 1]."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C = 1 or 3 channels, got shape {images.shape}")
    n, c, h, w = images.shape
    rows = math.ceil(n / columns)
    canvas = np.ones((rows * (h + 1), columns * (w + 1), c))
    for k, image in enumerate(np.clip((images + 1.0) / 2.0, 0.0, 1.0)):  # the data range, not per-image rescaling
        r, col = divmod(k, columns)
        canvas[r * (h + 1): r * (h + 1) + h, col * (w + 1): col * (w + 1) + w] = image.transpose(1, 2, 0)
    return canvas


def plot_image_panels(path: "str | Path", panels: dict, title: str = "", columns: int = 10) -> Path:
    """Side-by-side grids of images: ``panels`` maps a panel title to an (N, C, H, W) array in [-1, 1] (C = 1 or 3),
    e.g. EBM samples, generator samples, and data rows over their reconstructions."""
    fig, axes = _figure(len(panels), size=4.5)
    for ax, (name, images) in zip(axes, panels.items()):
        canvas = _image_canvas(_array(images)[: columns * columns], columns)
        ax.imshow(canvas[..., 0] if canvas.shape[-1] == 1 else canvas, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _save(fig, path: "str | Path") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def sample_bounds(data, pad: float = 0.1) -> Bounds:
    """Square plotting bounds around the data: (-4, 4) covers every toy; files get their own range."""
    pts = _array(data)
    lo, hi = float(pts.min()), float(pts.max())
    span = max(hi - lo, 1e-6)
    return (lo - pad * span, hi + pad * span)


__all__: Sequence[str] = ["plot_2d_run", "plot_samples_2d", "plot_image_grid", "plot_image_panels", "image_side",
                           "sample_bounds"]


def plot_interpolations(path: "str | Path", decoded, rows: int, steps: int, title: str = "interpolations") -> Path:
    """``decoded`` (rows * steps, ...) in row order: images as a rows x steps grid (each row one path), 2-D points as
    ``rows`` polylines from a circle (start) to a cross (end)."""
    values = _array(decoded)
    if values.ndim == 4:
        fig, axes = _figure(1, size=max(3.0, 0.45 * steps))
        canvas = _image_canvas(values, steps)
        axes[0].imshow(canvas[..., 0] if canvas.shape[-1] == 1 else canvas, cmap="gray", vmin=0, vmax=1,
                       interpolation="nearest")
        axes[0].set_axis_off()
        axes[0].set_title(title, fontsize=10)
        return _save(fig, path)
    if values.ndim != 2 or values.shape[1] != 2:
        raise ValueError(f"plot_interpolations: images (N, C, H, W) or 2-D points (N, 2) expected, got {values.shape}")
    paths = values.reshape(rows, steps, 2)
    finite = values[np.isfinite(values).all(axis=1)]
    span = float(np.abs(finite).max()) * 1.1 if len(finite) else 1.0
    fig, axes = _figure(1, size=4.0)
    ax = axes[0]
    for k, line in enumerate(paths):
        color = f"C{k % 10}"
        ax.plot(line[:, 0], line[:, 1], "-", color=color, linewidth=1.0, marker=".", markersize=3)
        ax.plot(*line[0], "o", color=color, markersize=5)
        ax.plot(*line[-1], "x", color=color, markersize=6)
    _square(ax, (-span, span), title)
    return _save(fig, path)


def plot_completion(path: "str | Path", arrays: dict, title: str = "completion", columns: int = 10) -> Path:
    """Observed (missing entries grey) / completed / truth. ``arrays``: truth, observed_mask, completed as arrays of
    one shape: images (N, C, H, W) in [-1, 1] side by side; 2-D points as the truth and the completions, each
    completion joined to its truth by a line (the observed coordinate is shared, so the lines run along the missing
    one)."""
    truth, mask, completed = (_array(arrays[k]) for k in ("truth", "observed_mask", "completed"))
    if truth.ndim == 4:
        observed = np.where(mask > 0, truth, 0.0)
        return plot_image_panels(path, {"observed": observed, "completed": completed, "truth": truth}, title=title,
                                 columns=columns)
    if truth.ndim != 2 or truth.shape[1] != 2:
        raise ValueError(f"plot_completion: images (N, C, H, W) or 2-D points (N, 2) expected, got {truth.shape}")
    finite = np.concatenate([truth, completed])
    finite = finite[np.isfinite(finite).all(axis=1)]
    span = float(np.abs(finite).max()) * 1.1 if len(finite) else 1.0
    fig, axes = _figure(1, size=4.0)
    ax = axes[0]
    for t, c in zip(truth, completed):
        ax.plot([t[0], c[0]], [t[1], c[1]], "-", color="0.7", linewidth=0.5)
    ax.scatter(truth[:, 0], truth[:, 1], s=6, color="tab:blue", label="truth")
    ax.scatter(completed[:, 0], completed[:, 1], s=6, color="tab:red", label="completed")
    ax.legend(fontsize=7, loc="upper right")
    _square(ax, (-span, span), title)
    return _save(fig, path)
