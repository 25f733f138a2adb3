#!/usr/bin/python3
"""A small CT series for the service unit tests, and what the built-in model
ct-bone-body must make of it.

    ct_series.py DIR SLICES ROWS COLS [HALF]

writes SLICES files into DIR (tests/tools/gen_series.py's phantom, with the
model's threshold edges written into the first row of every slice) and,
beside each file F, F.labels: the label of each pixel (row-major, one byte
each) computed from F's own pixel data read back with pydicom:
1 where 226 <= HU <= 3071, else 2 where HU > -500, else 0
(inference/models/ct-bone-body.yaml). With HALF, slice HALF (from 0) is
stored with Rescale Slope 0.5, and its second row starts with HU values
half a unit beside the thresholds (HALF_EDGES): values no int16 holds.
Prints the file paths, one a line.
"""
import os
import sys

import numpy as np
import pydicom

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from gen_series import make_ct_series, phantom_slice  # noqa: E402

EDGES = [225, 226, 3071, 3072, -500, -499, -1024, 40]
HALF_EDGES = [225.5, 3071.5, -499.5, -500.5]


def halve_slope(path):
    """Rewrites PATH with Rescale Slope 0.5 (the same HU), then puts
    HALF_EDGES at the start of its second row."""
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    hu[1, :len(HALF_EDGES)] = HALF_EDGES
    stored = np.rint((hu - float(ds.RescaleIntercept)) / 0.5)
    dtype = np.int16 if ds.PixelRepresentation == 1 else np.uint16
    info = np.iinfo(dtype)
    if stored.min() < info.min or stored.max() > info.max:
        raise ValueError("slice values do not fit %s with slope 0.5" % dtype.__name__)
    ds.RescaleSlope = "0.5"
    ds.PixelData = stored.astype(dtype).tobytes()
    ds.save_as(path, write_like_original=False)


def pixels(z, rows, cols):
    hu = phantom_slice(z, rows, cols, seed=3).astype(np.int16)
    hu[0, :len(EDGES)] = EDGES
    return hu


def main():
    out, slices, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    paths = make_ct_series(out, slices, rows=rows, cols=cols, pixel_fn=pixels)
    if len(sys.argv) > 5:
        halve_slope(paths[int(sys.argv[5])])
    for p in paths:
        ds = pydicom.dcmread(p)
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + \
            float(ds.RescaleIntercept)
        labels = np.zeros(hu.shape, dtype=np.uint8)
        labels[hu > -500] = 2
        labels[(hu >= 226) & (hu <= 3071)] = 1
        with open(p + ".labels", "wb") as f:
            f.write(labels.tobytes())
        print(p)


if __name__ == "__main__":
    main()
