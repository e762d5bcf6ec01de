"""The pages of `fastloss.viz.page` whose results run along one axis (a line, a curve
evaluation, an ensemble's members), and what every page shares: `Page`, the numbers' format,
the buttons' look."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fastloss.io import CurveResult, Surface
from fastloss.io.atomic import atomic_output
from fastloss.io.ensemble_file import METRICS
from fastloss.viz.style import metric_label, uses_log_scale

__all__ = ["FONT", "MENU", "Page", "curve_page", "ensemble_page", "line_page", "numbers"]

COLOURS = {"curve": "#1f77b4", "segment": "#d62728", "members": "#7f7f7f"}
DASHES = {"train": "solid", "test": "dash"}
MENU = {
    "type": "buttons",
    "direction": "right",
    "showactive": True,
    "xanchor": "left",
    "yanchor": "bottom",
}
FONT = {"family": "Helvetica, Arial, sans-serif", "size": 13}


@dataclass
class Page:
    """A result's figure, the one-line ``summary`` the command prints (kind, shape,
    metrics), ``note``, how the file was read when it came from another tool, and the
    file's ``kind`` (`fastloss.io.kinds.result_kind`)."""

    figure: go.Figure
    summary: str
    note: str | None = None
    kind: str = ""

    def save(self, out: str | os.PathLike) -> str:
        """Write the page to ``out`` atomically (an existing page is replaced)."""
        with atomic_output(out, overwrite=True) as tmp:
            self.figure.write_html(
                tmp,
                include_plotlyjs=True,
                full_html=True,
                auto_open=False,
                auto_play=False,
                div_id="fastloss-view",  # not a random id: the same result, the same page
            )
        return os.fspath(out)


def numbers(a: np.ndarray) -> list:
    """Nested lists of 6 significant digits (enough to draw and to read in a tooltip, and
    shorter in the page than full doubles), None (a gap) where not finite."""
    if a.ndim > 1:
        return [numbers(row) for row in a]
    return [float(f"{v:.6g}") if math.isfinite(v) else None for v in a.tolist()]


def _line_figure(panels: Sequence[str], title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels))
    fig.update_layout(
        font=FONT,
        template="plotly_white",
        height=520,
        title={"text": title},
        hovermode="x unified",
        margin={"t": 110},
    )
    return fig


def _log_axis_buttons(fig: go.Figure, axes: Sequence[int]) -> None:
    """Log or linear y axes for the loss panels ``axes`` (1-based), log first."""
    if not axes:
        return
    for a in axes:
        fig.update_yaxes(type="log", row=1, col=a)

    def layout(kind: str) -> dict[str, str]:
        return {f"yaxis{'' if a == 1 else a}.type": kind for a in axes}

    buttons = [
        {"label": kind, "method": "relayout", "args": [layout(kind)]} for kind in ("log", "linear")
    ]
    fig.update_layout(
        updatemenus=[{**MENU, "buttons": buttons, "x": 1.0, "xanchor": "right", "y": 1.12}]
    )


def line_page(surface: Surface, name: str) -> Page:
    assert surface.done is not None
    metrics = surface.metrics
    percent = [m for m in metrics if m.endswith(("_acc", "_err"))]
    panels = {"loss": [m for m in metrics if m not in percent], "accuracy, error (%)": percent}
    panels = {p: ms for p, ms in panels.items() if ms}
    xlabel = str(surface.attrs.get("xlabel", "t"))
    fig = _line_figure(list(panels), f"{name}: line")
    logged = []
    for col, (panel, ms) in enumerate(panels.items(), start=1):
        for m in ms:
            z = np.where(surface.done, surface.metric(m), np.nan)
            split = m.partition("_")[0]
            fig.add_trace(
                go.Scatter(
                    x=numbers(surface.x),
                    y=numbers(z),
                    name=metric_label(m),
                    mode="lines",
                    line={"dash": DASHES.get(split, "dot")},
                ),
                row=1,
                col=col,
            )
        positive = all(np.nanmin(surface.metric(m)) > 0 for m in ms)
        if panel == "loss" and positive and all(uses_log_scale(m, None) for m in ms):
            logged.append(col)
        fig.update_xaxes(title_text=xlabel, row=1, col=col)
        for marker, (t, _) in surface.markers.items():
            fig.add_vline(x=t, line_dash="dot", line_color="grey", row=1, col=col)
            if col == 1:
                fig.add_annotation(x=t, y=1.0, yref="y domain", text=marker, showarrow=False)
    _log_axis_buttons(fig, logged)
    summary = f"line, {len(surface.x)} points; metrics {', '.join(metrics)}"
    return Page(fig, summary)


def curve_page(result: CurveResult, name: str) -> Page:
    """Loss and error (or each profile kind) on the curve against the segment, and the
    ensembles of w1 with each point."""
    found = {n.split("/")[1].partition("_")[2] for n in result.values if "/" in n}
    order = ["loss", "nll", "err", "acc"]
    kinds = [
        k
        for k in sorted(found, key=lambda k: (order.index(k) if k in order else 4, k))
        if f"curve/{result.splits[0]}_{k}" in result.values
        and not (k == "acc" and "err" in found)
        and not (k == "nll" and _same(result, "nll", "loss"))
    ]
    ensemble = [n for n in result.values if n.startswith("ensemble/curve/") and n.endswith("_acc")]
    panels = [metric_label(f"x_{k}").removeprefix("x ") for k in kinds]
    if ensemble:
        panels.append("ensemble of w1 and the point at t: accuracy (%)")
    fig = _line_figure(panels, f"{name}: a curve against the straight segment")
    for col, kind in enumerate(kinds, start=1):
        for path in ("curve", "segment"):
            for split in result.splits:
                _profile(fig, result, f"{path}/{split}_{kind}", path, split, col)
    if ensemble:
        split = result.ensemble_split
        for path in ("curve", "segment"):
            _profile(fig, result, f"ensemble/{path}/{split}_acc", path, split, len(kinds) + 1)
    for col in range(1, len(panels) + 1):
        fig.update_xaxes(title_text="t (w1 at 0, w2 at 1)", range=[0, 1], row=1, col=col)
    positive = "loss" in kinds and all(
        np.all(result[f"{p}/{s}_loss"] > 0) for p in ("curve", "segment") for s in result.splits
    )
    _log_axis_buttons(fig, [kinds.index("loss") + 1] if positive else [])
    curve = result.attrs.get("curve") or {}
    what = "curve evaluation" + (f" ({curve['kind']})" if "kind" in curve else "")
    names = list(dict.fromkeys(n.rpartition("/")[2] for n in result.values))
    summary = f"{what}, {len(result.t)} values of t; metrics {', '.join(names)}"
    return Page(fig, summary)


def _same(result: CurveResult, a: str, b: str) -> bool:
    return all(
        f"curve/{s}_{a}" in result.values
        and np.allclose(result[f"curve/{s}_{a}"], result[f"curve/{s}_{b}"])
        for s in result.splits
    )


def _profile(
    fig: go.Figure, result: CurveResult, name: str, path: str, split: str, col: int
) -> None:
    if name not in result.values:
        return
    fig.add_trace(
        go.Scatter(
            x=numbers(result.t),
            y=numbers(result[name]),
            name=f"{path}, {split}",
            legendgroup=f"{path}, {split}",
            showlegend=col == 1,
            mode="lines",
            line={"color": COLOURS[path], "dash": DASHES[split]},
        ),
        row=1,
        col=col,
    )


# --------------------------------------------------------------------------- ensembles


def ensemble_page(stored: dict[str, Any], name: str) -> Page:
    """Each member and the ensemble of the first m members against m, per metric, and the
    ensemble's reliability diagram."""
    labels = {"acc": "accuracy (%)", "nll": "NLL", "ece": "ECE", "brier": "Brier score"}
    fig = make_subplots(
        rows=2,
        cols=3,
        specs=[[{}, {}, {"rowspan": 2}], [{}, {}, None]],
        subplot_titles=[*(labels[m] for m in METRICS[:2]), "reliability"]
        + [labels[m] for m in METRICS[2:]],
        horizontal_spacing=0.07,
        vertical_spacing=0.14,
    )
    places = [(1, 1), (1, 2), (2, 1), (2, 2)]
    for (row, col), metric in zip(places, METRICS, strict=True):
        scale = 100.0 if metric == "acc" else 1.0
        for part, style in (("members", "dot"), ("cumulative", "solid")):
            values = np.asarray(stored[part][metric], dtype=np.float64) * scale
            fig.add_trace(
                go.Scatter(
                    x=list(range(1, len(values) + 1)),
                    y=numbers(values),
                    name="member m" if part == "members" else "ensemble of members 1…m",
                    legendgroup=part,
                    showlegend=metric == "acc",
                    mode="lines+markers",
                    line={
                        "dash": style,
                        "color": COLOURS["members" if part == "members" else "curve"],
                    },
                ),
                row=row,
                col=col,
            )
        fig.update_xaxes(title_text="members m", dtick=1, row=row, col=col)
    bins = stored["reliability"]
    filled = np.asarray(bins["count"]) > 0
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line={"color": "grey", "dash": "dot"},
            name="calibrated",
        ),
        row=1,
        col=3,
    )
    fig.add_trace(
        go.Scatter(
            x=numbers(np.asarray(bins["confidence"])[filled]),
            y=numbers(np.asarray(bins["accuracy"])[filled]),
            customdata=np.asarray(bins["count"])[filled].astype(int).tolist(),
            mode="lines+markers",
            name="ensemble",
            line={"color": COLOURS["segment"]},
            hovertemplate="confidence %{x:.3f}<br>accuracy %{y:.3f}<br>%{customdata} samples",
        ),
        row=1,
        col=3,
    )
    fig.update_xaxes(title_text="confidence (max probability)", range=[0, 1], row=1, col=3)
    fig.update_yaxes(title_text="accuracy", range=[0, 1], row=1, col=3)
    scores = stored["ensemble"]
    members = len(stored["members"]["acc"])
    title = (
        f"{name}: an ensemble of {members} members, accuracy {100 * scores['acc']:.2f}%, "
        f"NLL {scores['nll']:.4g}, ECE {scores['ece']:.4g}"
    )
    fig.update_layout(font=FONT, template="plotly_white", height=680, title={"text": title})
    summary = (
        f"ensemble evaluation, {members} members, {len(stored['labels'])} test samples; "
        f"metrics {', '.join(METRICS)}"
    )
    return Page(fig, summary)
