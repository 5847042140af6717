"""V-Net and 3D U-Net: counts against their references, any volume size; the MSD-layout twin and its NIfTI reader;
the Dice and sparse losses with known answers; a short training run, its evaluation and table."""

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segbench import models
from segbench.data import msd, sources
from segbench.data.synthetic import msd as twin
from segbench.evaluation.volumetric import evaluate_volumetric
from segbench.evaluation.volumetric_losses import confusion, dice_from_confusion, dice_loss, sparse_cross_entropy
from segbench.models import cards, unet3d, vnet
from segbench.reporting.volumetric import table_volumetric
from segbench.training.volumetric import random_patches, sparsify, train_volumetric

VOLUMETRIC = ["vnet", "unet3d"]


def _meta(name, classes, in_channels, width=1.0):
    with torch.device("meta"):
        return models.build(name, classes, width=width, in_channels=in_channels)


def test_vnet_has_the_prototxt_count():
    net = _meta("vnet", 2, 1)
    assert sum(p.numel() for p in net.parameters()) == vnet.PROTOTXT_PARAMS == 61_982_682  # SEEDS-REFERENCE-2 §14
    prelu = sum(p.numel() for m in net.modules() if isinstance(m, torch.nn.PReLU) for p in m.parameters())
    assert prelu == 3_170  # 61,979,512 conv parameters + 3,170 PReLU slopes
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size == (5, 5, 5)]
    assert len(convs) == 1 + sum(vnet.DOWN_CONVS) + sum(vnet.UP_CONVS) + 1 and not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def test_unet3d_has_the_papers_count_counted_the_papers_way():
    net = _meta("unet3d", 3, 3)
    assert unet3d.paper_parameter_count(net) == unet3d.PAPER_PARAMS == 19_069_955
    bn = sum(2 * m.num_features for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d))
    assert sum(p.numel() for p in net.parameters()) == 19_069_955 + bn
    assert [m.bias for m in net.modules() if isinstance(m, torch.nn.ConvTranspose3d)] == [None] * 3


@pytest.mark.parametrize("name,in_channels,classes,per_voxel", [("vnet", 1, 2, 366_820), ("unet3d", 3, 3, 933_472)])
def test_macs_per_voxel_match_the_reference(name, in_channels, classes, per_voxel):
    net = _meta(name, classes, in_channels).eval()
    flops = cards.count_flops(net, torch.zeros(1, in_channels, 32, 32, 32, device="meta"))
    assert flops / 2 / 32 ** 3 == per_voxel  # SEEDS-REFERENCE-2 §14


@pytest.mark.parametrize("name", VOLUMETRIC)
def test_any_volume_size_gives_scores_of_that_size(name):
    torch.manual_seed(0)
    net = models.build(name, 4, width=1 / 16, in_channels=2).eval()
    assert models.declared(name).dims == 3 and net.backbone is None and net.head_prefixes == ()
    for size in [(1, 1, 1), (5, 17, 9), (16, 16, 16), (19, 8, 33)]:
        with torch.no_grad():
            y = net(torch.randn(2, 2, *size))
        assert tuple(y.shape) == (2, 4, *size), (name, size)
    with pytest.raises(ValueError, match=r"N x C x D x H x W volumes, got a tensor of shape \(1, 2, 8, 8\)"):
        net(torch.randn(1, 2, 8, 8))


@pytest.mark.parametrize("name", VOLUMETRIC)
def test_backward_reaches_every_parameter_and_width_scales_channels(name):
    torch.manual_seed(0)
    net = models.build(name, 3, width=1 / 8, in_channels=1)
    net(torch.randn(2, 1, 16, 16, 16)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    narrow, wide = (_meta(name, 3, 1, w) for w in (0.25, 0.5))
    first = {"vnet": "in_conv", "unet3d": "enc1.0"}[name]
    assert wide.get_submodule(first).out_channels == 2 * narrow.get_submodule(first).out_channels


def test_vnet_input_stage_adds_the_input_tiled_along_channels():
    net = models.build("vnet", 2, width=1 / 4, in_channels=2)  # 4 channels: input channels 0, 1, 0, 1
    torch.nn.init.zeros_(net.in_conv.weight)
    torch.nn.init.zeros_(net.in_conv.bias)
    x = torch.rand(1, 2, 16, 16, 16) + 0.1  # positive: PReLU is the identity; 16: no padding
    seen = {}
    net.in_act.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    net(x)
    assert torch.equal(seen["out"], x[:, [0, 1, 0, 1]])


def _write(tmp_path, **kwargs):
    kwargs = {"n_train": 3, "n_test": 1, "shape": (12, 10, 8), "seed": 0, **kwargs}
    return twin.write_twin(tmp_path, **kwargs)


def test_twin_round_trips_through_the_reader_in_ras_with_its_spacing(tmp_path):
    spacing = (0.8, 0.8, 2.5)
    path = _write(tmp_path, spacing=spacing, seed=3)
    task = msd.read_task(path.parent)
    assert (task["numTraining"], task["numTest"], task["tensorImageSize"]) == (3, 1, "3D")
    assert task["training"][1] == {"image": "./imagesTr/twin_002.nii.gz", "label": "./labelsTr/twin_002.nii.gz"}
    assert task["test"] == ["./imagesTs/twin_101.nii.gz"] and task["labels"]["3"] == "nodule"
    case = msd.load_case(task, task["training"][1])
    image, label = twin.make_case(np.random.default_rng([3, 1]), (12, 10, 8), spacing)
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    assert np.array_equal(case.image, image[None]) and np.array_equal(case.label, label)
    assert case.spacing == pytest.approx(spacing) and case.orientation == ("R", "A", "S")
    assert np.allclose(np.diag(case.affine)[:3], spacing)
    # on disk: both in-plane axes reversed (an LPS-like affine), so the raw array is the flipped one
    raw = nib.load(path.parent / "imagesTr" / "twin_002.nii.gz")
    assert nib.aff2axcodes(raw.affine) == ("L", "P", "S")
    assert np.array_equal(np.asarray(raw.dataobj), image[::-1, ::-1])
    # the voxel at the same scanner position holds the same value either way
    ijk_raw = np.array([2, 3, 4, 1])
    xyz = raw.affine @ ijk_raw
    ijk = np.round(np.linalg.inv(case.affine) @ xyz).astype(int)
    assert case.image[0][tuple(ijk[:3])] == np.asarray(raw.dataobj)[tuple(ijk_raw[:3])]
    assert msd.load_case(task, task["test"][0]).label is None


def test_twin_is_deterministic_in_its_seed(tmp_path):
    a, b, c = (_write(tmp_path / name, seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    files = sorted(p.relative_to(a.parent) for p in a.parent.rglob("*") if p.is_file())
    assert len(files) == 1 + 3 * 2 + 1
    for f in files:
        assert (a.parent / f).read_bytes() == (b.parent / f).read_bytes(), f
    image = "imagesTr/twin_001.nii.gz"
    assert (a.parent / image).read_bytes() != (c.parent / image).read_bytes()
    labels = [np.asarray(nib.load(a.parent / "labelsTr" / f"twin_00{i}.nii.gz").dataobj) for i in (1, 2, 3)]
    assert {int(v) for lab in labels for v in np.unique(lab)} >= {0, 1, 2}  # background, gland, central zone


def test_reader_errors_name_what_disagrees(tmp_path):
    path = _write(tmp_path)
    root = path.parent
    original = json.loads(path.read_text())
    listing = dict(original, training=original["training"][:2])
    listing["numTraining"] = 2
    path.write_text(json.dumps(listing))
    with pytest.raises(msd.TaskError, match=r"imagesTr holds 1 training image\(s\) that .* does not list: "
                                            r"\['twin_003.nii.gz'\]"):
        msd.read_task(root)
    listing["numTraining"] = 3
    path.write_text(json.dumps(listing))
    with pytest.raises(msd.TaskError, match="numTraining 3 / numTest 1 but it lists 2 training and 1 test"):
        msd.read_task(root)
    (root / "imagesTs" / "twin_101.nii.gz").unlink()
    path.write_text(json.dumps(original))
    with pytest.raises(msd.TaskError, match=r"lists 1 test image\(s\) missing from .*imagesTs: \['twin_101.nii.gz'\]"):
        msd.read_task(root)
    with pytest.raises(FileNotFoundError, match="dataset.json does not exist"):
        msd.read_task(tmp_path / "nowhere")


def test_a_label_of_another_shape_than_its_image_is_refused(tmp_path):
    path = _write(tmp_path)
    task = msd.read_task(path.parent)
    bad = np.zeros((12, 10, 7), np.uint8)
    twin.save_nifti(path.parent / "labelsTr" / "twin_001.nii.gz", bad, twin.storage_affine(bad.shape, twin.SPACING))
    with pytest.raises(msd.TaskError, match=r"twin_001.nii.gz has shape \(12, 10, 7\), its image twin_001.nii.gz "
                                            r"\(12, 10, 8\)"):
        msd.load_case(task, task["training"][0])
    unnamed = np.full((12, 10, 8), 7, np.uint8)
    twin.save_nifti(path.parent / "labelsTr" / "twin_002.nii.gz", unnamed, twin.storage_affine(unnamed.shape,
                                                                                                  twin.SPACING))
    with pytest.raises(msd.TaskError, match=r"holds labels \[7\] that dataset.json does not name"):
        msd.load_case(task, task["training"][1])


def test_msd_prostate_is_declared_with_monais_mirror_and_md5():
    (source,) = sources.SOURCES["msd_prostate"]
    assert source.url == "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task05_Prostate.tar"
    assert source.md5 == "35138f08b1efaef89d7424d2bcc928db" and source.filename == "Task05_Prostate.tar"


def _logits(p_fg):
    """Scores 1 x 2 x 1 x 1 x V whose softmax foreground probability is ``p_fg``."""
    p = torch.tensor(p_fg, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))]).reshape(1, 2, 1, 1, -1)


def test_dice_loss_known_answers():
    target = torch.tensor([1, 0]).reshape(1, 1, 1, 2)
    scores = _logits([0.8, 0.2])
    # V-Net's squared form: 2 * 0.8 / (0.8^2 + 0.2^2 + 1); plain: 2 * 0.8 / (0.8 + 0.2 + 1). Tolerance: float32
    # arithmetic; the eps of 1e-5 moves either value by 4e-6 or more, so the tests see it
    assert dice_loss(scores, target).item() == pytest.approx(1 - 1.6 / (1.68 + 1e-5), abs=2e-7)
    assert dice_loss(scores, target, form="plain").item() == pytest.approx(1 - 1.6 / (2.0 + 1e-5), abs=2e-7)
    assert dice_loss(scores, target, form="plain", smooth=1.0, eps=0.0).item() == pytest.approx(1 - 2.6 / 3.0)
    # generalised with one foreground class is the plain form (the weight cancels)
    assert dice_loss(scores, target, form="generalised", eps=0.0).item() == pytest.approx(0.2, abs=2e-7)
    perfect = 40.0 * (2 * F.one_hot(target, 2).movedim(-1, 1).double() - 1)
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-5)
    # ignored voxels count nowhere: a wrong prediction there changes nothing
    sparse = torch.tensor([1, 255]).reshape(1, 1, 1, 2)
    assert dice_loss(_logits([0.8, 0.9]), sparse).item() == pytest.approx(dice_loss(_logits([0.8, 0.1]), sparse).item())
    with pytest.raises(ValueError, match="form must be one of"):
        dice_loss(scores, target, form="cubic")


def test_sparse_cross_entropy_ignores_unlabelled_voxels():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 4, 4, 4))
    target[:, :, :, ::2] = 255  # unlabelled
    a = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    b = a.detach().clone()
    b[..., ::2] = torch.randn_like(b[..., ::2]) * 10  # other predictions on the unlabelled voxels only
    b.requires_grad_(True)
    la, lb = sparse_cross_entropy(a, target), sparse_cross_entropy(b, target)
    assert la.item() == pytest.approx(lb.item(), abs=1e-6)
    la.backward(), lb.backward()
    assert torch.equal(a.grad, b.grad) and a.grad[..., ::2].abs().max() == 0
    assert la.item() == pytest.approx(F.cross_entropy(a, target, ignore_index=255).item(), abs=1e-6)
    # class weights: two labelled voxels, CE c0 (label 0) and c1 (label 1), weights 1 and 3 -> (c0 + 3 c1) / 4
    s = torch.tensor([[2.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 1, 2)
    t = torch.tensor([0, 1]).reshape(1, 1, 1, 2)
    c0, c1 = math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1))
    assert sparse_cross_entropy(s, t, class_weights=[1, 3]).item() == pytest.approx((c0 + 3 * c1) / 4)
    with pytest.raises(ValueError, match="no labelled voxel"):
        sparse_cross_entropy(s, torch.full_like(t, 255))


def test_dice_per_class_from_the_confusion_matrix():
    target = np.array([0, 0, 1, 1, 2, 255])
    pred = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion(pred, target, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    dice = dice_from_confusion(cm)
    assert dice[:3] == pytest.approx([2 / 4, 4 / 5, 0.0]) and math.isnan(dice[3])


def test_sparse_annotation_keeps_every_kth_slice():
    label = np.arange(2 * 2 * 9).reshape(2, 2, 9) % 3
    sparse = sparsify(label, 4)
    assert np.array_equal(sparse[..., [0, 4, 8]], label[..., [0, 4, 8]])
    assert (np.delete(sparse, [0, 4, 8], axis=2) == 255).all()


def test_patches_of_cases_smaller_than_the_patch_are_padded_and_unlabelled():
    image, label = np.ones((1, 4, 6, 3), np.float32), np.ones((4, 6, 3), np.uint8)
    x, y = random_patches([("a", image, label)], (5, 6, 4), 3, np.random.default_rng(0))
    assert tuple(x.shape) == (3, 1, 5, 6, 4) and tuple(y.shape) == (3, 5, 6, 4) and y.dtype == torch.int64
    assert (y[:, :4, :, :3] == 1).all() and (y[:, 4] == 255).all() and (y[..., 3] == 255).all()
    assert (x[:, :, 4] == 0).all() and (x[:, :, :4, :, :3] == 1).all()


@pytest.mark.parametrize("name", VOLUMETRIC)
def test_short_training_lowers_the_loss_and_is_evaluated_and_tabled(tmp_path, name):
    path = _write(tmp_path, n_train=4, n_test=0, shape=(16, 16, 8), seed=1)
    out = train_volumetric(task_dir=path.parent, model=name, out=tmp_path / f"{name}.pt", seed=0, width=1 / 8,
                           iterations=32, n_val=1, patch=(16, 16, 8), threads=1, log_every=0)
    losses = json.loads(out.with_suffix(".json").read_text())["losses"]
    assert len(losses) == 32 and np.mean(losses[-4:]) < 0.9 * np.mean(losses[:4]), losses
    metrics = evaluate_volumetric(task_dir=path.parent, weights=out, n_val=1, out=tmp_path / "eval.json", threads=1)
    result = json.loads(metrics.read_text())
    assert result["model"] == name and list(result["cases"]) == ["twin_004"]
    assert result["labels"] == list(twin.LABELS.values()) and 0.0 <= result["dice_per_class"]["gland"] <= 1.0
    csv, _, md = table_volumetric({name: [metrics, metrics]}, tmp_path / "table")
    assert "gland" in csv.read_text().splitlines()[0] and models.declared(name).display in md.read_text()
    with pytest.raises(ValueError, match="'unet' is a 2D net"):
        train_volumetric(task_dir=path.parent, model="unet", out=tmp_path / "x.pt", seed=0, width=1, iterations=1,
                         n_val=1)


def test_tiled_prediction_covers_every_voxel_and_equals_whole_volume_scoring_for_a_pointwise_net():
    from segbench.evaluation.volumetric import predict_volume, tile_starts

    assert tile_starts(64, 32) == [0, 16, 32] and tile_starts(20, 32) == [0] and tile_starts(33, 16) == [0, 8, 16, 17]
    torch.manual_seed(0)
    net = torch.nn.Conv3d(2, 4, 1).eval()  # no context: every tiling gives the same scores
    image = np.random.default_rng(0).normal(size=(2, 19, 12, 7)).astype(np.float32)
    whole = predict_volume(net, image, torch.device("cpu"))
    tiled = predict_volume(net, image, torch.device("cpu"), patch=(8, 16, 4))
    assert whole.shape == tiled.shape == (19, 12, 7) and (whole == tiled).all()
    assert len(np.unique(whole)) > 1  # not a constant map
