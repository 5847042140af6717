"""HHA depth encoding (horizontal disparity, height above ground, angle with gravity), Gupta et al. 2014.

A float64 re-implementation of the reference saveHHA / Depth2HHA-python port at a fraction of its run
time. On the reference's test frames its disparity channel is identical to the port's and at least 99% of
the pixels of every channel lie within one grey level (the golden tests of ``tests/test_hha.py``).
"""

from segbench.hha.batch import encode_many, write_png
from segbench.hha.camera import NYU_COLOR_CAMERA, crop_camera
from segbench.hha.encoding import HHAGeometry, encode, geometry, gravity

__all__ = ["NYU_COLOR_CAMERA", "HHAGeometry", "crop_camera", "encode", "encode_many", "geometry", "gravity",
           "write_png"]
