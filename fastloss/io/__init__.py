"""Files: every format fastloss reads and writes, and the machinery they share.

- `checkpoints`: model weights with JSON metadata (.pt loadable with ``weights_only=True``,
  or .safetensors).
- `surface`: loss surfaces in HDF5 that loss-landscape's plotting scripts read; resumable,
  crash-safe writes (`SurfaceWriter`).
- `curve_result`: profiles along a curve and the straight segment (`CurveResult`).
- `frames`: a video's frames, one evaluated plane each, resumable frame by frame.
- `foreign`: other tools' files read as these (loss-landscape's surfaces,
  dnn-mode-connectivity's curve.npz and plane.npz); `vtk`: surfaces as VTK meshes for
  ParaView (`export_vtk`); `kinds`: which result a file holds.
- `atomic` (every output is written whole or not at all), `settings` (JSON normalisation
  and the comparison that decides whether a rerun may resume), `hashing` (content digests),
  `hdf5` (opening, locks, JSON attributes).
"""

from fastloss.io.checkpoints import load_checkpoint, load_state_dict, save_checkpoint
from fastloss.io.curve_result import CurveResult
from fastloss.io.frames import Frames, FramesWriter
from fastloss.io.surface import Surface, SurfaceWriter
from fastloss.io.vtk import export_vtk

__all__ = [
    "CurveResult",
    "Frames",
    "FramesWriter",
    "Surface",
    "SurfaceWriter",
    "export_vtk",
    "load_checkpoint",
    "load_state_dict",
    "save_checkpoint",
]
