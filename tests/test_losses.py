import math

import pytest
import torch
import torch.nn.functional as F

from segbench.evaluation.losses import sampling_mask, segmentation_loss


def _batch(n=2, c=5, h=40, w=70, seed=0, ignore_fraction=0.2):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, c, h, w, generator=g, requires_grad=True)
    target = torch.randint(0, c, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < ignore_fraction] = 255
    return scores, target


# --- sampling_mask -------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.5, 0.25])
def test_kept_fraction_of_cells_is_p_within_binomial_bounds(p):
    n, cells_h, cells_w = 64, 10, 10
    mask = sampling_mask((n, cells_h * 32, cells_w * 32), p, generator=torch.Generator().manual_seed(1))
    kept_cells = mask[:, ::32, ::32]
    total = kept_cells.numel()
    sigma = math.sqrt(total * p * (1 - p))
    assert abs(kept_cells.sum().item() - p * total) < 4 * sigma
    # pixels follow their cell: each cell is all kept or all dropped
    assert torch.equal(mask, kept_cells.repeat_interleave(32, 1).repeat_interleave(32, 2))


def test_mask_cells_are_aligned_to_stride_32_and_partial_at_the_border():
    mask = sampling_mask((3, 70, 45), 0.5, cell=32, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (3, 70, 45) and mask.dtype == torch.bool
    for y in range(70):
        for x in (0, 31, 32, 44):
            assert mask[0, y, x] == mask[0, (y // 32) * 32, (x // 32) * 32]
    # images draw independent cells (6 cells each; identical masks for 3 images would be a bug)
    assert not (torch.equal(mask[0], mask[1]) and torch.equal(mask[1], mask[2]))


def test_mask_p1_is_all_true_and_draws_nothing():
    g = torch.Generator().manual_seed(5)
    before = g.get_state()
    mask = sampling_mask((2, 33, 65), 1.0, generator=g)
    assert mask.all() and mask.shape == (2, 33, 65)
    assert torch.equal(g.get_state(), before)


def test_mask_is_reproducible_from_the_generator():
    a = sampling_mask((2, 64, 64), 0.25, generator=torch.Generator().manual_seed(3))
    b = sampling_mask((2, 64, 64), 0.25, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5])
def test_mask_rejects_p_outside_0_1(p):
    with pytest.raises(ValueError, match="p must be in"):
        sampling_mask((1, 32, 32), p)


# --- segmentation_loss: cross-entropy ------------------------------------------------------------------

@pytest.mark.parametrize("keep_all", [None, True])
def test_sum_without_sampling_equals_torch_exactly(keep_all):
    scores, target = _batch(n=3)
    keep = None if keep_all is None else torch.ones_like(target, dtype=torch.bool)
    ours = segmentation_loss(scores, target, reduction="sum", keep=keep)
    ref = F.cross_entropy(scores, target, ignore_index=255, reduction="sum") / 3
    assert torch.equal(ours, ref)
    g_ours, = torch.autograd.grad(ours, scores)
    g_ref, = torch.autograd.grad(ref, scores)
    assert torch.equal(g_ours, g_ref)


def test_mean_without_sampling_equals_torch_exactly():
    scores, target = _batch()
    keep = sampling_mask(tuple(target.shape), 1.0)
    assert torch.equal(segmentation_loss(scores, target, reduction="mean", keep=keep),
                       F.cross_entropy(scores, target, ignore_index=255, reduction="mean"))


def test_sum_vs_mean_normalisation():
    scores, target = _batch(n=2)
    valid = (target != 255).sum().item()
    total = segmentation_loss(scores, target, reduction="sum") * 2  # undo the division by N = 2
    mean = segmentation_loss(scores, target, reduction="mean")
    assert total.item() == pytest.approx(mean.item() * valid, rel=1e-5)
    # per-pixel NLL computed by hand
    nll = -F.log_softmax(scores, 1).gather(1, target.clamp(max=4).unsqueeze(1)).squeeze(1)
    assert mean.item() == pytest.approx(nll[target != 255].mean().item(), rel=1e-5)


def test_dropped_pixels_count_like_ignored_pixels():
    scores, target = _batch()
    keep = sampling_mask(tuple(target.shape), 0.5, cell=8, generator=torch.Generator().manual_seed(2))
    assert 0 < keep.sum() < keep.numel()
    expected = F.cross_entropy(scores, target.masked_fill(~keep, 255), ignore_index=255, reduction="sum") / 2
    assert torch.equal(segmentation_loss(scores, target, keep=keep), expected)
    grad, = torch.autograd.grad(segmentation_loss(scores, target, keep=keep), scores)
    assert grad.abs().sum(1)[~keep].max() == 0  # no gradient reaches a dropped pixel


@pytest.mark.parametrize("criterion", ["cross_entropy", "focal"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_no_valid_pixel_gives_zero_loss_with_a_gradient(criterion, reduction):
    scores, target = _batch()
    keep = torch.zeros_like(target, dtype=torch.bool)
    loss = segmentation_loss(scores, target, reduction=reduction, criterion=criterion, keep=keep)
    loss.backward()
    assert loss.item() == 0.0
    assert scores.grad is not None and torch.equal(scores.grad, torch.zeros_like(scores))


def test_bad_arguments_say_what_was_expected():
    scores, target = _batch()
    with pytest.raises(ValueError, match="reduction must be one of"):
        segmentation_loss(scores, target, reduction="avg")
    with pytest.raises(ValueError, match="expected one of \\['cross_entropy', 'focal'\\]"):
        segmentation_loss(scores, target, criterion="dice")
    with pytest.raises(ValueError, match="N x H x W"):
        segmentation_loss(scores, target[:, :-1])
    with pytest.raises(ValueError, match="keep must be a bool mask"):
        segmentation_loss(scores, target, keep=torch.ones(2, 40, 70))


# --- focal loss ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_focal_with_gamma_0_equals_cross_entropy(reduction):
    scores, target = _batch(n=2)
    keep = sampling_mask(tuple(target.shape), 0.5, cell=8, generator=torch.Generator().manual_seed(4))
    ce = segmentation_loss(scores, target, reduction=reduction, keep=keep)
    focal = segmentation_loss(scores, target, reduction=reduction, keep=keep, criterion="focal", gamma=0.0)
    assert focal.item() == pytest.approx(ce.item(), rel=1e-6)
    g_ce, = torch.autograd.grad(ce, scores)
    g_focal, = torch.autograd.grad(focal, scores)
    torch.testing.assert_close(g_focal, g_ce, rtol=1e-5, atol=1e-8)


def test_focal_down_weights_easy_pixels():
    # pixel 0 is easy (p_t ~ 0.98), pixel 1 is hard (p_t ~ 0.27), two classes
    scores = torch.tensor([[[[4.0, -1.0]], [[0.0, 0.0]]]])  # 1 x 2 x 1 x 2
    target = torch.tensor([[[0, 0]]])
    p_t = torch.softmax(scores, 1)[0, 0, 0]
    per_pixel = {}
    for gamma in (0.0, 2.0):
        per_pixel[gamma] = [segmentation_loss(scores, target, criterion="focal", gamma=gamma,
                                              keep=torch.tensor([[[i == j for j in range(2)]]])).item()
                            for i in range(2)]
    # the closed form (1 - p_t)^gamma * -log p_t
    for i in range(2):
        expected = (1 - p_t[i]) ** 2 * -torch.log(p_t[i])
        assert per_pixel[2.0][i] == pytest.approx(expected.item(), rel=1e-5)
    ratio_easy = per_pixel[2.0][0] / per_pixel[0.0][0]
    ratio_hard = per_pixel[2.0][1] / per_pixel[0.0][1]
    assert ratio_easy < 1e-3 and ratio_hard > 0.5
    # the easy pixel's share of the loss shrinks
    assert per_pixel[2.0][0] / per_pixel[2.0][1] < per_pixel[0.0][0] / per_pixel[0.0][1] / 100


def test_focal_gradient_is_finite_for_confident_pixels():
    scores = torch.tensor([[[[200.0]], [[0.0]]]], requires_grad=True)  # p_t rounds to 1
    target = torch.tensor([[[0]]])
    for gamma in (0.0, 0.5, 2.0):
        grad, = torch.autograd.grad(segmentation_loss(scores, target, criterion="focal", gamma=gamma), scores)
        assert torch.isfinite(grad).all()
