"""A regular 2-D grid of cell centres, and densities normalised on it (from a log-density or from samples).

Conventions shared by the metrics and by plotting: the grid splits ``bounds`` into ``resolution`` equal cells
per axis and evaluates at cell centres; grids are (resolution, resolution) tensors indexed [row = y, col = x],
so ``plt.imshow(grid, origin="lower", extent=(x_lo, x_hi, y_lo, y_hi))`` draws them the right way up.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

DEFAULT_BATCH = 65_536
DEFAULT_BANDWIDTH_SHARE = 1.0 / 250.0


def axis_bounds(bounds) -> tuple[tuple[float, float], tuple[float, float]]:
    """((x_lo, x_hi), (y_lo, y_hi)) from ``(lo, hi)`` (same for both axes) or from that pair of pairs."""
    if len(bounds) == 2 and all(isinstance(b, Sequence) for b in bounds):
        (x_lo, x_hi), (y_lo, y_hi) = bounds
    else:
        x_lo, x_hi = bounds
        y_lo, y_hi = x_lo, x_hi
    pairs = ((float(x_lo), float(x_hi)), (float(y_lo), float(y_hi)))
    for lo, hi in pairs:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"grid bounds must be finite with lo < hi, got {bounds!r}")
    return pairs


def _check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"grid resolution must be a positive int, got {resolution!r}")
    return resolution


def grid_points(bounds=(-4.0, 4.0), resolution: int = 500) -> tuple[Tensor, Tensor, Tensor]:
    """(xs (res,), ys (res,), points (res*res, 2)) of cell centres, float32.

    ``points.reshape(res, res, 2)[i, j] == (xs[j], ys[i])``: rows run over y, columns over x.
    """
    resolution = _check_resolution(resolution)
    (x_lo, x_hi), (y_lo, y_hi) = axis_bounds(bounds)
    steps = torch.arange(resolution, dtype=torch.float64) + 0.5
    xs = x_lo + steps * ((x_hi - x_lo) / resolution)
    ys = y_lo + steps * ((y_hi - y_lo) / resolution)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
    return xs.float(), ys.float(), points.float()


def cell_area(bounds=(-4.0, 4.0), resolution: int = 500) -> float:
    """Area of one grid cell."""
    (x_lo, x_hi), (y_lo, y_hi) = axis_bounds(bounds)
    return (x_hi - x_lo) * (y_hi - y_lo) / _check_resolution(resolution) ** 2


@torch.no_grad()
def grid_log_values(
    log_prob_fn: Callable[[Tensor], Tensor],
    bounds=(-4.0, 4.0),
    resolution: int = 500,
    batch: int = DEFAULT_BATCH,
    device: torch.device | str | None = None,
) -> Tensor:
    """log_prob_fn at the cell centres, float64 CPU (res, res), in batches of ``batch`` points under no_grad.

    ``log_prob_fn`` may be unnormalised (e.g. -energy); points are sent to ``device`` when given.
    """
    _, _, points = grid_points(bounds, resolution)
    if device is not None:
        points = points.to(device)
    parts = []
    for start in range(0, len(points), max(1, int(batch))):
        chunk = points[start : start + batch]
        values = torch.as_tensor(log_prob_fn(chunk))
        if values.numel() != len(chunk):
            raise ValueError(
                f"log_prob_fn returned {tuple(values.shape)} for {len(chunk)} points; expected shape ({len(chunk)},)"
            )
        parts.append(values.detach().reshape(-1).to(device="cpu", dtype=torch.float64))
    return torch.cat(parts).reshape(resolution, resolution)


def normalise_log_grid(log_values: Tensor) -> Tensor:
    """Log cell masses that sum to one (log-sum-exp), float64.

    All-NaN when the input holds NaN or +inf or is -inf everywhere: no distribution can be read from it.
    """
    values = log_values.to(torch.float64)
    if torch.isnan(values).any() or torch.isposinf(values).any() or torch.isneginf(values).all():
        return torch.full_like(values, math.nan)
    return values - torch.logsumexp(values.reshape(-1), dim=0)


def grid_log_density(
    log_prob_fn: Callable[[Tensor], Tensor],
    bounds=(-4.0, 4.0),
    resolution: int = 500,
    batch: int = DEFAULT_BATCH,
    device: torch.device | str | None = None,
) -> Tensor:
    """Log cell masses (res, res), float64, of the density exp(log_prob_fn) normalised on the grid."""
    return normalise_log_grid(grid_log_values(log_prob_fn, bounds, resolution, batch, device))


def grid_density(
    log_prob_fn: Callable[[Tensor], Tensor],
    bounds=(-4.0, 4.0),
    resolution: int = 500,
    batch: int = DEFAULT_BATCH,
    device: torch.device | str | None = None,
    per_area: bool = False,
) -> Tensor:
    """exp(log_prob_fn) normalised on the grid, float64 (res, res).

    Cell masses summing to one; with ``per_area=True`` divided by the cell area, so the grid integrates to one
    (comparable across resolutions, the values a colour bar of a density should show).
    """
    masses = grid_log_density(log_prob_fn, bounds, resolution, batch, device).exp()
    return masses / cell_area(bounds, resolution) if per_area else masses


def histogram_log_density(
    samples: Tensor, bounds=(-4.0, 4.0), resolution: int = 500, bandwidth: float | None = None
) -> Tensor:
    """Log cell masses (res, res), float64, of a Gaussian-smoothed histogram of 2-D ``samples``.

    Samples outside ``bounds`` (or non-finite) are dropped; the result is normalised on the grid.
    ``bandwidth`` (data units, per axis) defaults to 1/250 of the grid's span: 0.032 on [-4, 4] (2 cells of
    the default 500-cell grid); 0 turns the smoothing off.

    Bias: this estimates the true density convolved with N(0, bandwidth^2 I) (plus binning), so a perfect
    model scores a KL > 0 of about (bandwidth / w)^4 / 2 nats for structure of width w (3e-4 for w = 0.2 at
    the default), plus sampling noise of about (occupied cells / cells under the kernel) / (2 N) nats.
    """
    resolution = _check_resolution(resolution)
    (x_lo, x_hi), (y_lo, y_hi) = axis_bounds(bounds)
    pts = torch.as_tensor(samples).detach().to(device="cpu", dtype=torch.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"histogram needs samples of shape (N, 2), got {tuple(pts.shape)}")
    col = torch.floor((pts[:, 0] - x_lo) / (x_hi - x_lo) * resolution)
    row = torch.floor((pts[:, 1] - y_lo) / (y_hi - y_lo) * resolution)
    inside = (col >= 0) & (col < resolution) & (row >= 0) & (row < resolution)  # False for NaN too
    if not inside.any():
        raise ValueError(f"no sample of {len(pts)} falls inside the grid bounds {bounds!r}")
    flat = (row[inside] * resolution + col[inside]).long()
    counts = torch.bincount(flat, minlength=resolution * resolution).to(torch.float64)
    if bandwidth is None:  # a fixed share of the span, so the bias does not grow on coarse grids
        bandwidth = DEFAULT_BANDWIDTH_SHARE * min(x_hi - x_lo, y_hi - y_lo)
    sigma_x = float(bandwidth) * resolution / (x_hi - x_lo)
    sigma_y = float(bandwidth) * resolution / (y_hi - y_lo)
    grid_counts = counts.reshape(resolution, resolution)
    smoothed = _blur_last_axis(_blur_last_axis(grid_counts.T, sigma_y).T, sigma_x)
    return (smoothed / smoothed.sum()).log()


def _blur_last_axis(image: Tensor, sigma_cells: float) -> Tensor:
    """Gaussian blur along the last axis of a 2-D float64 image, zero-padded (mass leaving the grid is lost)."""
    if sigma_cells <= 0:
        return image
    half = max(1, math.ceil(4.0 * sigma_cells))
    offsets = torch.arange(-half, half + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma_cells) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    rows = image.reshape(image.shape[0], 1, image.shape[1])
    return torch.nn.functional.conv1d(rows, kernel, padding=half).reshape(image.shape).clamp_min(0.0)
