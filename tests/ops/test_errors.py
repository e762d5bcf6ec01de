"""Bad input gets an error naming the argument and the expected shape; the build is reported."""

import subprocess
import sys
import warnings

import pytest
import torch

import fastloss.ops.compiled as ext
from fastloss import ops
from fastloss.ops import reference

K, J, B, I, O = 3, 2, 4, 5, 6


def linear_args(**override):
    args = dict(
        x=torch.randn(B, I),
        weight=torch.randn(J, O, I),
        bias=torch.randn(J, O),
        coords=torch.randn(K, J),
    )
    args.update(override)
    return args


@pytest.mark.parametrize(
    "override,message",
    [
        (
            dict(coords=torch.randn(K, J + 1)),
            r"coords must be \[K, J\] with J = weight.shape\[0\] = 2",
        ),
        (dict(coords=torch.randn(J)), r"coords must be \[K, J\]"),
        (dict(weight=torch.randn(O, I)), r"weight must be \[J, O, I\]"),
        (
            dict(x=torch.randn(B, I + 1)),
            r"x must be \[B, 5\] \(shared\) or \[K, B, 5\] = \[3, B, 5\]",
        ),
        (dict(x=torch.randn(K + 1, B, I)), r"x must be \[B, 5\].*got \[4, 4, 5\]"),
        (dict(x=torch.randn(1, K, B, I)), r"x must be \[B, 5\]"),
        (dict(bias=torch.randn(O)), r"bias must be \[J, 6\] = \[2, 6\]"),
        (
            dict(x=torch.randn(B, I, dtype=torch.float64)),
            r"x is torch.float64 but weight is torch.float32",
        ),
        (dict(coords=torch.randn(K, J, dtype=torch.float64)), r"coords must have weight's dtype"),
        (dict(x=torch.randn(B, I, device="meta")), r"x is on meta but weight is on cpu"),
    ],
)
def test_subspace_linear_bad_input(override, message):
    with pytest.raises(ValueError, match=message):
        ops.subspace_linear(**linear_args(**override))


def test_subspace_conv_bad_input():
    coords = torch.randn(K, J)
    weight = torch.randn(J, 4, 2, 3, 3)
    with pytest.raises(ValueError, match=r"x must be \[B, 2, \*spatial\].*2 spatial dims"):
        ops.subspace_conv2d(torch.randn(B, 3, 8, 8), weight, None, coords)
    with pytest.raises(ValueError, match=r"groups = 3 must divide the 4 output channels"):
        ops.subspace_conv2d(torch.randn(B, 6, 8, 8), weight, None, coords, groups=3)
    with pytest.raises(ValueError, match=r"weight must be \[J, Co, Ci/groups, k, k\]"):
        ops.subspace_conv2d(torch.randn(B, 2, 8, 8), weight[0], None, coords)
    with pytest.raises(
        ValueError, match=r"subspace_conv1d: weight must be \[J, Co, Ci/groups, k\]"
    ):
        ops.subspace_conv1d(torch.randn(B, 2, 8), weight, None, coords)


def test_compiled_op_checks_shapes_too():
    # Direct callers of torch.ops.fastloss get a checked error, never an out-of-bounds read.
    if ext.extension is None:
        pytest.skip("compiled extension not built")
    a = linear_args(coords=torch.randn(K, J + 1))
    with pytest.raises(
        RuntimeError, match=r"coords must be \[K, J\] with J = weight.size\(0\) = 2"
    ):
        torch.ops.fastloss.subspace_linear(a["x"], a["weight"], a["bias"], a["coords"])
    with pytest.raises(RuntimeError, match=r"target\[1\] = 9 is not a class index in \[0, 3\)"):
        torch.ops.fastloss.point_loss(torch.randn(K, 2, 3), torch.tensor([0, 9]))


def test_batch_norm_and_loss_bad_input():
    coords = torch.randn(K, J)
    x = torch.randn(K, B, 5)
    with pytest.raises(ValueError, match=r"running_mean must be \[K, C\] = \[3, 5\]"):
        ops.pointwise_batch_norm(x, torch.zeros(5), torch.ones(5), None, None, coords, True)
    with pytest.raises(ValueError, match=r"weight must be \[J, C\] = \[2, 5\]"):
        ops.pointwise_batch_norm(x, None, None, torch.ones(5), None, coords, True)
    with pytest.raises(ValueError, match=r"needs the num_batches_tracked counter"):
        ops.pointwise_batch_norm(
            x, torch.zeros(K, 5), torch.ones(K, 5), None, None, coords, True, None
        )
    with pytest.raises(ValueError, match=r"target must be int64"):
        ops.point_loss(torch.randn(K, B, 3), torch.zeros(B, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"logits must be \[K, B, C\] and target \[B\]"):
        ops.point_loss(torch.randn(K, B, 3), torch.zeros(B + 1, dtype=torch.long))


def test_fallback_to_reference_warns_once(monkeypatch):
    monkeypatch.setattr(ext, "extension", None)
    monkeypatch.setattr(ext, "_warned", set())
    a = linear_args()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ops.subspace_linear(**a)
        ops.subspace_linear(**a)
    messages = [str(w.message) for w in caught if "reference implementations" in str(w.message)]
    assert len(messages) == 1 and "is not built" in messages[0]
    torch.testing.assert_close(out, reference.subspace_linear(**a))


def test_info_command_reports_build():
    result = subprocess.run(
        [sys.executable, "-m", "fastloss.cli", "info"], capture_output=True, text=True, check=True
    )
    assert f"torch    {torch.__version__}" in result.stdout
    expected = "kernels  CPU yes" if ext.extension is not None else "kernels  none compiled"
    assert expected in result.stdout


def test_mismatched_build_is_reported(monkeypatch):
    if ext.extension is None:
        pytest.skip("compiled extension not built")
    monkeypatch.setattr(ext.extension, "torch_version", lambda: "1.0.0", raising=False)
    # load_extension re-imports the cached module, so the patched version is seen.
    with pytest.raises(ext.ExtensionMismatchError, match=r"compiled against torch 1.0.0.*Rebuild"):
        ext.load_extension()
