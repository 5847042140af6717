"""U-Net training aids: the elastic deformation keeps labels on their pixels; the weight map's known values."""

import math

import numpy as np
import pytest
import torch

from segbench.data.elastic import displacement_field, elastic_deform
from segbench.evaluation.losses import unet_weight_map


class ConstantNormal:
    """Stands in for ``np.random.Generator``: every displacement drawn is ``value`` (rows then columns)."""

    def __init__(self, rows: float, cols: float):
        self.rows, self.cols = rows, cols

    def normal(self, loc, scale, size):
        out = np.empty(size)
        out[:, 0], out[:, 1] = self.rows, self.cols
        return out


def _blocks(h=96, w=80, cell=12):
    """Labels 0/1/2 in 12-pixel blocks, and an RGB image that encodes the label as 80 x label."""
    yy, xx = np.mgrid[:h, :w]
    label = ((yy // cell + xx // cell) % 3).astype(np.uint8)
    return np.stack([label * 80] * 3, axis=-1).astype(np.uint8), label


def test_field_interpolates_the_control_points():
    rng = np.random.default_rng(3)
    control = np.random.default_rng(3).normal(0.0, 10.0, size=(1, 2, 3, 3))[0]
    field = displacement_field((41, 57), rng)
    assert field.shape == (2, 41, 57) and field.dtype == np.float32
    for (i, j), (y, x) in {(0, 0): (0, 0), (1, 1): (20, 28), (2, 2): (40, 56), (0, 2): (0, 56)}.items():
        np.testing.assert_allclose(field[:, y, x], control[:, i, j], rtol=1e-5, atol=1e-4)
    assert np.abs(np.diff(field, axis=1)).max() < 4 and np.abs(np.diff(field, axis=2)).max() < 4  # smooth


def test_labels_stay_aligned_with_the_image():
    image, label = _blocks()
    image2, label2 = elastic_deform(image, label, np.random.default_rng(0))
    assert image2.shape == image.shape and image2.dtype == np.uint8 and label2.dtype == np.uint8
    assert (label2 != label).mean() > 0.2  # the deformation moved the pattern
    agree = (np.rint(image2[..., 0] / 80) == label2).mean()
    assert agree > 0.95  # only pixels on block edges, blended by bilinear sampling, may disagree
    other_image, _ = elastic_deform(image, label, np.random.default_rng(1))
    assert (np.rint(other_image[..., 0] / 80) == label2).mean() < agree - 0.3  # a different field does not agree


def test_known_shift_and_identity():
    image, label = _blocks()
    shifted_image, shifted_label = elastic_deform(image, label, ConstantNormal(3.0, -5.0))
    # output pixel (y, x) takes the input at (y + 3, x - 5); mirrored borders fill the rest
    np.testing.assert_array_equal(shifted_label[:-3, 5:], label[3:, :-5])
    np.testing.assert_array_equal(shifted_image[:-3, 5:], image[3:, :-5])
    same_image, same_label = elastic_deform(image, label, np.random.default_rng(0), sigma=0.0)
    np.testing.assert_array_equal(same_image, image)
    np.testing.assert_array_equal(same_label, label)


def test_labels_keep_their_values_and_grayscale_images_work():
    rng = np.random.default_rng(5)
    label = rng.choice(np.array([0, 3, 255], dtype=np.uint8), size=(50, 43))
    image = rng.random((50, 43)).astype(np.float32)
    image2, label2 = elastic_deform(image, label, rng, sigma=20.0)
    assert set(np.unique(label2)) <= {0, 3, 255}
    assert image2.shape == (50, 43) and image2.dtype == np.float32
    with pytest.raises(ValueError, match="same size"):
        elastic_deform(image, label[:-1], rng)


def test_weight_map_class_balance_and_border_term():
    label = np.zeros((40, 40), np.uint8)
    label[10:30, 5:18] = 1  # two cells separated by a 3-pixel gap (columns 18, 19, 20)
    label[10:30, 21:35] = 1
    label[0] = 255
    w = unet_weight_map(label)
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float32 and w.shape == (40, 40)
    assert torch.count_nonzero(w[0]) == 0  # ignored pixels
    n_valid, n_fg = 40 * 39, int((label == 1).sum())
    w_fg, w_bg = n_valid / (2 * n_fg), n_valid / (2 * (n_valid - n_fg))
    assert w[20, 10].item() == pytest.approx(w_fg) and w[5, 38].item() == pytest.approx(w_bg, abs=1e-3)
    # gap centre: d1 = d2 = 2 pixels to the nearest pixel of either cell
    assert w[20, 19].item() == pytest.approx(w_bg + 10 * math.exp(-(2 + 2) ** 2 / (2 * 5 ** 2)), rel=1e-5)
    assert w[20, 18].item() == pytest.approx(w_bg + 10 * math.exp(-(1 + 3) ** 2 / (2 * 5 ** 2)), rel=1e-5)
    # without the border term both classes carry the same total weight
    assert (w[label == 1].sum() / w_fg).item() == pytest.approx(n_fg)


def test_weight_map_uses_given_instances():
    label = np.zeros((20, 30), np.int64)
    label[5:15, 3:27] = 1  # one connected foreground blob ...
    label[5:15, 15] = 0  # ... split by a one-pixel background line
    instances = np.zeros_like(label)
    instances[5:15, 3:15], instances[5:15, 16:27] = 1, 2
    merged = unet_weight_map(torch.from_numpy(label), instances=np.where(label > 0, 1, 0))
    split = unet_weight_map(label, instances=instances)
    assert merged[10, 15] < 2  # a single cell: no border term
    assert split[10, 15] > 9  # d1 = d2 = 1 pixel: 10 * exp(-4 / 50) = 9.23 on top of the class weight
    with pytest.raises(ValueError, match="shape"):
        unet_weight_map(label, instances=instances[:-1])
