import numpy as np
import pytest

from segbench.evaluation.metrics import confusion_matrix, scores


def test_confusion_matrix_rows_are_ground_truth_and_void_is_ignored():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    hist = confusion_matrix(gt, pred, 3)
    assert hist.dtype == np.int64
    np.testing.assert_array_equal(hist, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])


def test_confusion_matrix_ignores_any_ground_truth_outside_the_class_range():
    hist = confusion_matrix(np.array([-1, 3, 7, 1]), np.array([0, 0, 0, 1]), 3)
    assert hist.sum() == 1 and hist[1, 1] == 1


def test_confusion_matrix_rejects_bad_predictions_and_shapes():
    with pytest.raises(ValueError, match="predictions must lie in 0..2"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)


def test_scores_known_answer():
    # rows = ground truth; class 2 absent from gt and never predicted -> NaN, skipped by nanmean
    hist = np.array([[6, 2, 0], [1, 1, 0], [0, 0, 0]])
    s = scores(hist)
    assert s["pixel_acc"] == pytest.approx(7 / 10)
    assert s["mean_acc"] == pytest.approx((6 / 8 + 1 / 2) / 2)
    iu0, iu1 = 6 / (8 + 7 - 6), 1 / (2 + 3 - 1)
    assert s["mean_iu"] == pytest.approx((iu0 + iu1) / 2)
    assert s["fw_iu"] == pytest.approx(0.8 * iu0 + 0.2 * iu1)
    assert np.isnan(s["per_class_iu"][2])


def test_class_absent_from_ground_truth_but_predicted_counts_as_zero():
    hist = np.array([[3, 1], [0, 0]])  # class 1 never in gt, predicted once
    s = scores(hist)
    assert s["per_class_iu"] == [pytest.approx(0.75), 0.0]
    assert s["mean_iu"] == pytest.approx(0.375)
    assert s["mean_acc"] == pytest.approx(0.75)


def test_scores_restricted_to_present_classes():
    hist = np.array([[3, 1], [0, 0]])
    assert scores(hist, classes=[0])["mean_iu"] == pytest.approx(0.75)


def test_dataset_level_histogram_differs_from_per_image_average():
    a = confusion_matrix(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]), 2)
    b = confusion_matrix(np.array([1]), np.array([1]), 2)
    pooled = scores(a + b)["mean_iu"]
    per_image = np.nanmean([scores(a)["mean_iu"], scores(b)["mean_iu"]])
    assert pooled == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert per_image != pytest.approx(pooled)


def test_means_over_classes_present_in_the_ground_truth():
    """SIFT Flow's protocol (FCN-REFERENCE d): class 2 absent and never predicted (NaN either way), class 3
    absent but predicted (IU 0, counted by plain nanmean, left out over the present classes)."""
    hist = np.array([[5, 1, 0, 2], [1, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    iu0, iu1 = 5 / (8 + 6 - 5), 3 / (4 + 4 - 3)
    plain = scores(hist)
    assert np.isnan(plain["per_class_iu"][2]) and plain["per_class_iu"][3] == 0.0
    assert plain["mean_iu"] == pytest.approx((iu0 + iu1 + 0.0) / 3)
    assert plain["mean_acc"] == pytest.approx((5 / 8 + 3 / 4) / 2)  # 0/0 accuracies of classes 2, 3 skipped
    present = np.flatnonzero(hist.sum(1))  # what a store's eval_classes holds
    assert present.tolist() == [0, 1]
    s = scores(hist, classes=present)
    assert s["mean_iu"] == pytest.approx((iu0 + iu1) / 2)
    assert s["mean_acc"] == pytest.approx((5 / 8 + 3 / 4) / 2)
    assert s["pixel_acc"] == plain["pixel_acc"] == pytest.approx(8 / 12)
    assert s["fw_iu"] == plain["fw_iu"] == pytest.approx(8 / 12 * iu0 + 4 / 12 * iu1)
    assert s["per_class_iu"][:2] == plain["per_class_iu"][:2]


def test_geometric_accuracy_is_the_pixel_accuracy_of_the_3_class_head():
    gt = np.array([[0, 0, 0, 255], [2, 2, 1, 1], [1, 1, 255, 255]])  # sky, horizontal, vertical; 255 void
    pred = np.array([[0, 0, 2, 1], [2, 1, 1, 1], [1, 0, 2, 0]])
    hist = confusion_matrix(gt, pred, 3)
    assert hist.sum() == 9
    assert scores(hist)["pixel_acc"] == pytest.approx(6 / 9)
