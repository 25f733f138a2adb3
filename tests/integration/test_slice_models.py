#!/usr/bin/python3
"""Integration tests of slice models (input.kind slices): a CT series sent
with storescu (shuffled) is run slice by slice, each slice with its
neighbours as extra channels (2.5-D), through TorchScript models made here
with python3-torch; a segmentation comes back to DCMTK's storescp (the PACS)
as a SEG and an SR, a classification as an SR of findings. Every expected
label and probability is computed again here from the source pixels.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_slice_models
"""

import json
import os
import random
import subprocess
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_inference import hu_of, phantom  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402
from test_results import SEG_CLASS, SR_CLASS, TOOLS, dciodvfy_errors  # noqa: E402

import pydicom  # noqa: E402

# Label 1 where the mean of a slice and its two neighbours is above 100 HU
# (channel 0 is a constant 100: argmax keeps the background on a tie);
# and a score per slice from its mean HU.
MODELS_SOURCE = '''
import sys
import torch


class NeighbourMean(torch.nn.Module):
    def forward(self, x):
        m = x.mean(dim=1, keepdim=True)
        return torch.cat([torch.full_like(m, 100.0), m], 1)


class SliceScore(torch.nn.Module):
    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([(m + 300) / 50, (m + 600) / 50], 1)


torch.jit.script(NeighbourMean()).save(sys.argv[1] + "/neighbour_mean.pt")
torch.jit.script(SliceScore()).save(sys.argv[1] + "/slice_score.pt")
'''

HEAD = """algorithm:
  name: Slice test model
  version: "1.0"
  family: {value: "123110", scheme: DCM, meaning: Artificial Intelligence}
input: {modality: CT, kind: slices, batch: %d, context: %d}
"""

SEGMENTATION = HEAD + """output:
  channels: 2
  decision: argmax
  labels:
    1:
      name: Dense
      category: {value: "85756007", scheme: SCT, meaning: Tissue}
      type: {value: "85756007", scheme: SCT, meaning: Tissue}
      color: [255, 0, 0]
"""

CLASSIFICATION = HEAD + """output:
  kind: classification
  channels: 2
  activation: sigmoid
  aggregate: mean
  classes:
    1: {name: Dense, finding: {value: "DENSE", scheme: 99AINODE, meaning: Dense slice}}
    2: {name: Any, finding: {value: "ANY", scheme: 99AINODE, meaning: Any slice},
        threshold: 0.9}
"""


def alternating(z, rows, cols):
    """A dense disc in air, large on even slices and small on odd ones: the
    ring between them is dense for a model that sees a slice's neighbours
    (two of three slices), air for one that sees the slice alone."""
    hu = np.full((rows, cols), -1000, dtype=np.int16)
    yy, xx = np.mgrid[0:rows, 0:cols]
    radius = 12 if z % 2 == 0 else 5
    hu[(yy - rows / 2) ** 2 + (xx - cols / 2) ** 2 < radius ** 2] = 1200
    return hu


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


class SliceModelTest(NodeTestCase):
    def run_model(self, manifest, model_file, kinds, slices=10, pixel_fn=phantom):
        """Sends a shuffled phantom series to a node running the model;
        returns (files in position order, the job, the PACS' files)."""
        # TorchScript compiles from source files, not from -c.
        src = os.path.join(self.workdir, "slice_models.py")
        with open(src, "w") as f:
            f.write(MODELS_SOURCE)
        subprocess.run(["/usr/bin/python3", src, self.workdir], check=True, capture_output=True)
        mpath = os.path.join(self.workdir, "slices.yaml")
        with open(mpath, "w") as f:
            f.write(manifest)
        files = make_ct_series(os.path.join(self.workdir, "in"), slices, rows=40, cols=48,
                               pixel_fn=pixel_fn)
        order = list(files)
        random.Random(3).shuffle(order)
        with harness.StoreSCP(os.path.join(self.workdir, "pacs")) as pacs:
            n = self.node(sections={
                "destinations": {"pacs": {"ae_title": "STORESCP", "host": "127.0.0.1",
                                          "port": pacs.port, "retry_initial_seconds": 1}},
                "models": {"m": {"file": os.path.join(self.workdir, model_file),
                                 "manifest": mpath, "threads": 1}},
                "rules": [{"name": "ct", "match": {"Modality": "CT"}, "run": ["m"],
                           "send_results_to": ["pacs"]}]}, stable_seconds=1)
            n.start()
            harness.storescu(n.port, order, ae_called=n.ae)

            def ended():
                st = n.status()
                jobs = [j for j in st["jobs"] if j["state"] in ("done", "failed")]
                if jobs and jobs[0]["state"] == "failed":
                    return st
                sent = [i for i in st["outbox"] if i["state"] == "sent"]
                return st if jobs and len(sent) == len(kinds) else None
            st = harness.wait_until(ended, 120, 0.2, "the results to be sent")
            self.assertEqual(n.stop(), 0)
            received = harness.list_files(pacs.out_dir)
        job = st["jobs"][0]
        self.assertEqual(job["state"], "done", job)
        self.assertEqual(sorted(i["kind"] for i in st["outbox"]), sorted(kinds))
        by_z = sorted(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
        for p in received:
            self.assertEqual(dciodvfy_errors(p), [])
        return by_z, job, received

    def test_a_slice_model_sees_each_slice_with_its_neighbours(self):
        by_z, job, received = self.run_model(SEGMENTATION % (4, 1), "neighbour_mean.pt",
                                             ["seg", "sr"], pixel_fn=alternating)
        hu = np.stack([hu_of(f) for f in by_z])
        # Neighbours of the end slices are the end slices themselves.
        padded = np.concatenate([hu[:1], hu, hu[-1:]])
        mean3 = (padded[:-2] + padded[1:-1] + padded[2:]) / 3
        labels = (mean3 > 100).astype(np.uint8)
        # Context matters: the labels differ from those of each slice alone.
        self.assertNotEqual(int((labels != (hu > 100)).sum()), 0)
        seg = [p for p in received if str(pydicom.dcmread(p).SOPClassUID) == SEG_CLASS]
        self.assertEqual(len(seg), 1)
        raw = os.path.join(self.workdir, "expected.raw")
        labels.tofile(raw)
        nz, ny, nx = labels.shape
        r = subprocess.run(["/usr/bin/python3", os.path.join(TOOLS, "verify_seg.py"), seg[0],
                            raw, str(nx), str(ny), str(nz)] + by_z,
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(job["labels"]["1"]["voxels"], int(labels.sum()))

    def test_a_slice_classifier_scores_each_slice_and_the_series(self):
        by_z, job, received = self.run_model(CLASSIFICATION % (3, 0), "slice_score.pt", ["sr"])
        means = np.array([hu_of(f).astype(np.float64).mean() for f in by_z])
        per_slice = sigmoid(np.stack([(means + 300) / 50, (means + 600) / 50], 1))
        with open(job["result"]) as f:
            doc = json.load(f)
        uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in by_z]
        got = {i["sop_instance_uid"]: i["probabilities"] for i in doc["images"]}
        self.assertEqual(set(got), set(uids))
        for uid, want in zip(uids, per_slice):
            np.testing.assert_allclose(got[uid], want, atol=1e-4)
        series = per_slice.mean(axis=0)
        for c, p, t in (("1", series[0], 0.5), ("2", series[1], 0.9)):
            self.assertAlmostEqual(job["findings"][c]["probability"], p, delta=1e-4)
            self.assertEqual(job["findings"][c]["present"], bool(p >= t))
        self.assertEqual(len(received), 1)
        self.assertEqual(str(pydicom.dcmread(received[0]).SOPClassUID), SR_CLASS)


if __name__ == "__main__":
    unittest.main()
