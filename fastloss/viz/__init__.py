"""Figures and videos: the only package that imports matplotlib.

- `surfaces`: contour, heatmap, 3D and profile plots of a `Surface`, `save_figures`;
- `curves`: a curve's profiles and ensembles, the curve over its plane, the functions along
  a curve;
- `video`: frames files to MP4/GIF (`render_video`), and `make_video`;
- `files`: `plot_file`, any result file to a PNG; `style`: what the figures share;
- `page`: `view_file`, any result file to a self-contained HTML page (plotly).
"""

from fastloss.viz.curves import (
    plot_curve_ensemble,
    plot_curve_functions,
    plot_curve_plane,
    plot_curve_profile,
    save_curve_figures,
)
from fastloss.viz.files import plot_file
from fastloss.viz.page import view_file
from fastloss.viz.style import shared_limits
from fastloss.viz.surfaces import (
    plot_contour,
    plot_heatmap,
    plot_profile,
    plot_surface3d,
    save_figures,
)
from fastloss.viz.video import make_video, render_video

__all__ = [
    "make_video",
    "plot_contour",
    "plot_curve_ensemble",
    "plot_curve_functions",
    "plot_curve_plane",
    "plot_curve_profile",
    "plot_file",
    "plot_heatmap",
    "plot_profile",
    "plot_surface3d",
    "render_video",
    "save_curve_figures",
    "save_figures",
    "shared_limits",
    "view_file",
]
