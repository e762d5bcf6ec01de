"""Figures: PNGs for 2D and 1D surfaces, unfinished points, shared colour scales, plot_file."""

import numpy as np
import pytest

pytest.importorskip("h5py")
pytest.importorskip("matplotlib")

from fastloss import viz as plot  # noqa: E402
from fastloss.io import Surface  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
MARKERS = {"w1": (0.0, 0.0), "w2": (1.0, 0.0), "w3": (0.4, 0.9)}


def plane(scale=1.0, nx=31, ny=25):
    """Three low-loss basins at the markers, like the plane through three trained networks."""
    x, y = np.linspace(-0.4, 1.4, nx), np.linspace(-0.4, 1.3, ny)
    X, Y = np.meshgrid(x, y)
    d = np.min([(X - a) ** 2 + (Y - b) ** 2 for a, b in MARKERS.values()], axis=0)
    loss = scale * (0.02 + 3 * (1 - np.exp(-d / 0.05)) + 0.5 * d)
    acc = 100 * np.exp(-d / 0.1)
    return Surface(
        x,
        y,
        {"train_loss": loss, "train_acc": acc, "test_loss": 1.2 * loss, "test_acc": 0.9 * acc},
        markers=MARKERS,
        attrs={"xlabel": "α (units of ‖u‖)", "ylabel": "β (units of ‖v‖)"},
    )


def line():
    t = np.linspace(-0.2, 1.2, 41)
    loss = 0.1 + np.sin(np.pi * t) ** 2
    return Surface(
        t, None, {"train_loss": loss, "train_acc": 100 - 30 * loss}, markers={"w1": 0, "w2": 1}
    )


def partial(s):
    s.done[10:, 20:] = False
    for v in s.values.values():
        v[~s.done] = np.nan
    return s


def assert_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(PNG) and len(data) > 5000


def main_mappable(fig):
    ax = fig.axes[0]
    return (ax.collections or ax.images)[0]


@pytest.mark.parametrize("kind", ["contour", "heatmap", "surface3d"])
@pytest.mark.parametrize("metric", ["train_loss", "test_acc", "train_err"])
def test_2d_figures(tmp_path, kind, metric):
    fig = getattr(plot, f"plot_{kind}")(plane(), metric)
    fig.savefig(tmp_path / "f.png")
    assert_png(tmp_path / "f.png")
    norm = type(main_mappable(fig).norm).__name__
    if kind == "surface3d":  # height is log10 of a loss
        assert ("log10" in fig.axes[0].get_zlabel()) == (metric == "train_loss")
    else:
        assert norm == ("LogNorm" if metric == "train_loss" else "Normalize")


def test_contour_draws_lines_over_fill_and_labels_markers():
    fig = plot.plot_contour(plane())
    ax = fig.axes[0]
    filled, lines = ax.collections[0], ax.collections[1]
    assert filled.filled and not lines.filled and len(lines.levels) >= 5
    assert np.all(lines.levels > 0)
    assert {t.get_text() for t in ax.texts} >= set(MARKERS)
    assert ax.get_xlabel().startswith("α")
    assert len(fig.axes) == 2  # the colour bar


def test_unfinished_points_are_masked_and_counted(tmp_path):
    s = partial(plane())
    s.values["train_loss"][0, 0] = 0.0  # not drawable on a log scale
    for kind in ("contour", "heatmap", "surface3d"):
        fig = getattr(plot, f"plot_{kind}")(s)
        title = fig.axes[0].get_title()
        assert "165/775 points not computed" in title
        assert "1 values ≤ 0 masked" in title
        fig.savefig(tmp_path / f"{kind}.png")
        assert_png(tmp_path / f"{kind}.png")
    s.done[:] = False
    fig = plot.plot_contour(s)
    assert "no points computed yet" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "empty.png")


def test_shared_colour_scale():
    a, b = plane(1.0), plane(3.0)
    vmin, vmax = plot.shared_limits([a, b], "train_loss")
    assert vmin == pytest.approx(a.values["train_loss"].min())
    assert vmax == pytest.approx(b.values["train_loss"].max())
    for s in (a, b):
        for fn in (plot.plot_contour, plot.plot_heatmap):
            clim = main_mappable(fn(s, vmin=vmin, vmax=vmax)).get_clim()
            assert clim == pytest.approx((vmin, vmax))
    lo, hi = plot.shared_limits([a, b], "train_acc")
    assert main_mappable(plot.plot_contour(a, "train_acc", vmin=lo, vmax=hi)).get_clim() == (
        pytest.approx(lo),
        pytest.approx(hi),
    )
    with pytest.raises(ValueError, match="no computed values"):
        s = plane()
        s.done[:] = False
        plot.shared_limits([s], "train_loss")


def test_profiles(tmp_path):
    fig = plot.plot_profile(line())
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(fig.axes) == 2  # loss left, accuracy right
    fig.savefig(tmp_path / "line.png")
    assert_png(tmp_path / "line.png")
    s = partial(plane())
    fig = plot.plot_profile(s, "train_loss,train_acc", y=1.0)
    assert "at y = " in fig.axes[0].get_title() and "not computed" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "row.png")
    assert_png(tmp_path / "row.png")
    plot.plot_profile(s, ["test_loss"], x=1.0).savefig(tmp_path / "col.png")
    with pytest.raises(ValueError, match="exactly one of"):
        plot.plot_profile(s)
    with pytest.raises(ValueError, match="use plot_profile"):
        plot.plot_contour(line())


def test_into_existing_axes():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    assert plot.plot_contour(plane(), ax=left, colorbar=False) is fig
    assert plot.plot_profile(line(), ax=right) is fig


def test_save_figures(tmp_path):
    written = plot.save_figures(plane(), tmp_path / "figs", metrics=["train_loss", "test_acc"])
    names = sorted(p.rsplit("/", 1)[1] for p in written)
    assert names == sorted(
        f"{m}_{k}.png"
        for m in ["train_loss", "test_acc"]
        for k in ["contour", "heatmap", "surface3d"]
    )
    for p in written:
        assert_png(p)
    written = plot.save_figures(line(), tmp_path / "line")
    assert sorted(p.rsplit("/", 1)[1] for p in written) == [
        "train_acc_profile.png",
        "train_loss_profile.png",
    ]


def test_plot_file(tmp_path):
    path = tmp_path / "plane.h5"
    partial(plane()).save(path)
    out = plot.plot_file(path, tmp_path / "fig.png")
    assert out == str(tmp_path / "fig.png")
    assert_png(out)
    assert_png(plot.plot_file(path, metric="test_acc", kind="heatmap"))
    assert (tmp_path / "plane_test_acc_heatmap.png").exists()
    plot.plot_file(path, tmp_path / "fig.pdf", kind="surface3d")
    assert (tmp_path / "fig.pdf").read_bytes().startswith(b"%PDF")
    line().save(tmp_path / "line.h5")
    assert_png(
        plot.plot_file(tmp_path / "line.h5", tmp_path / "l.png", metric="train_loss,train_acc")
    )
    with pytest.raises(KeyError, match="train_loss"):
        plot.plot_file(path, metric="nope")
    with pytest.raises(ValueError, match="unknown kind"):
        plot.plot_file(path, kind="video")
