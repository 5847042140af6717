"""HHA encoding: conformance with the reference outputs, a synthetic scene with known gravity, validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench import hha
from segbench.hha import gravity_fit
from segbench.hha.boxsum import box_sums, box_sums_by_band, box_sums_exact_at
from segbench.hha.normals import fit_normals, plane_fit_terms, point_cloud

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOLDEN = SHARED / "golden" / "hha"
needs_golden = pytest.mark.skipif(not (GOLDEN / "golden.json").is_file(),
                                  reason=f"reference HHA data not found at {GOLDEN} (../shared beside the repo)")


def _load_case(case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    meta = json.loads((GOLDEN / "golden.json").read_text())["cases"][case]
    units = meta["depth_png_units_per_metre"]
    depth = np.asarray(Image.open(GOLDEN / f"{case}_depth.png"), dtype=np.float64) / units
    raw = np.asarray(Image.open(GOLDEN / f"{case}_rawdepth.png"), dtype=np.float64) / units
    return depth, raw, np.load(GOLDEN / f"{case}_camera.npy"), meta


GOLDEN_OUTPUTS = [("port_demo", "D_RD"), ("port_demo", "D_D"), ("rcnn_demo", "D_RD"), ("rcnn_demo", "D_D")]


@needs_golden
@pytest.mark.parametrize(("case", "variant"), GOLDEN_OUTPUTS)
def test_matches_reference_outputs(case, variant):
    depth, raw, camera, meta = _load_case(case)
    reference = np.asarray(Image.open(GOLDEN / meta["outputs"][variant]["png"]))
    out = hha.encode(depth, raw if variant == "D_RD" else depth, camera)
    assert out.dtype == np.uint8 and out.shape == reference.shape
    diff = np.abs(out.astype(np.int16) - reference)
    within_one = (diff <= 1).mean(axis=(0, 1))
    assert np.all(within_one >= 0.99), f"share within 1 grey level per channel: {within_one}"
    # The reference rounds with np.rint, as encode() does: disparity is a closed formula and must match.
    assert np.array_equal(out[..., 0], reference[..., 0])
    # Bit-exact sums at every window whose fit can be singular make the output identical to the reference
    # here; allow rounding-level differences (other CPUs or BLAS) to flip a rare value at a .5 boundary.
    exact = (diff == 0).mean(axis=(0, 1))
    assert np.all(exact >= 0.999), f"share of identical values per channel: {exact}"


@needs_golden
@pytest.mark.parametrize(("case", "variant"), GOLDEN_OUTPUTS)
def test_gravity_matches_reference(case, variant):
    depth, raw, camera, meta = _load_case(case)
    expected = np.array(meta["intermediates"][variant]["ydir"])
    found = hha.gravity(depth, raw if variant == "D_RD" else depth, camera)
    assert found.shape == (3,)
    angle = np.degrees(np.arccos(np.clip(found @ expected, -1, 1)))
    assert angle < 1e-3


@needs_golden
def test_no_missing_depth_reproduces_the_matlab_output():
    depth, _, camera, meta = _load_case("port_demo")
    matlab = np.asarray(Image.open(GOLDEN / meta["matlab_reference"]["png"]))
    assert np.array_equal(hha.encode(depth, depth, camera), matlab)


def _tilted_room(*, pitch_deg: float, roll_deg: float, shape=(240, 320)):
    """Ray-cast depth of a room seen by a tilted camera: floor 1.3 m below it, walls, a box on the floor.

    Returns (depth_m, camera, gravity in camera coordinates, label map: 1 floor, 2 wall, 3 box top).
    """
    h, w = shape
    camera = np.array([[260.0, 0.0, w / 2 + 0.3], [0.0, 260.0, h / 2 - 0.7], [0.0, 0.0, 1.0]])
    p, r = np.radians(pitch_deg), np.radians(roll_deg)
    pitch = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])  # looks down
    roll = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    world_to_camera = roll @ pitch  # camera = R world; world y points down (gravity)
    u, v = np.meshgrid(np.arange(1, w + 1), np.arange(1, h + 1))
    rays_cam = np.stack([(u - camera[0, 2]) / camera[0, 0], (v - camera[1, 2]) / camera[1, 1], np.ones(u.shape)])
    rays = np.einsum("ji,jhw->ihw", world_to_camera, rays_cam)  # world direction of each ray, z_cam = 1
    with np.errstate(divide="ignore", invalid="ignore"):
        hits = {  # surface label: ray parameter t (= camera depth, since z_cam = 1)
            1: np.where(rays[1] > 0, 1.3 / rays[1], np.inf),  # floor y = 1.3
            4: np.where(rays[1] < 0, -1.5 / rays[1], np.inf),  # ceiling y = -1.5
            2: np.where(rays[2] > 0, 4.0 / rays[2], np.inf),  # back wall z = 4
            5: np.where(rays[0] < 0, -1.8 / rays[0], np.inf),  # left wall x = -1.8
            6: np.where(rays[0] > 0, 2.2 / rays[0], np.inf),  # right wall x = 2.2
        }
        # Box top: y = 0.8 over x in [0.3, 1.1], z in [2.2, 3.0].
        t_top = np.where(rays[1] > 0, 0.8 / rays[1], np.inf)
        x_top, z_top = t_top * rays[0], t_top * rays[2]
        hits[3] = np.where((x_top > 0.3) & (x_top < 1.1) & (z_top > 2.2) & (z_top < 3.0), t_top, np.inf)
    labels = np.array(list(hits))
    times = np.stack([hits[k] for k in labels])
    depth = times.min(axis=0)
    label = labels[times.argmin(axis=0)]
    label = np.where(np.isin(label, (2, 5, 6)), 2, label)
    return depth, camera, world_to_camera @ np.array([0.0, 1.0, 0.0]), label


def _interior(mask: np.ndarray, margin: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_erosion(mask, iterations=margin)


def test_synthetic_room_recovers_gravity_and_angles():
    depth, camera, true_down, label = _tilted_room(pitch_deg=14.0, roll_deg=5.0)
    raw = depth.copy()
    raw[100:115, 40:55] = 0.0  # a raw-depth hole larger than a 7 x 7 window
    raw[20:24, 200:260] = 0.0
    raw[np.random.default_rng(0).random(raw.shape) < 0.05] = 0.0  # scattered dropouts

    found = hha.gravity(depth, raw, camera)
    assert np.degrees(np.arccos(np.clip(found @ true_down, -1, 1))) < 1.0

    out = hha.encode(depth, raw, camera)
    angle = out[..., 2].astype(int)
    hole_free = _interior(raw > 0, 1) | _interior(raw == 0, 4)
    floor = _interior(label == 1, 6) & hole_free
    walls = _interior(label == 2, 6) & hole_free
    box_top = _interior(label == 3, 6) & hole_free
    assert floor.sum() > 1000 and walls.sum() > 1000 and box_top.sum() > 50
    assert np.median(np.abs(angle[floor] - 38)) <= 1 and np.mean(np.abs(angle[floor] - 38) <= 3) > 0.95
    assert np.median(np.abs(angle[walls] - 128)) <= 1 and np.mean(np.abs(angle[walls] - 128) <= 3) > 0.95
    assert np.median(np.abs(angle[box_top] - 38)) <= 1
    # No valid raw depth in the 7 x 7 window: undefined normal, angle 180 -> 218.
    assert angle[107, 47] == 218
    # Height is measured from the lowest point (the floor, 130 cm below the camera); the box top is 50 cm up.
    assert np.median(out[..., 1][floor]) <= 2
    assert abs(np.median(out[..., 1][box_top].astype(int)) - 50) <= 2
    # Disparity 310 / max(Z, 1 m), from the filled depth even inside raw holes.
    expected = np.minimum(np.rint(310 / np.maximum(depth, 1.0)), 255)
    assert np.array_equal(out[..., 0], expected.astype(np.uint8))


def test_exact_box_sums_follow_row_major_order():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((3, 20, 25)) * 10.0 ** rng.uniform(-6, 6, (3, 20, 25))
    valid = rng.random((20, 25)) < 0.1
    values *= valid
    rows, cols = np.nonzero(np.ones((20, 25), bool))
    exact = box_sums_exact_at(values, valid, rows, cols, radius=3, max_count=49)
    padded = np.pad(values, ((0, 0), (3, 3), (3, 3)))
    expected = np.zeros_like(values)
    for dy in range(7):
        for dx in range(7):
            expected += padded[:, dy:dy + 20, dx:dx + 25]
    assert np.array_equal(exact, expected.reshape(3, -1))
    fast, = box_sums(values, radii=(3,))
    np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-9 * np.abs(values).max())


def _shifted_sums(values: np.ndarray, radius: int) -> np.ndarray:
    """Zero-padded box sums as the reference adds them: the shifted copies in row-major window order."""
    _, h, w = values.shape
    size = 2 * radius + 1
    padded = np.pad(values, ((0, 0), (radius, radius), (radius, radius)))
    out = np.zeros_like(values)
    for dy in range(size):
        for dx in range(size):
            out += padded[:, dy:dy + h, dx:dx + w]
    return out


@pytest.mark.parametrize(("shape", "radii"), [((2, 23, 31), (3, 10)), ((1, 5, 4), (0, 3)), ((3, 40, 9), (2,))])
@pytest.mark.parametrize("band_rows", [1, 7, 16, 64])
def test_band_box_sums_match_shifted_sums(shape, radii, band_rows):
    rng = np.random.default_rng(band_rows)
    values = rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3, shape)
    counts = (rng.random(shape) < 0.3).astype(np.int32)
    got = {r: np.full(shape, np.nan) for r in radii}
    got_counts = {r: np.full(shape, -1) for r in radii}
    for top, bottom, band in box_sums_by_band(values, radii=radii, band_rows=band_rows):
        assert band.shape == (shape[0], len(radii), bottom - top, shape[2])
        for k, r in enumerate(radii):
            got[r][:, top:bottom] = band[:, k]
    for top, bottom, band in box_sums_by_band(counts, radii=radii, band_rows=band_rows):
        assert band.dtype == np.int32
        for k, r in enumerate(radii):
            got_counts[r][:, top:bottom] = band[:, k]
    for r, whole, whole_counts in zip(radii, box_sums(values, radii=radii), box_sums(counts, radii=radii)):
        expected = _shifted_sums(values, r)
        np.testing.assert_allclose(got[r], expected, rtol=0, atol=1e-12 * np.abs(values).sum())
        assert np.array_equal(whole, got[r])  # the values do not depend on the band height
        # Integer sums are exact.
        assert np.array_equal(got_counts[r], _shifted_sums(counts, r))
        assert np.array_equal(whole_counts, got_counts[r])


def test_exact_box_sums_at_borders_and_subsets():
    rng = np.random.default_rng(2)
    h, w, radius = 17, 12, 4
    valid = rng.random((h, w)) < 0.15
    values = rng.standard_normal((2, h, w)) * 10.0 ** rng.uniform(-8, 8, (2, h, w)) * valid
    expected = _shifted_sums(values, radius)
    rows = np.array([0, 0, h - 1, 5, 16, 3, 3])
    cols = np.array([0, w - 1, 0, 6, 11, 2, 2])  # corners, the middle, a repeated pixel
    exact = box_sums_exact_at(values, valid, rows, cols, radius=radius, max_count=81)
    assert np.array_equal(exact, expected[:, rows, cols])
    assert box_sums_exact_at(values, valid, rows[:0], cols[:0], radius=radius, max_count=81).shape == (2, 0)
    counts = _shifted_sums(valid[None].astype(np.int32), radius)[0]
    with pytest.raises(ValueError, match="max_count"):
        box_sums_exact_at(values, valid, rows, cols, radius=radius, max_count=int(counts[rows, cols].max()) - 1)


def _reference_normals(terms: np.ndarray, valid: np.ndarray, radius: int) -> np.ndarray:
    """The reference's computeNormalsSquareSupport from exact sums: adj(AtA) . Atb, normalised, in its order."""
    a0, a1, a2, a3, a4, b0, b1, b2 = _shifted_sums(terms, radius)
    (a5,) = _shifted_sums(valid[None].astype(np.float64), radius)
    c0, c1, c2 = a3 * a5 - a4 * a4, -(a1 * a5) + a2 * a4, a1 * a4 - a2 * a3
    c3, c4, c5 = a0 * a5 - a2 * a2, a1 * a2 - a0 * a4, a0 * a3 - a1 * a1
    n = np.stack([(c0 * b0 + c1 * b1) + c2 * b2, (c1 * b0 + c3 * b1) + c4 * b2, (c2 * b0 + c4 * b1) + c5 * b2])
    with np.errstate(divide="ignore", invalid="ignore"):
        return n / np.sqrt((n[0] * n[0] + n[1] * n[1]) + n[2] * n[2])


def test_fit_normals_match_the_reference_fit():
    depth, camera, _, _ = _tilted_room(pitch_deg=14.0, roll_deg=5.0, shape=(60, 80))
    valid = np.random.default_rng(4).random(depth.shape) < 0.3  # many windows with few (or collinear) pixels
    valid[12:50, 20:65] = False  # a hole wider than 21 x 21 windows: empty and near-empty windows of both sizes
    z = depth * 100
    x, y = point_cloud(z, camera)
    terms = plane_fit_terms(x, y, z, valid)
    for radius, normals in zip((3, 10), fit_normals(terms, valid, radii=(3, 10))):
        expected = _reference_normals(terms, valid, radius)
        count = _shifted_sums(valid[None].astype(np.int32), radius)[0]
        # Empty windows (0/0) and singular fits (N = 0, e.g. one valid pixel) are NaN, as in the reference.
        assert np.isnan(normals[0][count == 0]).all()
        assert np.array_equal(np.isnan(normals), np.isnan(expected))
        near_singular = (count > 0) & (count <= 2 * radius + 1)
        assert near_singular.sum() > 20
        # Bit-exact where the fit can be singular; elsewhere within rounding of the sums.
        assert np.array_equal(normals[:, near_singular], expected[:, near_singular], equal_nan=True)
        rest = count > 2 * radius + 1
        np.testing.assert_allclose(normals[:, rest], expected[:, rest], rtol=0, atol=1e-9)


def test_gravity_reclassifies_only_what_can_change(monkeypatch):
    """Skipping normals far from both thresholds gives the classes, hence the gravity, of full passes."""
    depth, camera, true_down, _ = _tilted_room(pitch_deg=20.0, roll_deg=8.0, shape=(90, 120))
    raw = np.where(np.random.default_rng(5).random(depth.shape) < 0.2, 0.0, depth)
    frame_normals = {}
    for margin in (0.0, gravity_fit.RECLASSIFY_MARGIN, 10.0):  # every pass full; default; never a full pass again
        monkeypatch.setattr(gravity_fit, "RECLASSIFY_MARGIN", margin)
        frame_normals[margin] = hha.gravity(depth, raw, camera)
    results = list(frame_normals.values())
    assert all(np.array_equal(results[0], r) for r in results[1:])
    assert np.degrees(np.arccos(np.clip(results[0] @ true_down, -1, 1))) < 1.0


def test_crop_camera_matches_gupta_crop():
    cropped = hha.crop_camera(hha.NYU_COLOR_CAMERA)
    np.testing.assert_allclose(cropped[:2, 2], [285.58244941119034, 208.73616633400465], rtol=1e-15)
    np.testing.assert_array_equal(cropped[:, :2], hha.NYU_COLOR_CAMERA[:, :2])


@pytest.mark.parametrize(("depth", "raw", "camera", "message"), [
    (np.ones((8, 9)), np.ones((8, 10)), hha.NYU_COLOR_CAMERA, "one shape"),
    (np.ones((8, 9, 1)), np.ones((8, 9, 1)), hha.NYU_COLOR_CAMERA, "2-D"),
    (np.full((8, 9), np.nan), np.ones((8, 9)), hha.NYU_COLOR_CAMERA, "non-finite"),
    (np.ones((8, 9)), -np.ones((8, 9)), hha.NYU_COLOR_CAMERA, "negative"),
    (np.full((8, 9), 2500.0), np.ones((8, 9)), hha.NYU_COLOR_CAMERA, "metres"),
    (np.ones((8, 9)), np.ones((8, 9)), np.eye(3)[:2], "3x3"),
    (np.ones((8, 9)), np.ones((8, 9)), np.diag([-500.0, 500.0, 1.0]), "positive"),
])
def test_invalid_inputs_are_rejected(depth, raw, camera, message):
    with pytest.raises(ValueError, match=message):
        hha.encode(depth, raw, camera)


def test_encode_many_matches_encode_in_order(tmp_path):
    frames = [_tilted_room(pitch_deg=p, roll_deg=0.0, shape=(60, 80))[:2] for p in (5.0, 10.0, 20.0)]
    depths = [d for d, _ in frames]
    camera = frames[0][1]
    expected = [hha.encode(d, d, camera) for d in depths]
    for threads in (1, 2):
        got = hha.encode_many(depths, depths, camera, threads=threads, progress=False)
        assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    with pytest.raises(ValueError, match="raw depth"):
        hha.encode_many(depths, depths[:2], camera)

    path = hha.write_png(tmp_path / "hha" / "img_5001.png", expected[0])
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), expected[0])
    assert [p.name for p in path.parent.iterdir()] == ["img_5001.png"]
