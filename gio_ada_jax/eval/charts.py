"""Charts of compared evaluations (reports.compare rows): per-class IoU bars for each row, with
error bars over its runs, and the paper's published mIoU where there is one.

matplotlib draws into files only (its Agg backend; no display is needed).
"""

import io
import math
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (after the backend is chosen)

from gio_ada_jax.files import atomic_write  # noqa: E402


def _percent(pair: tuple[float, float]) -> tuple[float, float]:
  mean, std = pair
  return (math.nan, 0.0) if math.isnan(mean) else (100 * mean, 100 * std)


def iou_bars(rows: list[dict[str, Any]], classes: list[str], title: str,
             paper_miou: dict[str, float] | None = None) -> bytes:
  """A PNG: for each class and mIoU a group of bars, one per row (mean IoU in percent, error
  bar ± one sample std over the row's runs), and the paper's mIoU of a row (`paper_miou`, by
  row name) as a black marker on its mIoU bar."""
  groups = list(classes) + ["mIoU"]
  width = 0.8 / max(len(rows), 1)
  figure, axes = plt.subplots(figsize=(max(8.0, 0.9 * len(groups) + 2) + 3, 4.5), dpi=100)
  x = np.arange(len(groups))
  for i, row in enumerate(rows):
    values = [_percent(row["iou"][c]) for c in classes] + [_percent(row["miou"])]
    means = [m for m, _ in values]
    errors = [s if row["runs"] > 1 else 0.0 for _, s in values]
    offset = (i - (len(rows) - 1) / 2) * width
    axes.bar(x + offset, means, width, yerr=errors, capsize=2,
             label=f"{row['name']} (n={row['runs']})")
    paper = (paper_miou or {}).get(row["name"])
    if paper is not None:
      axes.plot([x[-1] + offset], [paper], marker="_", markersize=12, markeredgewidth=2.5,
                color="black")
  if any(v is not None for v in (paper_miou or {}).values()):
    axes.plot([], [], marker="_", linestyle="", markersize=12, markeredgewidth=2.5,
              color="black", label="paper's mIoU (as published)")
  axes.set_xticks(x, groups, rotation=30, ha="right")
  axes.set_ylabel("IoU (%)")
  axes.set_ylim(0, 100)
  axes.set_title(title, fontsize=10)
  axes.grid(axis="y", alpha=0.3)
  axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  plt.close(figure)
  return buffer.getvalue()


def write_iou_bars(path: str, rows: list[dict[str, Any]], classes: list[str], title: str,
                   paper_miou: dict[str, float] | None = None) -> None:
  """`iou_bars` written to `path` (never half-written: files.atomic_write)."""
  atomic_write(path, iou_bars(rows, classes, title, paper_miou))
