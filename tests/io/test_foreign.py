"""Other tools' files read as fastloss's: loss-landscape's surface files and
dnn-mode-connectivity's curve.npz and plane.npz, each built here the way those tools' code
writes it (plot_surface.py with its scheduler; eval_curve.py; plane.py)."""

from math import comb

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
pytest.importorskip("matplotlib")

from fastloss.cli.main import main  # noqa: E402
from fastloss.errors import FastlossError, FileFormatError  # noqa: E402
from fastloss.io import CurveResult, Surface  # noqa: E402
from fastloss.io.kinds import result_kind  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def loss_at(x, y=0.0):
    """A value that identifies its point: a transposed or reshaped-wrong array is caught."""
    return 1.0 + x**2 + 10.0 * y**2 + 0.3 * x


def acc_at(x, y=0.0):
    return 50.0 + 10.0 * x + 3.0 * y


# --------------------------------------------------------------------------- loss-landscape


def loss_landscape_file(path, x, y=None, computed=None, directions=False, hessian=False):
    """What plot_surface.py leaves: setup_surface_file (dir_file, the coordinates), then
    crunch() for train and test: arrays -np.ones((len(x), len(y))), filled at the flat
    indices scheduler.get_unplotted_indices hands out over np.meshgrid(x, y), the first
    ``computed`` of them so far. ``directions``: the direction file is this file
    (--dir_file = --surf_file), its groups written as h5_util.write_list does."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "a") as f:
        if directions:
            for name in ("xdirection", "ydirection"):
                grp = f.create_group(name)
                for i, shape in enumerate([(4, 3), (4,)]):
                    grp.create_dataset(str(i), data=rng.normal(size=shape))
        f["dir_file"] = str(path) if directions else "net.t7_weights_xnorm=filter.h5"
        f["xcoordinates"] = x
        if y is not None:
            f["ycoordinates"] = y
        shape = x.shape if y is None else (len(x), len(y))
        keys = [("train_loss", "train_acc"), ("test_loss", "test_acc")]
        if hessian:  # plot_hessian_eigen.py: max_eig from -1, min_eig from +1
            keys = [("max_eig", "min_eig")]
        for first, second in keys:
            a, b = -np.ones(shape), -np.ones(shape) if not hessian else np.ones(shape)
            f[first], f[second] = a, b
            inds = np.array(range(a.size))[a.ravel() <= 0]
            if y is None:
                coords = x.ravel()[inds]
            else:
                xm, ym = np.meshgrid(x, y)
                coords = np.c_[xm.ravel()[inds], ym.ravel()[inds]]
            for ind, coord in list(zip(inds, coords, strict=True))[:computed]:
                a.ravel()[ind] = loss_at(*np.atleast_1d(coord))
                b.ravel()[ind] = acc_at(*np.atleast_1d(coord))
            f[first][:], f[second][:] = a, b
    return path


@pytest.mark.parametrize(("nx", "ny"), [(7, 5), (6, 6)], ids=["7x5", "square"])
def test_loss_landscape_values_land_at_their_points(tmp_path, nx, ny):
    x, y = np.linspace(-1.0, 1.0, nx), np.linspace(-0.5, 0.7, ny)
    path = loss_landscape_file(tmp_path / "s.h5", x, y, computed=nx * ny - 4, directions=True)
    assert result_kind(path) == "surface"
    s = Surface.load(path)
    assert s.shape == (ny, nx) and set(s.values) == {
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
    }
    X, Y = np.meshgrid(x, y)  # fastloss: values[i, j] at (x[j], y[i])
    for name, truth in (("train_loss", loss_at(X, Y)), ("test_acc", acc_at(X, Y))):
        v = s.values[name]
        assert np.isnan(v).sum() == 4 and np.isnan(v.reshape(-1)[-4:]).all()
        np.testing.assert_allclose(v[~np.isnan(v)], truth[~np.isnan(v)])
    assert s.done.sum() == nx * ny - 4
    assert s.attrs["direction_file"] == str(path)
    note = s.attrs["imported_from"]
    assert note.startswith("loss-landscape surface file:") and "\n" not in note
    assert "4 of" in note and "marked -1 (not computed) read as NaN" in note
    assert "left out: dir_file, xdirection, ydirection" in note
    if nx != ny:
        assert f"[{nx}, {ny}]" in note and "reshaped, not transposed" in note
    else:
        assert "unchanged" in note


def test_loss_landscape_1d_and_hessian_files(tmp_path):
    x = np.linspace(-1.0, 1.0, 9)
    s = Surface.load(loss_landscape_file(tmp_path / "line.h5", x, computed=7))
    assert s.y is None and s.shape == (9,)
    np.testing.assert_allclose(s.values["train_loss"][:7], loss_at(x[:7]))
    assert np.isnan(s.values["train_acc"][7:]).all()
    assert "2 of 9 cells" in s.attrs["imported_from"]
    # plot_hessian_eigen.py: min_eig starts at +1, so max_eig's -1 marks both
    y = np.linspace(0.0, 1.0, 3)
    s = Surface.load(loss_landscape_file(tmp_path / "eig.h5", x, y, computed=20, hessian=True))
    assert np.isnan(s.values["min_eig"]).sum() == np.isnan(s.values["max_eig"]).sum() == 7


def test_a_plain_file_with_fastloss_layout_reads_as_it_is(tmp_path):
    x, y = np.linspace(0, 1, 4), np.linspace(0, 1, 3)
    X, Y = np.meshgrid(x, y)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["xcoordinates"], f["ycoordinates"], f["train_loss"] = x, y, loss_at(X, Y)
    s = Surface.load(tmp_path / "p.h5")
    np.testing.assert_array_equal(s.values["train_loss"], loss_at(X, Y))
    assert "[len(y), len(x)] = [3, 4] read as they are" in s.attrs["imported_from"]


# --------------------------------------------------------------------------- dnn-mode-connectivity


class Curve:
    """A curve between random weight vectors as dnn-mode-connectivity's CurveNet computes it:
    Bezier (Bernstein coefficients) or PolyChain (hat functions), ``num_bends`` control
    points in all."""

    def __init__(self, kind="bezier", num_bends=3, dim=16, seed=0):
        rng = np.random.default_rng(seed)
        self.kind, self.n = kind, num_bends
        self.w = [rng.normal(size=dim) for _ in range(num_bends)]

    def coeffs(self, t):
        n = self.n
        if self.kind == "bezier":
            return np.array([comb(n - 1, k) * t**k * (1 - t) ** (n - 1 - k) for k in range(n)])
        return np.maximum(0.0, 1.0 - np.abs(t * (n - 1) - np.arange(n)))

    def weights(self, t):
        return sum(c * w for c, w in zip(self.coeffs(t), self.w, strict=True))


def plane_npz(path, curve, G=7, curve_points=13, **extra):
    """plane.py: the plane through w[0], w[1], w[2]; values [i, j] at (alphas[i], betas[j])."""
    w = curve.w

    def get_xy(point, origin, vector_x, vector_y):
        return np.array([np.dot(point - origin, vector_x), np.dot(point - origin, vector_y)])

    u = w[2] - w[0]
    dx = np.linalg.norm(u)
    u /= dx
    v = w[1] - w[0]
    v -= np.dot(u, v) * u
    dy = np.linalg.norm(v)
    v /= dy
    bend_coordinates = np.stack([get_xy(p, w[0], u, v) for p in w])
    ts = np.linspace(0.0, 1.0, curve_points)
    curve_coordinates = np.stack([get_xy(curve.weights(t), w[0], u, v) for t in ts])
    alphas = np.linspace(0.0 - 0.2, 1.0 + 0.3, G)
    betas = np.linspace(0.0 - 0.1, 1.0 + 0.2, G)
    arrays = {k: np.zeros((G, G)) for k in ("tr_loss", "tr_acc", "tr_nll", "tr_err")}
    arrays.update({k.replace("tr_", "te_"): np.zeros((G, G)) for k in list(arrays)})
    grid = np.zeros((G, G, 2))
    for i, alpha in enumerate(alphas):
        for j, beta in enumerate(betas):
            grid[i, j] = [alpha * dx, beta * dy]
            arrays["tr_loss"][i, j] = loss_at(alpha, beta)
            arrays["tr_nll"][i, j] = loss_at(alpha, beta) - 0.01
            arrays["tr_acc"][i, j] = acc_at(alpha, beta)
            arrays["tr_err"][i, j] = 100.0 - arrays["tr_acc"][i, j]
            for m in ("loss", "nll", "acc", "err"):
                arrays[f"te_{m}"][i, j] = arrays[f"tr_{m}"][i, j] + 1.0
    contents = dict(
        ts=ts,
        bend_coordinates=bend_coordinates,
        curve_coordinates=curve_coordinates,
        alphas=alphas,
        betas=betas,
        grid=grid,
        **arrays,
    )
    contents.update(extra)
    np.savez(path, **{k: v for k, v in contents.items() if v is not None})
    return path, dx, dy, bend_coordinates, curve_coordinates


def curve_npz(path, curve, T=21, **extra):
    """eval_curve.py: profiles at ts, dl the distance from the previous point, summaries."""
    ts = np.linspace(0.0, 1.0, T)
    dl = np.zeros(T)
    previous = None
    for i, t in enumerate(ts):
        weights = curve.weights(t)
        if previous is not None:
            dl[i] = np.sqrt(np.sum(np.square(weights - previous)))
        previous = weights.copy()
    bump = np.sin(np.pi * ts)
    arrays = {
        "tr_loss": 0.1 + bump,
        "tr_nll": 0.05 + bump,
        "tr_acc": 99.0 - 20 * bump,
        "te_loss": 0.4 + bump,
        "te_nll": 0.35 + bump,
        "te_acc": 90.0 - 30 * bump,
    }
    arrays["tr_err"], arrays["te_err"] = 100.0 - arrays["tr_acc"], 100.0 - arrays["te_acc"]
    stats = {}
    for key in ("tr_loss", "tr_nll", "tr_err", "te_loss", "te_nll", "te_err"):
        values = arrays[key]
        stats[f"{key}_min"], stats[f"{key}_max"] = np.min(values), np.max(values)
        stats[f"{key}_avg"] = np.mean(values)
        integral = np.sum(0.5 * (values[:-1] + values[1:]) * dl[1:]) / np.sum(dl[1:])
        stats[f"{key}_int"] = integral
    contents = dict(ts=ts, dl=dl, **arrays, **stats)
    contents.update(extra)
    np.savez(path, **{k: v for k, v in contents.items() if v is not None})
    return path, ts, arrays, stats, dl


@pytest.mark.parametrize(
    ("kind", "bends"), [("bezier", 3), ("polychain", 3), ("bezier", 4), ("polychain", 5)]
)
def test_plane_npz_values_coordinates_and_curve(tmp_path, kind, bends):
    curve = Curve(kind, bends)
    path, dx, dy, bend_xy, curve_xy = plane_npz(tmp_path / "plane.npz", curve)
    assert result_kind(path) == "surface"
    s = Surface.load(path)
    alphas, betas = np.linspace(-0.2, 1.3, 7), np.linspace(-0.1, 1.2, 7)
    np.testing.assert_allclose(s.x, alphas)
    np.testing.assert_allclose(s.y, betas * dy / dx)  # both axes in units of dx
    A, B = np.meshgrid(alphas, betas)  # [len(betas), len(alphas)]: row = y
    np.testing.assert_allclose(s.values["train_loss"], loss_at(A, B))
    np.testing.assert_allclose(s.values["test_acc"], acc_at(A, B) + 1.0)
    np.testing.assert_allclose(s.metric("train_err"), 100.0 - acc_at(A, B))
    assert set(s.values) == {
        f"{p}_{m}" for p in ("train", "test") for m in ("loss", "nll", "acc", "err")
    }
    stored = s.attrs["curve"]
    assert stored["kind"] == kind and stored["bends"] == bends - 2
    np.testing.assert_allclose(stored["xy"], curve_xy / dx)
    np.testing.assert_allclose(stored["bends_xy"], bend_xy[1:-1] / dx)
    np.testing.assert_allclose(stored["t"], np.linspace(0, 1, 13))
    np.testing.assert_allclose(s.markers["w1"], (0.0, 0.0))
    np.testing.assert_allclose(s.markers["w2"], bend_xy[-1] / dx)
    np.testing.assert_allclose(stored["xy"][0], (0, 0), atol=1e-12)  # the curve joins w1 and w2
    np.testing.assert_allclose(stored["xy"][-1], s.markers["w2"], atol=1e-12)
    note = s.attrs["imported_from"]
    assert note.startswith("dnn-mode-connectivity plane.npz:") and "\n" not in note
    assert "(row = x) were transposed" in note and f"{kind} curve" in note
    if bends == 3:
        np.testing.assert_allclose(s.markers["w2"], (1.0, 0.0), atol=1e-12)
        np.testing.assert_allclose(s.markers["bend"], (bend_xy[1, 0] / dx, dy / dx))
        assert stored["residual"] == 0.0 and "‖w2 − w1‖" in s.attrs["xlabel"]
    else:
        assert set(s.markers) == {"w1", "w2", *(f"bend{i + 1}" for i in range(bends - 2))}
        assert stored["plane"] == "through the first three control points"


def test_curve_npz_as_a_curve_result(tmp_path):
    curve = Curve("bezier", 3)
    path, ts, arrays, stats, dl = curve_npz(tmp_path / "curve.npz", curve)
    assert result_kind(path) == "curve"
    r = CurveResult.load(path)
    np.testing.assert_array_equal(r.t, ts)
    for key, values in arrays.items():
        split = "train" if key.startswith("tr_") else "test"
        np.testing.assert_array_equal(r[f"curve/{split}_{key[3:]}"], values)
    assert not any(name.startswith(("segment/", "ensemble/")) for name in r.values)
    assert np.isnan(r.segment_length) and not r.has_ensembles
    # speed from dl: its integral is the curve's length, and the arc-length mean is the
    # tool's own "int" up to the quadrature
    length = float(np.sum(dl))
    assert r.attrs["length"] == pytest.approx(length)
    assert float(np.sum(0.5 * (r.speed[1:] + r.speed[:-1]) * np.diff(r.t))) == pytest.approx(
        length, rel=1e-3
    )
    for key, name in (("tr_loss", "curve/train_loss"), ("te_err", "curve/test_err")):
        assert r.summary(name)["integral"] == pytest.approx(stats[f"{key}_int"], rel=1e-3)
        assert r.summary(name)["max"] == stats[f"{key}_max"]
        assert r.attrs["reported_summaries"][name]["int"] == stats[f"{key}_int"]
    table = r.format_summary()  # no segment, no ensembles: those lines are left out
    assert "segment" not in table and "curve    train_loss" in table
    note = r.attrs["imported_from"]
    assert (
        note.startswith("dnn-mode-connectivity curve.npz:")
        and "no straight segment" in note
        and "curve/train_*, curve/test_*" in note
    )
    r.save(tmp_path / "curve.h5")  # a fastloss curve file from here on
    again = CurveResult.load(tmp_path / "curve.h5")
    np.testing.assert_array_equal(again["curve/test_acc"], arrays["te_acc"])
    assert again.attrs["imported_from"] == note


# --------------------------------------------------------------------------- fastloss plot


def run(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as e:  # argparse
        status = e.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("which", ["loss-landscape", "loss-landscape-1d", "plane", "curve"])
def test_fastloss_plot_draws_them_and_prints_the_note(tmp_path, capsys, which):
    x, y = np.linspace(-1, 1, 6), np.linspace(-1, 1, 5)
    path = {
        "loss-landscape": lambda: loss_landscape_file(tmp_path / "s.h5", x, y, computed=25),
        "loss-landscape-1d": lambda: loss_landscape_file(tmp_path / "l.h5", x, computed=5),
        "plane": lambda: plane_npz(tmp_path / "plane.npz", Curve())[0],
        "curve": lambda: curve_npz(tmp_path / "curve.npz", Curve())[0],
    }[which]()
    png = tmp_path / "f.png"
    status, out, err = run(["plot", str(path), "--out", str(png)], capsys)
    assert status == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("note: ") and lines[1] == str(png)
    assert (
        lines[0][len("note: ") :]
        == (CurveResult.load(path) if which == "curve" else Surface.load(path)).attrs[
            "imported_from"
        ]
    )
    assert png.read_bytes().startswith(PNG)


def test_plot_draws_the_curve_of_a_plane_npz(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from fastloss.viz import plot_file

    path = plane_npz(tmp_path / "plane.npz", Curve())[0]
    drawn, notes = [], []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    plot_file(path, tmp_path / "p.png", on_note=notes.append)
    assert notes == [Surface.load(path).attrs["imported_from"]]
    ax = drawn[0].axes[0]
    curve = [line for line in ax.lines if line.get_label() == "curve"]
    assert len(curve) == 1
    np.testing.assert_allclose(curve[0].get_xydata(), Surface.load(path).attrs["curve"]["xy"])
    assert "bezier curve, 1 bend" in ax.get_title()


# --------------------------------------------------------------------------- fastloss export


@pytest.mark.parametrize("which", ["loss-landscape", "plane"])
def test_cli_exports_other_tools_surfaces(tmp_path, capsys, which):
    if which == "plane":
        path = plane_npz(tmp_path / "plane.npz", Curve())[0]
    else:
        x, y = np.linspace(-1, 1, 6), np.linspace(-1, 1, 5)
        path = loss_landscape_file(tmp_path / "s.h5", x, y, computed=30)
    meshio = pytest.importorskip("meshio")
    out = tmp_path / "s.vtu"
    out.write_text("an older export")  # a derived file: replaced, as plot's figures are
    status, stdout, err = run(
        ["export", str(path), "--vtk", str(out), "--metric", "test_acc"], capsys
    )
    assert status == 0, err
    lines = stdout.strip().splitlines()
    s = Surface.load(path)
    assert lines == [f"note: {s.attrs['imported_from']}", str(out)]
    mesh = meshio.read(out)
    X, Y = np.meshgrid(s.x, s.y)
    np.testing.assert_allclose(
        mesh.points, np.stack([X.ravel(), Y.ravel(), s.values["test_acc"].ravel()], 1)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, "s.vtu"])


# --------------------------------------------------------------------------- odd files


def ll_without_x(path):
    with h5py.File(path, "w") as f:
        f["train_loss"] = np.zeros((3, 3))


def ll_wrong_shape(path):
    with h5py.File(path, "w") as f:
        f["xcoordinates"], f["ycoordinates"] = np.linspace(0, 1, 4), np.linspace(0, 1, 3)
        f["train_loss"] = np.zeros((4, 4))


def ll_2d_x(path):
    with h5py.File(path, "w") as f:
        f["xcoordinates"] = np.zeros((2, 2))
        f["train_loss"] = np.zeros(2)


def ll_no_metrics(path):  # setup_surface_file ran, crunch() did not
    with h5py.File(path, "w") as f:
        f["dir_file"] = "d.h5"
        f["xcoordinates"], f["ycoordinates"] = np.linspace(0, 1, 4), np.linspace(0, 1, 3)


def other_hdf5(path):
    with h5py.File(path, "w") as f:
        f["weights"] = np.zeros(5)


def other_npz(path):
    np.savez(path, x=np.zeros((3, 2)), y=np.zeros(3))


def cut_npz(path):
    plane_npz(path, Curve())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


ODD = {
    # name: (suffix, builder, words in the error)
    "ll-no-xcoordinates": (".h5", ll_without_x, ["not a fastloss result", "loss-landscape"]),
    "ll-wrong-shape": (".h5", ll_wrong_shape, ["'train_loss' has shape [4, 4]", "[4, 3]"]),
    "ll-2d-xcoordinates": (".h5", ll_2d_x, ["'xcoordinates' must be", "1D"]),
    "ll-no-metrics-yet": (".h5", ll_no_metrics, ["without metric arrays"]),
    "other-hdf5": (".h5", other_hdf5, ["loss-landscape", "plane.npz"]),
    "other-npz": (".npz", other_npz, ["dnn-mode-connectivity"]),
    "cut-npz": (".npz", cut_npz, ["not a readable .npz"]),
    "plane-no-alphas": (
        ".npz",
        lambda p: plane_npz(p, Curve(), alphas=None, tr_loss=np.zeros((7, 7))),
        ["dnn-mode-connectivity"],
    ),
    "plane-wrong-shape": (
        ".npz",
        lambda p: plane_npz(p, Curve(), tr_loss=np.zeros((7, 6))),
        ["'tr_loss' has shape [7, 6], expected [7, 7]"],
    ),
    "plane-two-bends": (
        ".npz",
        lambda p: plane_npz(p, Curve(), bend_coordinates=np.zeros((2, 2))),
        ["bend_coordinates", "n >= 3"],
    ),
    "plane-grid-disagrees": (
        ".npz",
        lambda p: plane_npz(p, Curve(), grid=np.ones((7, 7, 2))),
        ["'grid' is not"],
    ),
    "plane-nan-betas": (
        ".npz",
        lambda p: plane_npz(p, Curve(), betas=np.full(7, np.nan)),
        ["'betas' has NaN"],
    ),
    "curve-no-dl": (".npz", lambda p: curve_npz(p, Curve(), dl=None), ["dnn-mode-connectivity"]),
    "curve-short-profile": (
        ".npz",
        lambda p: curve_npz(p, Curve(), te_acc=np.zeros(20)),
        ["'te_acc' has shape [20], expected [21]"],
    ),
    "curve-ts-backwards": (
        ".npz",
        lambda p: curve_npz(p, Curve(), ts=np.linspace(1, 0, 21)),
        ["increasing"],
    ),
}


@pytest.mark.parametrize("name", list(ODD))
def test_odd_files_give_one_line_and_exit_2(tmp_path, capsys, name):
    suffix, build, words = ODD[name]
    path = tmp_path / f"odd{suffix}"
    build(path)
    before = path.read_bytes()
    status, out, err = run(["plot", str(path), "--out", str(tmp_path / "f.png")], capsys)
    assert status == 2 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastloss plot: ") and str(path) in lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    assert path.read_bytes() == before and not (tmp_path / "f.png").exists()
    with pytest.raises(FastlossError):  # the Python readers: the same family of errors
        (CurveResult.load if name.startswith("curve") else Surface.load)(path)


def test_readers_name_the_other_reader(tmp_path):
    plane = plane_npz(tmp_path / "plane.npz", Curve())[0]
    curve = curve_npz(tmp_path / "curve.npz", Curve())[0]
    with pytest.raises(FileFormatError, match="a surface: Surface.load reads it"):
        CurveResult.load(plane)
    with pytest.raises(FileFormatError, match="a curve evaluation: CurveResult.load reads it"):
        Surface.load(curve)
