"""Augmentation: labels stay aligned with the image through every step, padding values, exact geometry of
each step, reproducibility from the generator, and a no-op when every step is off."""

import numpy as np
import pytest

from segbench import models
from segbench.data.augment import (
    IGNORE,
    Augmentation,
    augment,
    blur,
    pad_crop,
    rescale,
    rotate,
)
from segbench.training.recipes import SUCCESSOR_RECIPES, recipe

# class -> colour; the image's colour encodes its label, so alignment can be read off every pixel
PALETTE = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40], [40, 220, 220]], dtype=np.uint8)
MEAN = (120.0, 110.0, 100.0)


def _pair(h=90, w=70, cell=15, seed=0):
    """A label map of random classes in cell x cell blocks (no symmetry) and the image that paints it."""
    blocks = np.random.default_rng(seed).integers(0, len(PALETTE), size=(-(-h // cell), -(-w // cell)))
    label = np.kron(blocks, np.ones((cell, cell), dtype=np.int64))[:h, :w].astype(np.uint8)
    return PALETTE[label], label


def _interior(label, radius):
    """Pixels whose (2 radius + 1)^2 neighbourhood holds one label: bilinear blends cannot reach them."""
    h, w = label.shape
    padded = np.pad(label.astype(np.int64), radius, constant_values=-1)
    same = np.ones((h, w), dtype=bool)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            same &= padded[dy:dy + h, dx:dx + w] == label
    return same


def _assert_aligned(image, label, radius):
    """Every pixel at least ``radius`` pixels from a label edge has its label's colour (255: the mean)."""
    inside = _interior(label, radius)
    assert inside.sum() >= 500, "too few pixels away from label edges: the check would be vacuous"
    colours = np.where((label == IGNORE)[..., None], np.rint(MEAN).astype(np.uint8),
                       PALETTE[np.minimum(label, len(PALETTE) - 1)])
    assert set(np.unique(label)) <= set(range(len(PALETTE))) | {IGNORE}  # no new label values
    diff = np.abs(image.astype(int) - colours.astype(int)).max(axis=-1)
    assert diff[inside].max() <= 1


# each step with the distance from label edges beyond which the image must show exactly the label's colour:
# 0 for the steps that copy pixels, 1 for one bilinear resampling, 2 for the 5 x 5 blur, 5 for them all
STEPS = {
    "elastic": (Augmentation(elastic=True), 1),
    "scale": (Augmentation(scale_range=(0.5, 2.0)), 1),
    "rotate": (Augmentation(rotate=30.0), 1),
    "blur": (Augmentation(blur=1.0), 2),
    "flip": (Augmentation(flip=True), 0),
    "crop": (Augmentation(crop=64), 0),
    "pad": (Augmentation(crop=128), 0),
    "all": (Augmentation(crop=100, scale_range=(0.5, 2.0), flip=True, rotate=10.0, blur=0.5, elastic=True), 5),
}


@pytest.mark.parametrize("step", sorted(STEPS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_stay_aligned_with_the_image(step, seed):
    params, radius = STEPS[step]
    image, label = _pair(h=120, w=100, cell=30) if step == "all" else _pair()
    out_image, out_label = augment(image, label, np.random.default_rng(seed), params=params, mean=MEAN)
    assert out_image.dtype == np.uint8 and out_label.dtype == np.uint8
    assert out_image.shape == out_label.shape + (3,)
    if params.crop is not None:
        assert out_label.shape == (params.crop,) * 2
    _assert_aligned(out_image, out_label, radius)


def test_misalignment_would_be_caught():
    image, label = _pair()
    _assert_aligned(image, label, 0)
    with pytest.raises(AssertionError):
        _assert_aligned(image[:, ::-1], label, 5)  # an image flipped without its labels
    with pytest.raises(AssertionError):
        _assert_aligned(image[1:], label[:-1], 0)  # a one-pixel shift, where pixels are copied
    with pytest.raises(AssertionError):
        _assert_aligned(image[2:], label[:-2], 1)  # two pixels, where they are resampled once


def test_padding_takes_the_mean_colour_and_the_ignore_label():
    image, label = _pair(h=50, w=41)
    out_image, out_label = pad_crop(image, label, 60, np.random.default_rng(0), mean=MEAN)
    assert out_label.shape == (60, 60)
    pad = out_label == IGNORE
    assert pad.sum() == 60 * 60 - 50 * 41  # nothing cut: the image is smaller than the crop on both axes
    assert (out_image[pad] == np.rint(MEAN).astype(np.uint8)).all()
    # evenly split: 5 rows above, 5 below; 9 columns left, 10 right
    assert pad[:5].all() and pad[55:].all() and not pad[5, 9:50].any() and pad[5, :9].all() and pad[5, 50:].all()
    assert (out_image[5:55, 9:50] == image).all()


def test_a_crop_is_a_window_of_the_input():
    image, label = _pair()
    out_image, out_label = pad_crop(image, label, 40, np.random.default_rng(3))
    hits = [(r, c) for r in range(90 - 39) for c in range(70 - 39)
            if (image[r:r + 40, c:c + 40] == out_image).all() and (label[r:r + 40, c:c + 40] == out_label).all()]
    assert hits


def test_rotation_by_90_degrees_is_exact_and_counter_clockwise():
    image, label = _pair(h=60, w=60)
    out_image, out_label = rotate(image, label, 90.0, mean=MEAN)
    assert (out_label == np.rot90(label)).all() and (out_image == np.rot90(image)).all()
    same_image, same_label = rotate(image, label, 0.0)
    assert (same_image == image).all() and (same_label == label).all()
    corner_image, corner_label = rotate(image, label, 45.0, mean=MEAN)
    assert corner_label[0, 0] == IGNORE and (corner_image[0, 0] == np.rint(MEAN)).all()


def test_rescale_sizes_and_blur_keeps_flat_regions():
    image, label = _pair(h=90, w=70)
    for factor, size in ((2.0, (180, 140)), (0.5, (45, 35)), (1.0, (90, 70))):
        out_image, out_label = rescale(image, label, factor)
        assert out_label.shape == size and out_image.shape == size + (3,)
    assert (rescale(image, label, 1.0)[1] == label).all() and (rescale(image, label, 2.0)[1][::2, ::2] == label).all()
    flat = np.full((10, 10, 3), 77, dtype=np.uint8)
    assert (blur(flat) == 77).all()
    impulse = np.zeros((9, 9, 3), dtype=np.uint8)
    impulse[4, 4] = 255
    blurred = blur(impulse)[..., 0].astype(int)
    assert blurred[4, 4] < 255 and blurred[2, 4] > 0 and blurred[1, 4] == 0 and (blurred == blurred.T).all()


def test_the_same_seed_gives_the_same_result():
    image, label = _pair()
    params = STEPS["all"][0]
    a = augment(image, label, np.random.default_rng(7), params=params)
    b = augment(image, label, np.random.default_rng(7), params=params)
    c = augment(image, label, np.random.default_rng(8), params=params)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert a[0].shape != c[0].shape or (a[0] != c[0]).any()


def test_nothing_on_is_a_no_op_that_draws_nothing():
    image, label = _pair()
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    out_image, out_label = augment(image, label, rng, params=Augmentation())
    assert not Augmentation().active and (out_image == image).all() and (out_label == label).all()
    assert rng.bit_generator.state == state
    fcn = recipe("heavy", model_name="fcn8s_vgg16")  # the FCN recipes augment nothing
    assert not Augmentation.of(fcn).active
    assert (augment(image, label, rng, params=fcn)[1] == label).all()


# the 2D nets' recipes (V-Net's and 3D U-Net's volumes are not augmented by segbench.data.augment)
@pytest.mark.parametrize("name", [r for r in SUCCESSOR_RECIPES
                                  if any(e.recipe == r and e.dims == 2 for e in models.MODELS.values())])
def test_every_successor_recipe_drives_augment(name):
    rec = recipe(name, model_name="unet")
    image, label = _pair(h=120, w=100, cell=30)
    out_image, out_label = augment(image, label, np.random.default_rng(0), params=rec, mean=MEAN)
    # UNet++'s recipe keeps whole images (its release's patch size is not stated): flips only
    assert out_label.shape == ((rec.crop, rec.crop) if rec.crop else label.shape) and Augmentation.of(rec).active
    _assert_aligned(out_image, out_label, 5)


def test_bad_inputs_say_what_was_expected():
    image, label = _pair()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"expected an H x W x 3 uint8 image, got \(90, 70\) uint8"):
        augment(label, label, rng, params=Augmentation())
    with pytest.raises(ValueError, match=r"label of the image's size \(90, 70\), got \(70, 90\)"):
        augment(image, label.T.copy(), rng, params=Augmentation())
    with pytest.raises(ValueError, match=r"scale_range must be \(low, high\) with 0 < low <= high, got \(2.0, 1.0\)"):
        Augmentation(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="blur must be a probability"):
        Augmentation(blur=2.0)
