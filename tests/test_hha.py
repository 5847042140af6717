"""HHA encoding: conformance with the reference outputs, a synthetic scene with known gravity, validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench import hha
from segbench.hha.boxsum import box_sums, box_sums_exact_at

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
