"""``fastloss view``: the page of each kind of result (the figure embedded in the HTML holds
the traces, buttons and frames it should), self-contained, and one-line refusals."""

import json
import re

import h5py
import numpy as np
import pytest

from fastloss.cli import main as cli
from fastloss.io import CurveResult, FramesWriter, Surface
from fastloss.io.ensemble_file import save_ensemble_file
from fastloss.viz import view_file

MARKERS = {"w1": (0.0, 0.0), "w2": (1.0, 0.0), "w3": (0.4, 0.9)}


def plane(nx=9, ny=7, **attrs):
    x, y = np.linspace(-0.4, 1.4, nx), np.linspace(-0.4, 1.3, ny)
    X, Y = np.meshgrid(x, y)
    d = np.min([(X - a) ** 2 + (Y - b) ** 2 for a, b in MARKERS.values()], axis=0)
    loss = 0.02 + 3 * (1 - np.exp(-d / 0.05))
    acc = 100 * np.exp(-d / 0.1)
    values = {"train_loss": loss, "train_acc": acc, "test_loss": 1.2 * loss, "test_acc": acc}
    return Surface(x, y, values, markers=MARKERS, attrs=attrs)


def view(args, capsys):
    """Run ``fastloss view`` in this process: (status, stdout lines, stderr lines)."""
    status = cli.main(["view", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


def page(path):
    """The HTML's figure: ``(data, layout, frames)`` as plotly.js receives them."""
    html = path.read_text(encoding="utf-8")
    assert re.search(r"<script[^>]*\bsrc=", html) is None  # nothing fetched: all inline
    assert "plotly.js v" in html
    decoder = json.JSONDecoder()
    pos = html.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    parts = []
    for _ in range(3):  # the div's id, the data, the layout
        while html[pos] in " \n,":
            pos += 1
        value, pos = decoder.raw_decode(html, pos)
        parts.append(value)
    frames = []
    if "Plotly.addFrames(" in html:
        frames = decoder.raw_decode(html, html.index("[", html.index("Plotly.addFrames(")))[0]
    return parts[1], parts[2], frames


def rounded(a):
    return np.array([[float(f"{v:.6g}") for v in row] for row in np.asarray(a)])


def test_plane_page_has_surface_and_contour_per_metric_buttons_and_markers(tmp_path, capsys):
    plane().save(tmp_path / "s.h5")
    status, out, err = view([tmp_path / "s.h5", "--out", tmp_path / "p.html"], capsys)
    assert status == 0 and err == []
    assert out == [
        f"{tmp_path / 'p.html'}: surface on the plane through w1, w2, w3, 7x9 points; metrics "
        "train_loss, train_acc, "
        "test_loss, test_acc"
    ]
    data, layout, frames = page(tmp_path / "p.html")
    assert frames == []
    metrics = ["train_loss", "train_acc", "test_loss", "test_acc"]
    pairs = [data[2 * k : 2 * k + 2] for k in range(len(metrics))]
    for k, (surface, contour) in enumerate(pairs):
        assert (surface["type"], contour["type"]) == ("surface", "contour")
        assert surface["name"] == contour["name"] == metrics[k]
        axis = "coloraxis" if k == 0 else f"coloraxis{k + 1}"
        assert surface["coloraxis"] == contour["coloraxis"] == axis  # one colour scale
        assert layout[axis]["showscale"] == (k == 0)
        assert surface["visible"] == contour["visible"] == (k == 0)
    # losses drawn as log10, the tooltip showing the value itself
    loss = plane().values["train_loss"]
    np.testing.assert_allclose(data[0]["z"], np.log10(loss), rtol=1e-5)
    np.testing.assert_allclose(data[1]["customdata"], loss, rtol=1e-5)
    assert "%{customdata" in data[1]["hovertemplate"] and "train loss" in data[1]["hovertemplate"]
    assert "%{z" in data[3]["hovertemplate"]  # accuracy: linear
    bar = layout["coloraxis"]["colorbar"]  # ticks at values, placed at their log10
    ticks = np.array([float(text) for text in bar["ticktext"]])
    np.testing.assert_allclose(bar["tickvals"], np.log10(ticks))
    assert len(ticks) >= 3 and loss.min() <= ticks.min() and ticks.max() <= loss.max()
    (markers,) = data[8:]
    assert markers["type"] == "scatter" and markers["text"] == list(MARKERS)
    assert list(zip(markers["x"], markers["y"], strict=True)) == list(MARKERS.values())
    metric_menu, scale_menu = layout["updatemenus"]
    assert [b["label"] for b in metric_menu["buttons"]] == [
        "train loss",
        "train accuracy (%)",
        "test loss",
        "test accuracy (%)",
    ]
    shown = metric_menu["buttons"][3]["args"]
    assert shown[0]["visible"] == [False] * 6 + [True, True, True]
    assert shown[1]["coloraxis4.showscale"] and not shown[1]["coloraxis.showscale"]
    assert [b["label"] for b in scale_menu["buttons"]] == ["log", "linear"]
    log, linear = (b["args"] for b in scale_menu["buttons"])
    assert log[2] == linear[2] == [0, 1, 4, 5]  # the losses' traces
    np.testing.assert_allclose(linear[0]["z"][0], rounded(loss))
    np.testing.assert_allclose(log[0]["z"][3], rounded(np.log10(1.2 * loss)))
    assert linear[1]["coloraxis.colorbar.tickvals"] is None


def test_curve_plane_draws_the_curve_segment_and_bends(tmp_path, capsys):
    t = np.linspace(0, 1, 21)
    xy = np.stack([t, 2 * t * (1 - t) * 1.2], axis=1)
    curve = {"kind": "bezier", "bends": 1, "t": t, "xy": xy, "bends_xy": [[0.5, 1.2]]}
    s = plane(curve=curve)
    s.markers = {"w1": (0.0, 0.0), "w2": (1.0, 0.0), "bend1": (0.5, 1.2)}
    s.save(tmp_path / "plane.h5")
    status, out, _ = view([tmp_path / "plane.h5"], capsys)  # default: plane.html
    assert status == 0 and out[0].startswith(f"{tmp_path / 'plane.html'}: the plane of a curve")
    data, _, _ = page(tmp_path / "plane.html")
    lines = {trace.get("name"): trace for trace in data if trace["type"] == "scatter"}
    np.testing.assert_allclose(lines["curve"]["x"], t)
    np.testing.assert_allclose(lines["curve"]["y"], xy[:, 1], atol=1e-6)
    assert lines["segment"]["x"] == [0.0, 1.0] and lines["segment"]["line"]["dash"] == "dash"
    assert sorted(lines["networks"]["text"]) == ["bend1", "w1", "w2"]


def test_mpo_plane_and_imported_note(tmp_path, capsys):
    s = plane(mpo_pattern="letter", imported_from="loss-landscape file  read as a plane")
    s.values["pattern"] = (s.values["train_acc"] > 50).astype(float)
    Surface(s.x, s.y, s.values, attrs=s.attrs).save(tmp_path / "m.h5")
    status, out, _ = view([tmp_path / "m.h5", "--out", tmp_path / "m.html"], capsys)
    assert status == 0 and "MPO plane, pattern letter" in out[0] and "pattern" in out[0]
    assert out[1] == "note: loss-landscape file read as a plane"
    data, layout, _ = page(tmp_path / "m.html")
    assert len(layout["updatemenus"][0]["buttons"]) == 5
    assert not any(t["type"] == "scatter" for t in data)  # no markers, no curve


def test_a_large_grid_is_drawn_at_every_kth_point(tmp_path, capsys):
    x, y = np.linspace(0, 1, 403), np.linspace(0, 1, 5)
    loss = 1 + np.add.outer(y, x)
    Surface(x, y, {"train_loss": loss}).save(tmp_path / "big.h5")
    status, out, _ = view([tmp_path / "big.h5", "--out", tmp_path / "big.html"], capsys)
    assert status == 0 and "5x403 points, drawn at 5x135;" in out[0]
    data, _, _ = page(tmp_path / "big.html")
    np.testing.assert_allclose(data[1]["x"], x[::3], rtol=1e-5)
    np.testing.assert_allclose(data[1]["customdata"], loss[:, ::3], rtol=1e-5)


def test_line_page(tmp_path, capsys):
    t = np.linspace(-0.2, 1.2, 15)
    loss = 0.1 + np.sin(np.pi * t) ** 2
    values = {"train_loss": loss, "train_acc": 100 - 30 * loss}
    Surface(t, None, values, markers={"w1": 0, "w2": 1}).save(tmp_path / "l.h5")
    status, out, _ = view([tmp_path / "l.h5", "--out", tmp_path / "l.html"], capsys)
    assert status == 0 and out[0].endswith(": line, 15 points; metrics train_loss, train_acc")
    data, layout, _ = page(tmp_path / "l.html")
    assert [(d["type"], d["xaxis"], d["name"]) for d in data] == [
        ("scatter", "x", "train loss"),
        ("scatter", "x2", "train accuracy (%)"),
    ]
    np.testing.assert_allclose(data[0]["y"], loss, rtol=1e-5)
    assert layout["yaxis"]["type"] == "log"
    (menu,) = layout["updatemenus"]
    assert [b["args"][0] for b in menu["buttons"]] == [
        {"yaxis.type": "log"},
        {"yaxis.type": "linear"},
    ]
    assert sum(shape["type"] == "line" for shape in layout["shapes"]) == 4  # w1, w2 per panel


def curve_result():
    t = np.linspace(0, 1, 11)
    bump = np.sin(np.pi * t)
    values = {}
    for path, height in (("curve", 0.1), ("segment", 2.0)):
        for split in ("train", "test"):
            loss = 0.1 + height * bump
            values[f"{path}/{split}_loss"] = loss
            values[f"{path}/{split}_nll"] = loss
            values[f"{path}/{split}_err"] = 30 * loss
            values[f"{path}/{split}_acc"] = 100 - 30 * loss
        values[f"ensemble/{path}/test_acc"] = 70 + 2 * bump
    return CurveResult(t, values, np.ones_like(t), 1.0, attrs={"curve": {"kind": "bezier"}})


def test_curve_evaluation_page(tmp_path, capsys):
    curve_result().save(tmp_path / "c.h5")
    status, out, _ = view([tmp_path / "c.h5", "--out", tmp_path / "c.html"], capsys)
    assert status == 0
    assert out[0].endswith(
        ": curve evaluation (bezier), 11 values of t; metrics test_acc, test_err, test_loss, "
        "test_nll, train_acc, train_err, train_loss, train_nll"
    )
    data, layout, _ = page(tmp_path / "c.html")
    panels = {}
    for d in data:
        panels.setdefault(d["xaxis"], []).append(d["name"])
    lines = ["curve, train", "curve, test", "segment, train", "segment, test"]
    # loss and error (nll equals the loss, accuracy is 100 - error), then the ensembles
    assert panels == {"x": lines, "x2": lines, "x3": ["curve, test", "segment, test"]}
    np.testing.assert_allclose(data[2]["y"], curve_result()["segment/train_loss"], rtol=1e-5)
    assert layout["yaxis"]["type"] == "log"


def test_ensemble_page(tmp_path, capsys):
    members = [{"acc": a, "nll": 1.0 - a / 2, "ece": 0.05, "brier": 0.3} for a in (0.8, 0.82)]
    cumulative = [members[0], {"acc": 0.85, "nll": 0.5, "ece": 0.03, "brier": 0.25}]
    bins = {
        "edges": np.linspace(0, 1, 5),
        "count": np.array([0.0, 3, 5, 12]),
        "confidence": np.array([np.nan, 0.4, 0.6, 0.9]),
        "accuracy": np.array([np.nan, 0.3, 0.7, 0.85]),
    }
    probs = np.full((20, 4), 0.25)
    save_ensemble_file(tmp_path / "e.h5", members, cumulative, bins, probs, np.zeros(20, int))
    status, out, _ = view([tmp_path / "e.h5", "--out", tmp_path / "e.html"], capsys)
    assert status == 0 and out[0].endswith(
        ": ensemble evaluation, 2 members, 20 test samples; metrics acc, nll, ece, brier"
    )
    data, layout, _ = page(tmp_path / "e.html")
    assert len(data) == 10  # members and ensemble per metric, the diagonal, the diagram
    assert data[1]["y"] == [80.0, 85.0] and data[0]["y"] == [80.0, 82.0]  # accuracy in %
    diagram = data[-1]
    assert diagram["x"] == [0.4, 0.6, 0.9] and diagram["customdata"] == [3, 5, 12]
    assert "reliability" in [a["text"] for a in layout["annotations"]]


def write_frames(path, count=3, finished=2):
    x, y = np.linspace(-0.3, 1.3, 6), np.linspace(-0.4, 1.0, 5)
    t = np.linspace(0, 1, 9)
    bends = np.array([[[0.5, 0.2 * (f + 1)]] for f in range(count)])
    curve = np.stack([np.stack([t, 2 * t * (1 - t) * b[0, 1]], 1) for b in bends])
    ends = np.array([[0.0, 0.0], [1.0, 0.0]])
    static = {
        "steps": np.arange(count) * 10,
        "curve_xy": curve,
        "bends_xy": bends,
        "markers": np.stack([np.concatenate([ends, b]) for b in bends]),
        "plane_source": np.arange(count),
    }
    metrics = ["train_loss", "train_acc"]
    with FramesWriter(path, x, y, metrics, static, ["w1", "w2", "bend1"], {"grid": 1}) as w:
        for f in range(finished):
            loss = np.full((5, 6), 0.1 * (f + 1))
            loss[0, 0] = 5.0
            w.write(f, {"train_loss": loss, "train_acc": 100 - 10 * loss})
    return static


def test_frames_page_has_a_slider_and_the_curve_of_each_frame(tmp_path, capsys):
    static = write_frames(tmp_path / "v.frames.h5")
    status, out, _ = view([tmp_path / "v.frames.h5", "--out", tmp_path / "v.html"], capsys)
    assert status == 0 and out[0].endswith(
        ": video frames, 2 of 3 finished, 5x6 points each; metrics train_loss, train_acc"
    )
    data, layout, frames = page(tmp_path / "v.html")
    assert [d["type"] for d in data] == [
        "surface", "contour", "surface", "contour", "scatter", "scatter", "scatter"
    ]  # fmt: skip
    assert data[0]["coloraxis"] == data[1]["coloraxis"] != data[2]["coloraxis"]
    assert [f["name"] for f in frames] == ["0", "1"]  # finished frames only
    (slider,) = layout["sliders"]
    assert [s["label"] for s in slider["steps"]] == ["0", "10"]
    assert [s["args"][0] for s in slider["steps"]] == [["0"], ["1"]]
    metric_menu, play = layout["updatemenus"]
    assert [b["label"] for b in play["buttons"]] == ["play", "pause"]
    assert len(metric_menu["buttons"]) == 2
    for f, frame in enumerate(frames):
        assert frame["traces"] == list(range(7)) and len(frame["data"]) == 7
        assert frame["layout"]["title"]["text"].endswith(f"step {10 * f}")
        curve = next(d for d in frame["data"] if d.get("name") == "curve")
        np.testing.assert_allclose(curve["y"], static["curve_xy"][f][:, 1], atol=1e-6)
        np.testing.assert_allclose(frame["data"][0]["z"][1][1], np.log10(0.1 * (f + 1)))
        assert frame["data"][6]["text"] == ["w1", "w2", "bend1"]
    # one colour scale for all frames: log10 of 0.1 .. 5
    assert layout["coloraxis"]["cmin"] == pytest.approx(-1.0)
    assert layout["coloraxis"]["cmax"] == pytest.approx(np.log10(5.0))
    assert "Plotly.animate" not in (tmp_path / "v.html").read_text()  # no autoplay


def test_json_summary(tmp_path, capsys):
    plane(imported_from="another tool's file").save(tmp_path / "s.h5")
    status, out, _ = view([tmp_path / "s.h5", "--json"], capsys)
    assert status == 0 and len(out) == 1
    assert json.loads(out[0]) == {
        "command": "view",
        "out": str(tmp_path / "s.html"),
        "files": [str(tmp_path / "s.html")],
        "kind": "surface",
        "summary": "surface on the plane through w1, w2, w3, 7x9 points; metrics train_loss, "
        "train_acc, test_loss, test_acc",
        "note": "another tool's file",
    }


def test_view_file_default_path_and_replacing_a_page(tmp_path):
    plane().save(tmp_path / "s.h5")
    assert view_file(tmp_path / "s.h5") == str(tmp_path / "s.html")
    first = (tmp_path / "s.html").read_text()
    assert view_file(tmp_path / "s.h5", tmp_path / "s.html") == str(tmp_path / "s.html")
    assert (tmp_path / "s.html").read_text() == first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries


def test_bad_input_is_one_line_with_status_2(tmp_path, capsys):
    def refused(args):
        status, out, err = view(args, capsys)
        assert status == 2 and out == [] and len(err) == 1, err
        assert err[0].startswith("fastloss view: ")
        return err[0]

    assert "no such file" in refused([tmp_path / "none.h5"])
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.arange(3)
    assert "not a fastloss result" in refused([tmp_path / "other.h5"])
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    assert "corrupt" in refused([corrupt])
    (tmp_path / "notes.txt").write_text("mine")
    plane().save(tmp_path / "s.h5")
    line = refused([tmp_path / "s.h5", "--out", tmp_path / "notes.txt"])
    assert "not an HTML page" in line and "--out" in line
    assert (tmp_path / "notes.txt").read_text() == "mine"
    plane().save(tmp_path / "s.html")  # a result named .html: its page would replace it
    assert "is the file to view" in refused([tmp_path / "s.html"])
    assert "does not exist" in refused([tmp_path / "s.h5", "--out", tmp_path / "no" / "p.html"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "corrupt.h5", "notes.txt", "other.h5", "s.h5", "s.html"
    ]  # fmt: skip
