"""The stand-ins' images rendered once (segbench.data.classification): the same bits as drawing them in the
pretrain step, and refused when they were rendered for other settings."""

import h5py
import numpy as np
import pytest
import torch

from segbench.data.classification import EVAL_SEED_OFFSET, Images, draw, eval_batches, phases, render_images
from segbench.pretraining.standins import pretrain_classifier

SETTINGS = dict(crop_size=48, crop_iterations=2, iterations=2, batch_size=3, clutter=1, seed=5, eval_images=55)
CROP_JITTER = 16.0 * 48 / 224  # the object's jitter scaled to the crop


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return render_images(tmp_path_factory.mktemp("images") / "images-224px.h5", size=224, progress=False, **SETTINGS)


def _pretrain(out, **kw):
    return pretrain_classifier(out, backbone="vgg16", width=1 / 16, threads=1, progress=False, **{**SETTINGS, **kw})


def test_the_file_holds_each_stream_in_drawing_order(rendered):
    with h5py.File(rendered) as f:
        assert {k: f[k]["images"].shape for k in f} == {"crops": (6, 48, 48, 3), "full": (6, 224, 224, 3),
                                                          "single": (55, 224, 224, 3), "clutter": (55, 224, 224, 3)}
        jitters = (f["crops"].attrs["jitter"], f["full"].attrs["jitter"], f["clutter"].attrs["clutter"])
        assert jitters == (CROP_JITTER, 16.0, 1)
        train = np.random.default_rng(5)
        first, classes = draw(train, 48, 3, jitter=CROP_JITTER, clutter=0)
        np.testing.assert_array_equal(f["crops"]["images"][:3], first)
        np.testing.assert_array_equal(f["crops"]["classes"][:3], classes)
        held_out = np.random.default_rng(5 + EVAL_SEED_OFFSET)
        np.testing.assert_array_equal(f["single"]["images"][:50], draw(held_out, 224, 50, jitter=16.0, clutter=0)[0])
        assert f["crops"]["classes"][:].min() >= 1 and f["full"]["classes"][:].max() <= 20


def test_a_stand_in_trained_on_the_rendered_images_is_the_one_that_draws_them(rendered, tmp_path):
    drawn = torch.load(_pretrain(tmp_path / "drawn.pt"), weights_only=True)
    read = torch.load(_pretrain(tmp_path / "read.pt", images=rendered), weights_only=True)
    assert drawn["state_dict"].keys() == read["state_dict"].keys()
    assert all(torch.equal(drawn["state_dict"][k], read["state_dict"][k]) for k in drawn["state_dict"])
    assert (read["accuracy"], read["accuracy_clutter"]) == (drawn["accuracy"], drawn["accuracy_clutter"])
    assert read["settings"]["last_loss"] == drawn["settings"]["last_loss"]


@pytest.mark.parametrize("change, message", [
    ({"iterations": 3}, r"iterations 2 \(needed 3\)"),
    ({"seed": 6}, r"seed 5 \(needed 6\)"),
    ({"backbone": "alexnet_caffe"}, r"size 224 \(needed 227\)"),
])
def test_images_rendered_for_other_settings_are_refused(rendered, tmp_path, change, message):
    kw = {"backbone": "vgg16", "width": 1 / 16, **SETTINGS, **change}
    with pytest.raises(ValueError, match=rf"images-224px.h5 was rendered with other settings: {message}"):
        pretrain_classifier(tmp_path / "x.pt", images=rendered, threads=1, progress=False, **kw)


def test_a_missing_file_names_the_step_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="render the stand-in images first"):
        Images(0, path=tmp_path / "none.h5")


def test_reading_past_a_stream_or_with_other_draw_settings_fails(rendered):
    images = Images(5, path=rendered, settings={"size": 224})
    with pytest.raises(ValueError, match=r"asked for 7 'crops' images of 48 px .* holds 6"):
        images.draw("crops", 48, 7, jitter=CROP_JITTER, clutter=0)
    with pytest.raises(ValueError, match=r"asked for 3 'full' images of 224 px \(jitter 16.0, clutter 2\)"):
        images.draw("full", 224, 3, jitter=16.0, clutter=2)
    images.close()


def test_plans():
    assert eval_batches(120) == [50, 50, 20] and eval_batches(0) == []
    assert phases(size=224, crop_size=112, crop_iterations=0, iterations=5, jitter=16.0, clutter=2) == [
        ("full", 224, 5, 16.0, 2)]
    assert phases(size=227, crop_size=112, crop_iterations=1, iterations=1, jitter=16.0, clutter=2)[0] == (
        "crops", 112, 1, 16.0 * 112 / 227, 0)
