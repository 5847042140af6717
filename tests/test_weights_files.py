"""Weights files are recognised before torch reads them: a web page saved in their place (a Google Drive download
without its confirmation step), an empty file or a truncated one is refused with what it is and how to get the
real file, never with torch's advice to load it with weights_only=False."""

import io
import zipfile

import pytest
import torch

from segbench import models
from segbench.errors import SegbenchError
from segbench.evaluation.released import RELEASED, convert_released
from segbench.pretraining.imagenet import CAFFE, convert_caffe
from segbench.pretraining.standins import prune_classifier
from segbench.weights import WeightsFileError, describe_file, load_record, read_weights_file, save_model

DRIVE_PAGE = ("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
              "<p>fcn32s_from_caffe.pth (519M) is too large for Google to scan for viruses.</p>"
              '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
              '<input type="hidden" name="confirm" value="t"></form></body></html>\n')


def _torch_bytes(obj, *, legacy=False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


@pytest.fixture
def files(tmp_path):
    """One file of each kind, by name."""
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)}
    zipped, legacy = _torch_bytes(state), _torch_bytes(state, legacy=True)
    other_zip = io.BytesIO()
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "not weights")
    contents = {
        "page.pth": DRIVE_PAGE.encode(),
        "empty.pth": b"",
        "zip.pth": zipped,
        "legacy.pth": legacy,
        "truncated-zip.pth": zipped[:len(zipped) // 2],
        "truncated-legacy.pth": legacy[:len(legacy) // 2],
        "other.zip": other_zip.getvalue(),
        "text.pth": b"Not Found\n",
        "noise.pth": bytes(range(7, 64)),
    }
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_the_two_torch_save_formats_pass_and_read_back(files):
    for name in ("zip.pth", "legacy.pth"):
        assert describe_file(files / name) is None
        state = read_weights_file(files / name, fetch_hint="unused")
        assert torch.equal(state["w"], torch.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("name, what", [
    ("page.pth", f"an HTML page, {len(DRIVE_PAGE):,} bytes, starting '<!DOCTYPE html>', "
                 "titled 'Google Drive - Virus scan warning'"),
    ("empty.pth", "an empty file (0 bytes)"),
    ("truncated-zip.pth", "a truncated zip archive, "),
    ("other.zip", "a zip archive without PyTorch's data.pkl (1 member), "),
    ("text.pth", "a text file, 10 bytes, starting 'Not Found'"),
    ("noise.pth", "57 bytes of an unknown format, starting b'\\x07\\x08"),
])
def test_other_files_are_named_for_what_they_are(files, name, what):
    assert describe_file(files / name).startswith(what)
    with pytest.raises(WeightsFileError) as err:
        read_weights_file(files / name, fetch_hint="fetch it from https://example.org/w.pth")
    message = str(err.value)
    assert message.startswith(f"{files / name} is {what}") and message.endswith("fetch it from https://example.org/w.pth")
    assert "weights_only" not in message


def test_a_truncated_legacy_pickle_is_refused_without_the_unsafe_advice(files):
    assert describe_file(files / "truncated-legacy.pth") is None  # its start is intact: only torch can tell
    with pytest.raises(WeightsFileError, match=r"has torch.save's format but cannot be read as weights "
                                               r"\((EOFError|error|UnpicklingError)[^)]*\); it is probably "
                                               r"truncated or not a state dict: rerun step x") as err:
        read_weights_file(files / "truncated-legacy.pth", fetch_hint="rerun step x")
    assert "weights_only" not in str(err.value) and err.value.__cause__ is None


class Opaque:  # pickled by reference: a weights-only load refuses it
    pass


def test_a_pickle_of_arbitrary_objects_is_refused_naming_the_global(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(_torch_bytes({"model": Opaque()}))
    with pytest.raises(WeightsFileError, match=r"UnpicklingError: Unsupported global: GLOBAL test_weights_files.Opaque"
                       ) as err:
        read_weights_file(path, fetch_hint="x")
    assert "weights_only" not in str(err.value)


def test_missing_file_is_a_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth does not exist: run step y"):
        read_weights_file(tmp_path / "nowhere.pth", fetch_hint="run step y")


def test_load_record_refuses_a_page_and_says_which_step_writes_the_file(files):
    with pytest.raises(WeightsFileError, match=r"page.pth is an HTML page, .*: delete it and rerun the step that "
                                               r"writes it \(snakemake --cores all .*page.pth\)"):
        load_record(files / "page.pth")
    with pytest.raises(WeightsFileError, match="an empty file"):
        load_record(files / "empty.pth")
    with pytest.raises(WeightsFileError, match="a truncated zip archive"):
        load_record(files / "truncated-zip.pth")
    record = files / "model.pt"
    save_model(record, models.build("fcn32s_vgg16", 3, width=1 / 64), name="fcn32s_vgg16", num_classes=3,
               width=1 / 64)
    assert load_record(record)["name"] == "fcn32s_vgg16"  # a real record still loads


@pytest.mark.parametrize("name", ["page.pth", "empty.pth", "truncated-zip.pth"])
def test_convert_released_refuses_before_torch_reads_and_says_how_to_get_the_file(files, tmp_path, name):
    spec = RELEASED["fcn32s"]
    with pytest.raises(WeightsFileError) as err:
        convert_released("fcn32s", files / name, tmp_path / "out.pt")
    message = str(err.value)
    assert f"https://drive.google.com/uc?export=download&id={spec.drive_id}" in message and spec.md5 in message
    assert "virus-scan confirmation page" in message and "segbench released-model fcn32s" in message
    assert "weights_only" not in message and not (tmp_path / "out.pt").exists()


def test_caffe_weights_and_stand_ins_are_checked_too(files, tmp_path):
    spec = CAFFE["vgg16"]
    with pytest.raises(WeightsFileError, match=rf"an HTML page.*{spec.drive_id}.*segbench fetch-weights vgg16 "
                                               r"--source caffe"):
        convert_caffe("vgg16", files / "page.pth", tmp_path / "vgg16.pt")
    with pytest.raises(WeightsFileError, match=r"an empty file.*rerun the pretrain \(or fetch-weights\) step for "
                                               "resnet50"):
        prune_classifier(files / "empty.pth", tmp_path / "half.pt", backbone="resnet50_half", device="cpu")
    assert issubclass(WeightsFileError, SegbenchError)  # the CLI prints it as one line
