"""Figures people look at: a training run that logged a single point still shows it (a line needs
two points; the curve is drawn with markers)."""
import matplotlib.image as mpimg
import numpy as np
import pandas as pd

from kit.store.figures import plot_training


def _blue_near_centre(path) -> int:
    image = mpimg.imread(path)[..., :3]
    h, w = image.shape[:2]
    centre = image[int(h * 0.35):int(h * 0.65), int(w * 0.4):int(w * 0.6)]
    target = np.array([0x4C, 0x72, 0xB0]) / 255  # the training-loss colour
    return int((np.abs(centre - target).max(axis=-1) < 0.08).sum())


def test_a_one_point_training_curve_is_visible(tmp_path):
    path = plot_training(pd.DataFrame({"step": [1], "loss": [1.05]}), tmp_path / "one.png", title="one point")
    assert _blue_near_centre(path) > 10  # the marker, in the middle of the autoscaled axes
    empty = plot_training(pd.DataFrame({"step": [1], "loss": [np.nan]}), tmp_path / "none.png")
    assert _blue_near_centre(empty) == 0  # and the check can fail: nothing logged, nothing drawn
