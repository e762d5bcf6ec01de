"""`fastloss export --vtk`: surfaces as VTK meshes for ParaView, read back with meshio."""

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
meshio = pytest.importorskip("meshio")

from fastloss.cli.main import main  # noqa: E402
from fastloss.errors import ArgumentError, MetricError  # noqa: E402
from fastloss.io import FramesWriter, Surface  # noqa: E402
from fastloss.io.vtk import export_vtk  # noqa: E402


def surface(nx=6, ny=4, missing=()):
    x, y = np.linspace(-1.0, 1.5, nx), np.linspace(-0.5, 0.5, ny)
    X, Y = np.meshgrid(x, y)
    values = {"train_loss": 0.5 + X**2 + 3 * Y**2 + 0.1 * X, "train_acc": 80 - 5 * X + Y}
    for i, j in missing:
        for v in values.values():
            v[i, j] = np.nan
    return Surface(x, y, values, markers={"w1": (0, 0)})


def run(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as e:  # argparse
        status = e.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_points_cells_and_point_data_follow_the_surface(tmp_path):
    s = surface()
    s.save(tmp_path / "s.h5")
    out = export_vtk(tmp_path / "s.h5", tmp_path / "s.vtu")
    assert out == str(tmp_path / "s.vtu")
    text = (tmp_path / "s.vtu").read_bytes()[:300].decode()
    assert text.startswith("<?xml") and '<VTKFile type="UnstructuredGrid"' in text
    mesh = meshio.read(out)
    ny, nx = s.shape
    X, Y = np.meshgrid(s.x, s.y)
    expected = np.stack([X.ravel(), Y.ravel(), s.values["train_loss"].ravel()], axis=1)
    np.testing.assert_array_equal(mesh.points, expected)  # row-major, row = y
    (block,) = mesh.cells
    assert block.type == "quad" and block.data.shape == ((ny - 1) * (nx - 1), 4)
    # the first quad: (x0, y0), (x1, y0), (x1, y1), (x0, y1), counter-clockwise
    np.testing.assert_array_equal(block.data[0], [0, 1, nx + 1, nx])
    k = (ny - 2) * nx + nx - 2  # the last quad's first corner
    np.testing.assert_array_equal(block.data[-1], [k, k + 1, k + nx + 1, k + nx])
    assert set(mesh.point_data) == {"train_loss", "train_acc", "z"}
    for name, values in s.values.items():
        np.testing.assert_array_equal(mesh.point_data[name], values.ravel())
    np.testing.assert_array_equal(mesh.point_data["z"], mesh.points[:, 2])


def read_vts(path):
    """A .vts file as pyevtk writes it (XML, raw appended data, UInt64 block headers): the
    grid's dimensions, its points and its point data, in file order (x fastest)."""
    import xml.etree.ElementTree as ET

    raw = path.read_bytes()
    head, _, data = raw.partition(b'<AppendedData encoding="raw">')
    data = data[data.index(b"_") + 1 :]
    root = ET.fromstring(head + b"</VTKFile>")
    assert root.get("type") == "StructuredGrid" and root.get("header_type") == "UInt64"
    extent = [int(v) for v in root.find("StructuredGrid").get("WholeExtent").split()]
    dims = tuple(hi - lo + 1 for lo, hi in zip(extent[::2], extent[1::2], strict=True))

    def array(element):
        assert element.get("type") == "Float64" and element.get("format") == "appended"
        at = int(element.get("offset"))
        size = int(np.frombuffer(data[at : at + 8], dtype="<u8")[0])
        values = np.frombuffer(data[at + 8 : at + 8 + size], dtype="<f8")
        return values.reshape(-1, int(element.get("NumberOfComponents")))

    points = array(root.find(".//Points/DataArray"))
    point_data = {e.get("Name"): array(e)[:, 0] for e in root.findall(".//PointData/DataArray")}
    return dims, points, point_data


def test_a_structured_grid_holds_every_point_x_fastest(tmp_path, capsys):
    s = surface()
    s.save(tmp_path / "s.h5")
    status, out, _ = run(
        ["export", str(tmp_path / "s.h5"), "--vtk", str(tmp_path / "s.vts")], capsys
    )
    assert status == 0 and out.strip() == str(tmp_path / "s.vts")
    dims, points, point_data = read_vts(tmp_path / "s.vts")
    ny, nx = s.shape
    assert dims == (nx, ny, 1)
    X, Y = np.meshgrid(s.x, s.y)  # [ny, nx]: row-major with x fastest, as VTK's points
    expected = np.stack([X.ravel(), Y.ravel(), s.values["train_loss"].ravel()], axis=1)
    np.testing.assert_array_equal(points, expected)
    assert set(point_data) == {"train_loss", "train_acc", "z"}
    for name, values in s.values.items():
        np.testing.assert_array_equal(point_data[name], values.ravel())
    export_vtk(tmp_path / "s.h5", tmp_path / "log.vts", log=True, zmax=1.0)
    _, points, point_data = read_vts(tmp_path / "log.vts")
    z = np.log10(np.minimum(s.values["train_loss"], 1.0)).ravel()
    np.testing.assert_array_equal(points[:, 2], z)
    np.testing.assert_array_equal(point_data["z"], z)
    np.testing.assert_array_equal(point_data["train_loss"], s.values["train_loss"].ravel())
    line = Surface(s.x, None, {"train_loss": s.values["train_loss"][0]})
    line.save(tmp_path / "line.h5")
    export_vtk(tmp_path / "line.h5", tmp_path / "line.vts")
    dims, points, _ = read_vts(tmp_path / "line.vts")
    assert dims == (nx, 1, 1) and np.array_equal(points[:, 0], s.x) and not points[:, 1].any()


def test_log_and_zmax_shape_the_height_only(tmp_path):
    s = surface()
    s.save(tmp_path / "s.h5")
    export_vtk(tmp_path / "s.h5", tmp_path / "s.vtu", log=True, zmax=1.5)
    mesh = meshio.read(tmp_path / "s.vtu")
    z = np.log10(np.minimum(s.values["train_loss"], 1.5)).ravel()
    np.testing.assert_allclose(mesh.points[:, 2], z)
    np.testing.assert_allclose(mesh.point_data["z"], z)
    np.testing.assert_array_equal(mesh.point_data["train_loss"], s.values["train_loss"].ravel())
    export_vtk(tmp_path / "s.h5", tmp_path / "a.vtu", metric="train_err")  # derived metric
    np.testing.assert_allclose(
        meshio.read(tmp_path / "a.vtu").points[:, 2], 100 - s.values["train_acc"].ravel()
    )


def test_points_not_computed_are_left_out_with_their_cells(tmp_path):
    s = surface(missing=[(1, 2), (3, 5)])
    s.save(tmp_path / "s.h5")
    notes = []
    export_vtk(tmp_path / "s.h5", tmp_path / "s.vtu", on_note=notes.append)
    assert notes == [
        "2 points where train_loss is not a finite number (not computed yet) left out, with "
        "their cells"
    ]
    mesh = meshio.read(tmp_path / "s.vtu")
    keep = np.isfinite(s.values["train_loss"]).ravel()
    assert len(mesh.points) == keep.sum() == 22
    np.testing.assert_array_equal(
        mesh.point_data["train_loss"], s.values["train_loss"].ravel()[keep]
    )
    assert len(mesh.cells[0].data) == 15 - 4 - 1  # (1, 2) touches 4 quads, the corner 1
    assert np.isfinite(mesh.points).all()


def test_a_line_becomes_line_segments_and_legacy_vtk_works(tmp_path):
    x = np.linspace(0, 1, 5)
    Surface(x, None, {"train_loss": 1 + x**2}).save(tmp_path / "l.h5")
    export_vtk(tmp_path / "l.h5", tmp_path / "l.vtk")
    mesh = meshio.read(tmp_path / "l.vtk")
    np.testing.assert_allclose(mesh.points, np.stack([x, 0 * x, 1 + x**2], axis=1))
    assert mesh.cells[0].type == "line"
    np.testing.assert_array_equal(mesh.cells[0].data, [[0, 1], [1, 2], [2, 3], [3, 4]])


def test_one_frame_of_a_video(tmp_path):
    x, y = np.linspace(0, 1, 4), np.linspace(0, 1, 3)
    static = {
        "steps": np.array([0, 10]),
        "curve_xy": np.zeros((2, 5, 2)),
        "bends_xy": np.zeros((2, 1, 2)),
        "markers": np.zeros((2, 2, 2)),
        "plane_source": np.array([0, 1]),
    }
    with FramesWriter(tmp_path / "v.h5", x, y, ["train_loss"], static, ["w1", "w2"], {}) as w:
        w.write(1, {"train_loss": np.arange(12.0).reshape(3, 4) + 1})
    export_vtk(tmp_path / "v.h5", tmp_path / "f.vtu", frame=1)
    mesh = meshio.read(tmp_path / "f.vtu")
    np.testing.assert_array_equal(mesh.points[:, 2], np.arange(12.0) + 1)
    with pytest.raises(ArgumentError, match="pass frame=N with N from 0 to 1"):
        export_vtk(tmp_path / "v.h5", tmp_path / "f.vtu")
    with pytest.raises(ArgumentError, match="frame 0 .* is not evaluated yet"):
        export_vtk(tmp_path / "v.h5", tmp_path / "f.vtu", frame=0)


BAD = {
    "vtp": (["--vtk", "$out/s.vtp"], [".vts", ".vtu", ".vtk"]),
    "vts-with-missing-points": (["--vtk", "$out/s.vts", "--metric", "gaps"], ["export to .vtu"]),
    "missing-folder": (["--vtk", "$out/none/s.vtu"], ["does not exist"]),
    "metric": (["--vtk", "$out/s.vtu", "--metric", "test_nll"], ["no metric 'test_nll'"]),
    "log-of-negative": (["--vtk", "$out/s.vtu", "--metric", "depth", "--log"], ["--log", "-2"]),
    "zmax-nan": (["--vtk", "$out/s.vtu", "--zmax", "nan"], ["--zmax nan"]),
    "frame-of-a-surface": (["--vtk", "$out/s.vtu", "--frame", "0"], ["--frame 0", "not one"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, name):
    x, y = np.linspace(0, 1, 3), np.linspace(0, 1, 2)
    gaps = np.ones((2, 3))
    gaps[1, 2] = np.nan
    s = Surface(x, y, {"train_loss": np.ones((2, 3)), "depth": -2 * np.ones((2, 3)), "gaps": gaps})
    s.save(tmp_path / "s.h5")
    flags, words = BAD[name]
    argv = ["export", str(tmp_path / "s.h5")] + [f.replace("$out", str(tmp_path)) for f in flags]
    status, out, err = run(argv, capsys)
    assert status == 2 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastloss export: "), err
    for w in words:
        assert w in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_missing_files_and_results_that_are_not_surfaces(tmp_path, capsys):
    status, _, err = run(
        ["export", str(tmp_path / "none.h5"), "--vtk", str(tmp_path / "s.vtu")], capsys
    )
    assert status == 2 and "no such file" in err and err.count("\n") == 1
    curve = tmp_path / "curve.npz"  # dnn-mode-connectivity's eval_curve.py output
    np.savez(curve, ts=np.linspace(0, 1, 3), dl=np.ones(3), tr_loss=np.ones(3))
    status, _, err = run(["export", str(curve), "--vtk", str(tmp_path / "s.vtu")], capsys)
    assert status == 2 and "holds a curve evaluation, not a surface" in err
    surface().save(tmp_path / "s.h5")
    with pytest.raises(MetricError):
        export_vtk(tmp_path / "s.h5", tmp_path / "s.vtu", metric="x")
    assert not (tmp_path / "s.vtu").exists()


def test_vtk_itself_reads_it_as_paraview_would(tmp_path):
    """VTK's own readers (ParaView's), where the vtk package is installed."""
    vtk = pytest.importorskip("vtk")
    from vtk.util.numpy_support import vtk_to_numpy

    s = surface(missing=[(0, 0)])
    s.save(tmp_path / "s.h5")
    for suffix, reader in (
        (".vtu", vtk.vtkXMLUnstructuredGridReader()),
        (".vtk", vtk.vtkUnstructuredGridReader()),
    ):
        export_vtk(tmp_path / "s.h5", tmp_path / f"s{suffix}")
        reader.SetFileName(str(tmp_path / f"s{suffix}"))
        reader.Update()
        grid = reader.GetOutput()
        mesh = meshio.read(tmp_path / f"s{suffix}")
        assert grid.GetNumberOfPoints() == len(mesh.points) == s.values["train_loss"].size - 1
        assert grid.GetNumberOfCells() == len(mesh.cells[0].data)
        assert {grid.GetCellType(i) for i in range(grid.GetNumberOfCells())} == {vtk.VTK_QUAD}
        np.testing.assert_allclose(vtk_to_numpy(grid.GetPoints().GetData()), mesh.points)
        data = grid.GetPointData()
        np.testing.assert_allclose(
            vtk_to_numpy(data.GetArray("train_acc")), mesh.point_data["train_acc"]
        )
