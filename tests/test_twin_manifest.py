"""Every synthetic twin writes each file atomically and ``manifest.json`` last, the completion marker the workflow
waits for (the download step writes the same file last)."""

import json
import os

import pytest

from segbench.data import MANIFEST
from segbench.data.synthetic import nyud as synth_nyud
from segbench.data.synthetic import siftflow as synth_siftflow
from segbench.data.synthetic import voc as synth_voc
from segbench.infra import atomic

TWINS = {
    "voc": lambda out: synth_voc.write_twin(out, image_size=32, n_sbd_train=2, n_sbd_val=1, n_voc_train=1,
                                            n_voc_val=2, n_overlap=1, progress=False),
    "nyud": lambda out: synth_nyud.write_twin(out, n_images=2, frame_scale=0.25),
    "siftflow": lambda out: synth_siftflow.write_twin(out, n_train=3, n_test=1),
}


@pytest.mark.parametrize("dataset", sorted(TWINS))
def test_twin_writes_every_file_atomically_and_the_manifest_last(dataset, tmp_path, monkeypatch):
    renamed = []
    replace = os.replace

    def recording_replace(src, dst):
        replace(src, dst)
        renamed.append(os.path.relpath(dst, tmp_path))

    monkeypatch.setattr(atomic.os, "replace", recording_replace)
    TWINS[dataset](tmp_path)
    written = sorted(os.path.relpath(os.path.join(d, f), tmp_path) for d, _, files in os.walk(tmp_path) for f in files)
    assert renamed[-1] == MANIFEST
    assert sorted(renamed) == written  # nothing was written in place
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["dataset"] == dataset and manifest["synthetic"] is True
