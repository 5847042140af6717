"""The dense CRF: known answers of the exact oracle, what the CRF does to confident, noisy and misaligned
predictions, the lattice filter against the oracle, the bandwidth scaling and the input checks."""

import dataclasses
import math

import numpy as np
import pytest

from segbench.evaluation.crf import DEEPLAB_VOC, CRFParams, dense_crf, dense_crf_bruteforce, scaled

IMPLEMENTATIONS = [dense_crf, dense_crf_bruteforce]


def _probs(labels: np.ndarray, k: int, confidence: float) -> np.ndarray:
    """K x H x W: ``confidence`` on each pixel's label, the rest spread evenly."""
    p = np.full((k, *labels.shape), (1 - confidence) / (k - 1), np.float32)
    np.put_along_axis(p, labels[None].astype(np.int64), confidence, axis=0)
    return p


def _regions(h: int, w: int) -> np.ndarray:
    """A label map of three regions: left/right halves and a disc straddling them."""
    y, x = np.mgrid[0:h, 0:w]
    labels = (x >= w // 2).astype(np.int64)
    labels[(y - h / 2) ** 2 + (x - w / 3) ** 2 < (h / 5) ** 2] = 2
    return labels


COLOURS = np.array([[200, 40, 40], [40, 40, 200], [40, 200, 40]], np.uint8)


def test_the_oracle_has_pydensecrfs_semantics_on_two_pixels():
    """Own term included, symmetric normalisation, Potts as +w K Q on the own label's logit, softmax(-U) start."""
    p = np.array([[[0.8, 0.3]], [[0.2, 0.7]]], np.float32)  # K=2, H=1, W=2
    image = np.zeros((1, 2, 3), np.uint8)
    params = CRFParams(w1=2.0, theta_alpha=1.0, theta_beta=5.0, w2=0.0, iterations=1)
    g = math.exp(-0.5)  # the two pixels are one pixel apart, same colour
    q0 = p[:, 0, :]  # softmax(-U) = P where P is not clipped
    message = 2.0 * (q0 + g * q0[:, ::-1]) / (1 + g)  # both rows of K sum to 1 + g
    logits = np.log(q0) + message
    expected = np.exp(logits) / np.exp(logits).sum(0)
    got = dense_crf_bruteforce(p, image, params=params)[:, 0, :]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("crf", IMPLEMENTATIONS)
def test_without_pairwise_terms_the_crf_returns_the_clipped_softmax(crf):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(4, 0.3), size=(12, 10)).transpose(2, 0, 1).astype(np.float32)
    image = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    clipped = np.clip(p, 1e-5, 1)
    expected = clipped / clipped.sum(0)
    for params in (CRFParams(w1=0, w2=0, iterations=1), CRFParams(iterations=0)):
        np.testing.assert_allclose(crf(p, image, params=params), expected, atol=1e-6)


@pytest.mark.parametrize("crf", IMPLEMENTATIONS)
def test_a_confident_prediction_that_follows_the_image_stays_unchanged(crf):
    labels = _regions(32, 32)
    q = crf(_probs(labels, 3, 0.95), COLOURS[labels], params=scaled(DEEPLAB_VOC, 32))
    np.testing.assert_array_equal(q.argmax(0), labels)
    assert q.max(0).min() > 0.95  # the CRF only sharpens it
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)


@pytest.mark.parametrize("crf", IMPLEMENTATIONS)
def test_an_isolated_wrong_pixel_on_a_constant_image_takes_its_neighbours_class(crf):
    labels = np.zeros((32, 32), np.int64)
    labels[16, 16] = 1
    p = _probs(labels, 2, 0.7)
    image = np.full((32, 32, 3), 128, np.uint8)
    assert p.argmax(0)[16, 16] == 1
    q = crf(p, image, params=scaled(DEEPLAB_VOC, 32))
    np.testing.assert_array_equal(q.argmax(0), np.zeros((32, 32)))


@pytest.mark.parametrize("crf", IMPLEMENTATIONS)
def test_a_label_boundary_two_pixels_off_a_colour_edge_snaps_onto_the_edge(crf):
    x = np.arange(32)[None, :].repeat(32, 0)
    edge = (x >= 16).astype(np.int64)  # colour edge between columns 15 and 16
    image = COLOURS[edge]
    for shift in (2, -2):
        predicted = (x >= 16 + shift).astype(np.int64)
        p = _probs(predicted, 2, 0.7)
        q = crf(p, image, params=scaled(DEEPLAB_VOC, 32))
        assert (predicted != edge).sum() == 64
        np.testing.assert_array_equal(q.argmax(0), edge)


def _smooth_case(seed: int, k: int = 4, h: int = 32, w: int = 32):
    """Regions of flat colour (noise std 2) and noisy, shifted probabilities: the CRF has work to do."""
    rng = np.random.default_rng(seed)
    labels = _regions(h, w) % k
    colours = rng.integers(0, 256, (k, 3))
    image = np.clip(colours[labels] + rng.normal(0, 2, (h, w, 3)), 0, 255).astype(np.uint8)
    logits = rng.normal(0, 1, (k, h, w)) + 1.5 * np.eye(k)[np.roll(labels, 2, axis=1)].transpose(2, 0, 1)
    p = np.exp(logits)
    return (p / p.sum(0)).astype(np.float32), image


ORACLE_PARAMS = [scaled(CRFParams(theta_beta=13), 32), CRFParams(theta_alpha=8, theta_beta=13, theta_gamma=3),
                 CRFParams(w1=5, theta_alpha=5, theta_beta=20, w2=0)]


@pytest.mark.parametrize("params", ORACLE_PARAMS)
@pytest.mark.parametrize("seed", [0, 1])
def test_the_lattice_filter_agrees_with_the_exact_oracle(params, seed):
    """The permutohedral lattice only approximates the Gaussian (an effective width about 1.1-1.2 bandwidths,
    uneven near the border), and symmetric normalisation cancels only its overall scale; so the marginals differ
    by a few percent, most where a pixel is near a tie between two labels (there by up to 0.3). Measured over these
    three settings and seeds 0-5: argmax agreement >= 99.3 %, mean |dQ| <= 0.0025, 99th percentile <= 0.035 (0.09
    for one seed)."""
    p, image = _smooth_case(seed)
    fast = dense_crf(p, image, params=params)
    exact = dense_crf_bruteforce(p, image, params=params)
    assert (fast.argmax(0) != p.argmax(0)).sum() > 20  # the CRF changed the prediction, so agreement means something
    assert (fast.argmax(0) == exact.argmax(0)).mean() >= 0.99
    error = np.abs(fast - exact)
    assert error.mean() <= 0.005 and np.quantile(error, 0.99) <= 0.05


@pytest.mark.parametrize("params", [CRFParams(w2=0, theta_alpha=10), scaled(DEEPLAB_VOC, 80),
                                    CRFParams(theta_alpha=10, theta_beta=13, theta_gamma=3)])
def test_the_lattice_equals_pydensecrf_where_it_is_installed(params):
    """Same lattice, same normalisation, same update: pydensecrf's marginals to float32 rounding (measured: max
    |dQ| 7.5e-6 with pydensecrf2 1.1). Skipped without the optional package (``pip install pydensecrf2``)."""
    densecrf = pytest.importorskip("pydensecrf.densecrf")
    p, image = _smooth_case(0, k=5, h=64, w=80)
    reference = densecrf.DenseCRF2D(80, 64, 5)
    reference.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(p, 1e-5, 1)).reshape(5, -1)))
    if params.w2:
        reference.addPairwiseGaussian(sxy=params.theta_gamma, compat=params.w2)
    reference.addPairwiseBilateral(sxy=params.theta_alpha, srgb=params.theta_beta, rgbim=image, compat=params.w1)
    expected = np.array(reference.inference(params.iterations)).reshape(5, 64, 80)
    np.testing.assert_allclose(dense_crf(p, image, params=params), expected, atol=5e-5)


def test_spatial_bandwidths_scale_with_the_image_and_never_below_one_pixel():
    assert DEEPLAB_VOC == CRFParams(w1=4, theta_alpha=67, theta_beta=3, w2=3, theta_gamma=1, iterations=10)
    twin = scaled(DEEPLAB_VOC, 128)
    assert twin.theta_alpha == pytest.approx(67 * 128 / 500) == pytest.approx(17.152)
    assert twin.theta_gamma == 1.0  # 0.256 px is clamped
    assert (twin.theta_beta, twin.w1, twin.w2, twin.iterations) == (3, 4, 3, 10)  # colour and weights unchanged
    assert scaled(DEEPLAB_VOC, 500) == DEEPLAB_VOC
    big = scaled(CRFParams(theta_gamma=3), 1000)
    assert (big.theta_alpha, big.theta_gamma) == (134, 6)
    assert scaled(CRFParams(theta_alpha=2), 10, reference=100).theta_alpha == 1.0


@pytest.mark.parametrize("crf", IMPLEMENTATIONS)
def test_bad_inputs_say_what_was_received_and_expected(crf):
    p = _probs(np.zeros((8, 6), np.int64), 3, 0.9)
    image = np.zeros((8, 6, 3), np.uint8)
    with pytest.raises(ValueError, match=r"uint8 H x W x 3 .* got float64 of shape \(8, 6, 3\)"):
        crf(p, image.astype(np.float64))
    with pytest.raises(ValueError, match=r"uint8 H x W x 3 .* got uint8 of shape \(8, 6\)"):
        crf(p, image[..., 0])
    with pytest.raises(ValueError, match=r"float K x H x W array, got float32 of shape \(8, 6\)"):
        crf(p[0], image)
    with pytest.raises(ValueError, match=r"K x H x W = \(8, 6, 3\) but the image is \(8, 6\)"):
        crf(p.transpose(1, 2, 0), image)  # classes last
    with pytest.raises(ValueError, match=r"sum to 1 over the K = 3 classes of axis 0 \(a softmax\); got .* 4\.\.4"):
        crf(p * 4, image)  # scores, not a softmax
    with pytest.raises(ValueError, match="float K x H x W array, got int64"):
        crf(p.astype(np.int64), image)


def test_bad_parameters_and_oversized_oracle_inputs_are_refused():
    with pytest.raises(ValueError, match="theta_beta must be > 0, got 0"):
        CRFParams(theta_beta=0)
    with pytest.raises(ValueError, match="w1 must be >= 0, got -1"):
        CRFParams(w1=-1)
    with pytest.raises(ValueError, match="iterations must be an integer >= 0, got 2.5"):
        CRFParams(iterations=2.5)
    with pytest.raises(ValueError, match=r"unknown CRF parameters \['bi_w'\]; expected some of \['w1'"):
        CRFParams.from_dict({"bi_w": 4})
    assert CRFParams.from_dict({"w1": 5}).w1 == 5
    big = np.full((2, 80, 80), 0.5, np.float32)
    with pytest.raises(ValueError, match="got 80x80 = 6400 pixels, expected at most 4096"):
        dense_crf_bruteforce(big, np.zeros((80, 80, 3), np.uint8))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A store of two image sizes and a briefly trained net (its predictions are far from the labels)."""
    from conftest import write_mixed_store

    from segbench.training.train import train

    tmp = tmp_path_factory.mktemp("crf_eval")
    store = write_mixed_store(tmp / "val.h5", n=4)
    weights = train(train_store=store, out_dir=tmp / "run", model_name="unet_same", width=1 / 16, recipe="short",
                    iterations=2, batch_size=2, seed=3, progress=False, checkpoint_every=0)
    return tmp, store, weights


def test_evaluate_with_the_crf_scores_the_crf_labels_and_records_its_parameters(tiny_run):
    from segbench.evaluation.evaluate import evaluate

    tmp, store, weights = tiny_run
    plain = evaluate(store_path=store, model_path=weights, out_json=tmp / "val.json", progress=False)
    crf = evaluate(store_path=store, model_path=weights, out_json=tmp / "val_crf.json", progress=False,
                   crf=DEEPLAB_VOC)
    none = evaluate(store_path=store, model_path=weights, out_json=tmp / "val_crf0.json", progress=False,
                    crf=CRFParams(iterations=0))
    assert "crf" not in plain and none["hist"] == plain["hist"]  # no mean-field step: the net's argmax
    assert crf["hist"] != plain["hist"] and np.sum(crf["hist"]) == np.sum(plain["hist"])
    assert crf["loss"] == pytest.approx(plain["loss"])  # the net's loss, not the CRF's
    record = crf["crf"]
    assert record["params"] == dataclasses.asdict(DEEPLAB_VOC) and record["scale"] == "auto"
    assert record["scaled"]["48x64"]["theta_alpha"] == pytest.approx(67 * 64 / 500)
    assert record["scaled"]["48x48"]["theta_alpha"] == pytest.approx(67 * 48 / 500)
    assert record["scaled"]["48x48"]["theta_gamma"] == 1.0 and record["seconds_per_image"] > 0


def test_a_predictor_labels_one_sample_with_the_crf(tiny_run):
    import torch

    from segbench.data.store import Store
    from segbench.evaluation.predict import load_for_store

    _, path, weights = tiny_run
    store, cpu = Store(path), torch.device("cpu")
    net = load_for_store(weights, store, cpu)
    plain = net.labels(store, 1, cpu)
    assert plain.dtype == np.uint8 and plain.shape == (48, 64)
    np.testing.assert_array_equal(net.labels(store, 1, cpu, crf=CRFParams(iterations=0)), plain)
    smoothed = net.labels(store, 1, cpu, crf=DEEPLAB_VOC)
    assert smoothed.dtype == np.uint8 and (smoothed != plain).any()


def test_cli_evaluate_crf_flags(tiny_run, caplog):
    import json

    from segbench import cli

    tmp, store, weights = tiny_run
    out = tmp / "cli_crf.json"
    args = ["evaluate", "--store", str(store), "--weights", str(weights), "--out", str(out)]
    assert cli.main([*args, "--crf", "--crf-iterations", "2", "--crf-params", '{"w1": 5}', "--crf-scale",
                     "none"]) == 0
    record = json.loads(out.read_text())["crf"]
    assert record["params"] == {**dataclasses.asdict(DEEPLAB_VOC), "w1": 5, "iterations": 2}
    assert record["scale"] == "none" and record["scaled"]["48x48"]["theta_alpha"] == 67  # --crf-scale none
    assert cli.main([*args, "--crf-iterations", "2"]) == 1
    assert "add --crf to apply it" in caplog.text
    assert cli.main([*args, "--crf", "--crf-params", '{"bi_w": 4}']) == 1
    assert "unknown CRF parameters ['bi_w']" in caplog.text
