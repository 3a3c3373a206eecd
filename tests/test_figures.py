"""Figures people look at: a training run that logged a single point still shows it (a line needs
two points; the curve is drawn with markers); a judge known only by its verdicts is drawn where it is
compared, in the accuracy panel."""
import matplotlib.image as mpimg
import numpy as np
import pandas as pd

from kit.store.figures import plot_methods, plot_training


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


def _orange(image) -> int:
    target = np.array([0xDD, 0x84, 0x52]) / 255  # the judges' colour
    return int((np.abs(image[..., :3] - target).max(axis=-1) < 0.08).sum())


def test_a_verdict_judge_is_drawn_in_the_accuracy_panel_only(tmp_path):
    table = pd.DataFrame({"log_loss": [0.95, 0.80, 0.72, np.nan], "accuracy": [0.47, 0.62, 0.68, 0.67]},
                         index=["prior", "member", "blend", "judge: pandalm-7b"])
    image = mpimg.imread(plot_methods(table, tmp_path / "methods.png", title="judges"))
    w = image.shape[1]
    assert _orange(image[:, : int(w * 0.55)]) == 0  # no log loss: no bar on the left
    assert _orange(image[:, int(w * 0.6):]) > 200  # its accuracy bar and its line on the right
    # without an accuracy column: one panel, the log losses only, and no verdict judge to draw
    alone = mpimg.imread(plot_methods(table[["log_loss"]], tmp_path / "loss.png"))
    assert _orange(alone) == 0
