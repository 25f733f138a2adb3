#!/usr/bin/python3
"""A small CT series for the service unit tests, and what the built-in model
ct-bone-body must make of it.

    ct_series.py DIR SLICES ROWS COLS

writes SLICES files into DIR (tests/tools/gen_series.py's phantom, with the
model's threshold edges written into the first row of every slice) and,
beside each file F, F.labels: the label of each pixel (row-major, one byte
each) computed from F's own pixel data read back with pydicom:
1 where 226 <= HU <= 3071, else 2 where HU > -500, else 0
(inference/models/ct-bone-body.yaml). Prints the file paths, one a line.
"""
import os
import sys

import numpy as np
import pydicom

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from gen_series import make_ct_series, phantom_slice  # noqa: E402

EDGES = [225, 226, 3071, 3072, -500, -499, -1024, 40]


def pixels(z, rows, cols):
    hu = phantom_slice(z, rows, cols, seed=3).astype(np.int16)
    hu[0, :len(EDGES)] = EDGES
    return hu


def main():
    out, slices, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    paths = make_ct_series(out, slices, rows=rows, cols=cols, pixel_fn=pixels)
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
