"""Atomic writes: a failed write leaves the previous file (or none) and no temporary file."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench import hha
from segbench.data import download
from segbench.infra import atomic


def test_replacing_keeps_the_old_file_and_no_temp_file_on_error(tmp_path):
    path = atomic.write_text(tmp_path / "out.txt", "old\n")
    with pytest.raises(OSError, match="disk full"):
        with atomic.replacing(path) as tmp:
            tmp.write_text("half of the n")
            raise OSError(28, "disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"] and path.read_text() == "old\n"


def test_durable_replacing_writes_the_file(tmp_path):
    with atomic.replacing(tmp_path / "sub" / "ckpt.pt", durable=True) as tmp:
        tmp.write_bytes(b"state")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["ckpt.pt"]


def test_a_failed_hha_png_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(self, fp, format=None, **params):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        hha.write_png(tmp_path / "hha" / "img_5001.png", np.zeros((4, 5, 3), np.uint8))
    assert list((tmp_path / "hha").iterdir()) == []


def test_a_leftover_temp_file_of_a_killed_write_is_replaced(tmp_path):
    (tmp_path / "img.png.tmp").write_bytes(b"left by a killed process")
    hha.write_png(tmp_path / "img.png", np.full((4, 5, 3), 7, np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["img.png"]
    assert np.asarray(Image.open(tmp_path / "img.png")).tolist() == np.full((4, 5, 3), 7).tolist()


def test_download_sidecar_is_written_atomically(tmp_path, monkeypatch):
    data = tmp_path / "data.bin"
    data.write_bytes(b"payload")

    def broken_write_text(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[:5])
        raise OSError(28, "disk full")

    monkeypatch.setattr(Path, "write_text", broken_write_text)
    with pytest.raises(OSError, match="disk full"):
        download.fetch("http://unused.invalid/data.bin", data, None, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]
