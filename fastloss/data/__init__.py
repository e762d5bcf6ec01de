"""Data sets as tensor pairs: the built-in ones, loaders for the formats users bring, and a
synthetic regression set.

A data set is ``Dataset = (x, y)`` with ``x`` float32 ``[N, *in_shape]`` and ``y`` int64
``[N]`` class indices (float targets for regression); every loader returns a
``(train, test)`` pair of them. `load_data` takes a built-in name (``"mnist1d"``,
``"digits"``, both made offline) or a path: MNIST / Fashion-MNIST IDX files, CIFAR-10/100
python pickles (read by an unpickler that only builds numpy arrays), ``.npz`` files with
``x``, ``y`` and optionally ``x_test``, ``y_test``. Nothing is ever downloaded.
"""

from fastloss.data.builtin import BUILTINS, load_builtin
from fastloss.data.checks import Dataset, Split
from fastloss.data.cifar import load_cifar
from fastloss.data.idx import load_mnist, load_mnist_files, read_idx
from fastloss.data.load import load_data, num_classes, standardize, subsample
from fastloss.data.npz import from_torch_dataset, load_npz
from fastloss.data.synthetic import regression_clusters

__all__ = [
    "BUILTINS",
    "Dataset",
    "Split",
    "from_torch_dataset",
    "load_builtin",
    "load_cifar",
    "load_data",
    "load_mnist",
    "load_mnist_files",
    "load_npz",
    "num_classes",
    "read_idx",
    "regression_clusters",
    "standardize",
    "subsample",
]
