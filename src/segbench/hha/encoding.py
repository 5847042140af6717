"""HHA encoding of one depth frame (saveHHA / processDepthImage of Gupta et al., ECCV 2014).

Channels, in PNG RGB order:
- disparity = 31000 / max(Z_cm, 100), saturating at 255 for Z <= 1.2157 m;
- height above the lowest point (or above an assumed floor 130 cm below the camera), in cm;
- angle between the 7 x 7 surface normal and gravity, in degrees + 38 (floor 38, walls 128,
  ceiling and undefined normals 218).

The filled depth gives disparity, height and the point cloud; the raw depth only decides which pixels
enter the normal fits (raw == 0 means missing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segbench.hha.camera import check_camera, check_depths
from segbench.hha.gravity_fit import estimate_gravity, rotation_to
from segbench.hha.normals import fit_normals, orient_normals, plane_fit_terms, point_cloud

ANGLE_RADIUS = 3  # 7 x 7 windows: the normals of the angle channel
GRAVITY_RADIUS = 10  # 21 x 21 windows: the normals that feed the gravity estimate only
ASSUMED_FLOOR_CM = -130.0  # used when no point is more than 90 cm below the camera


@dataclass(frozen=True)
class HHAGeometry:
    """The float intermediates of one HHA encoding, before rounding to uint8.

    normals: H x W x 3 unit 7 x 7 normals (NaN where undefined); gravity: (3,); rotation: 3 x 3;
    height_cm, angle_deg, disparity: H x W float64.
    """

    normals: np.ndarray
    gravity: np.ndarray
    rotation: np.ndarray
    height_cm: np.ndarray
    angle_deg: np.ndarray
    disparity: np.ndarray


class _Frame:
    """Validated inputs and the two point clouds the reference builds from them."""

    def __init__(self, depth_m, raw_depth_m, camera_matrix):
        self.camera = check_camera(camera_matrix)
        depth, raw = check_depths(depth_m, raw_depth_m)
        # processDepthImage gets D*100 (cm); computeNormalsSquareSupport gets that /100 and multiplies by
        # 100 again, which is not always the same float: keep both, as the reference does.
        self.z_cm = depth * 100
        self.z_fit = (self.z_cm / 100) * 100
        # Pixels with zero filled depth carry no point either (the reference would sum infinities there).
        self.valid = (raw != 0) & (self.z_fit != 0)
        self.x_fit, self.y_fit = point_cloud(self.z_fit, self.camera)
        self.terms = plane_fit_terms(self.x_fit, self.y_fit, self.z_fit, self.valid)


def gravity(depth_m: np.ndarray, raw_depth_m: np.ndarray, camera_matrix: np.ndarray) -> np.ndarray:
    """Gravity direction of a frame: unit (3,) vector in camera coordinates (x right, y down, z forward).

    depth_m: H x W filled depth in metres; raw_depth_m: H x W raw depth in metres, 0 = missing;
    camera_matrix: 3 x 3 colour-camera K of this (possibly cropped) frame.
    """
    frame = _Frame(depth_m, raw_depth_m, camera_matrix)
    (gravity_normals,) = fit_normals(frame.terms, frame.valid, radii=(GRAVITY_RADIUS,))
    return estimate_gravity(gravity_normals)


def geometry(depth_m: np.ndarray, raw_depth_m: np.ndarray, camera_matrix: np.ndarray) -> HHAGeometry:
    """All float intermediates of the HHA encoding (see ``encode`` for the arguments)."""
    frame = _Frame(depth_m, raw_depth_m, camera_matrix)
    normals, gravity_normals = fit_normals(frame.terms, frame.valid, radii=(ANGLE_RADIUS, GRAVITY_RADIUS))
    down = estimate_gravity(gravity_normals)
    orient_normals(normals, frame.x_fit, frame.y_fit, frame.z_fit)

    rotation = rotation_to(down)
    if np.array_equal(frame.z_cm, frame.z_fit):
        x_cm, y_cm = frame.x_fit, frame.y_fit
    else:
        x_cm, y_cm = point_cloud(frame.z_cm, frame.camera)
    # Height is minus the y of R^T P, i.e. -(R[:, 1] . P), summed in the reference's order.
    height = -((rotation[0, 1] * x_cm + rotation[1, 1] * y_cm) + rotation[2, 1] * frame.z_cm)
    lowest = height.min()
    height -= lowest if lowest <= -90 else ASSUMED_FLOOR_CM

    cos_angle = (normals[0] * down[0] + normals[1] * down[1]) + normals[2] * down[2]
    # np.clip keeps NaN; NaN normals get 180 degrees, as MATLAB's max(-1, NaN) = -1 does.
    angle = np.degrees(np.arccos(np.clip(cos_angle, -1.0, 1.0)))
    angle[np.isnan(angle)] = 180.0

    disparity = 31000 / np.maximum(frame.z_cm, 100)
    return HHAGeometry(normals=normals.transpose(1, 2, 0), gravity=down, rotation=rotation,
                       height_cm=height, angle_deg=angle, disparity=disparity)


def to_uint8(geom: HHAGeometry) -> np.ndarray:
    """H x W x 3 uint8 (disparity, height, angle + 38), rounded half to even and saturated at 0 and 255.

    The reference port rounds with np.rint; MATLAB's uint8() rounds exact .5 values away from zero, so
    MATLAB outputs are 1 level higher at such pixels (e.g. disparity of a depth of exactly 4.96 m).
    """
    out = np.empty(geom.disparity.shape + (3,))
    out[..., 0] = geom.disparity
    out[..., 1] = geom.height_cm
    out[..., 2] = (geom.angle_deg + 128) - 90
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def encode(depth_m: np.ndarray, raw_depth_m: np.ndarray, camera_matrix: np.ndarray) -> np.ndarray:
    """HHA image of one depth frame, conformant with the reference saveHHA.

    depth_m: H x W filled depth in metres (float, finite, >= 0); raw_depth_m: H x W raw sensor depth in
    metres, 0 where missing (pass depth_m again for "nothing missing"); camera_matrix: 3 x 3 K of the
    frame, e.g. ``crop_camera(NYU_COLOR_CAMERA)`` for Gupta's 425 x 560 NYUDv2 crop.
    Returns H x W x 3 uint8, channels (disparity, height, angle) = PNG (R, G, B).
    """
    return to_uint8(geometry(depth_m, raw_depth_m, camera_matrix))
