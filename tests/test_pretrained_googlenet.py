"""torchvision's GoogLeNet weights expect transform_input=True: its input mapped to (pixel - 0.5) / 0.5 before conv1.
The FCN has no such step, so the fetch step folds it into conv1; the FCN-GoogLeNet from the folded weights computes
torchvision's googlenet(transform_input=True) trunk, at the classifier's own size and at the FCN's."""

import copy
import hashlib
import io
import threading
import types
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from segbench import models
from segbench.data import tensors
from segbench.data.download import sidecar_path
from segbench.pretraining import imagenet
from segbench.weights import WeightsFileError

TRUNK = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3", "inception4a",
         "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4", "inception5a", "inception5b")


@pytest.fixture(scope="module")
def reference():
    """torchvision's GoogLeNet as its ImageNet weights build it (transform_input=True), in eval mode: random
    weights, batch norm statistics measured on random images (so that every layer passes on its input, as a
    trained net's does, and conv1's running mean, which the fold rewrites, is far from zero), random affines."""
    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, aux_logits=False, transform_input=True, init_weights=True)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.momentum = None  # running statistics = the plain average over the calibration batch
            m.reset_running_stats()
        net.train()(torch.cat([_input(224, seed=10 + i) for i in range(2)]))
        for m in norms:
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.1)
    return net.eval()


def _trunk(net, x, names=TRUNK):
    for name in names:
        x = getattr(net, name)(x)
    return x


def _input(size, seed=0):
    image = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return tensors.to_input([image], mean_bgr=(0.0, 0.0, 0.0), norm="torchvision")


def _padded_reference(reference, pad):
    """torchvision's net on an image zero-padded by ``pad`` in torchvision's normalised space, before its
    transform (the folded net's padding is the transform of zero: the ImageNet mean colour)."""
    net = copy.deepcopy(reference)
    net.conv1.conv.padding = (0, 0)
    return lambda x: _trunk(net, net._transform_input(F.pad(x, (pad,) * 4)))


def _assert_same(ours, expected):
    assert expected.std() > 0.05 * expected.abs().max()  # features that vary over the image, not a constant
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_fcn_googlenet_from_folded_weights_computes_torchvisions_trunk(reference):
    folded = imagenet.fold_transform_input(reference.state_dict())
    fcn = models.transplant(folded, models.build("fcn32s_googlenet", 21, width=1.0)).eval()
    x = _input(224)  # the classifier's own size; the FCN pads it by 100
    with torch.no_grad():
        ours = _trunk(fcn, x, fcn.trunk_names)
        _assert_same(ours, _padded_reference(reference, 100)(x))
        # without the fold, the FCN starts from mis-scaled input: its features are far from torchvision's
        unfolded = models.transplant(reference.state_dict(), models.build("fcn32s_googlenet", 21, width=1.0)).eval()
        wrong = _trunk(unfolded, x, unfolded.trunk_names)
    assert (wrong - ours).abs().max() > 0.1 * ours.abs().max()


def test_the_classifier_from_folded_weights_is_torchvisions_at_its_own_size(reference):
    folded = imagenet.fold_transform_input(reference.state_dict())
    ours = models.classifier("googlenet", 1000, width=1.0)
    ours.load_state_dict(folded)
    x = _input(224, seed=1)
    with torch.no_grad():  # the classifier pads conv1 by 3: the border's colour is the mean (see the fold)
        _assert_same(_trunk(ours.eval(), x), _padded_reference(reference, 3)(x))


def test_fold_refuses_other_state_dicts():
    with pytest.raises(ValueError, match=r"not a torchvision GoogLeNet state dict: \['conv1.conv.weight', "
                                         r"'conv1.bn.running_mean'\] missing"):
        imagenet.fold_transform_input(models.classifier("vgg16", 10, width=1 / 16).state_dict())


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_fetch_writes_the_folded_googlenet_record(tmp_path, server, reference, monkeypatch):
    folder, url = server
    buf = io.BytesIO()
    torch.save(reference.state_dict(), buf)
    data = buf.getvalue()
    name = f"googlenet-{hashlib.sha256(data).hexdigest()[:8]}.pth"  # torchvision's naming: the sha256 prefix
    (folder / name).write_bytes(data)
    monkeypatch.setitem(imagenet.WEIGHTS, "googlenet", types.SimpleNamespace(url=f"{url}/{name}"))
    out = imagenet.fetch_weights("googlenet", tmp_path / "googlenet.pt", cache=tmp_path / "cache")
    record = torch.load(out, weights_only=True)
    assert (record["input_norm"], record["weights"], record["transform_input"]) == ("torchvision", "torchvision",
                                                                                   "folded into conv1")
    expected = imagenet.fold_transform_input(reference.state_dict())
    assert all(torch.equal(record["state_dict"][k], expected[k]) for k in expected)
    # a page put in the cache under the weights' name (by hand: no md5 recorded) is refused before torch reads it
    (tmp_path / "cache" / name).write_text("<html><head><title>Error 404</title></head></html>")
    sidecar_path(tmp_path / "cache" / name).unlink()
    with pytest.raises(WeightsFileError, match=rf"an HTML page, .*'Error 404'.*download it again from {url}/{name}"):
        imagenet.fetch_weights("googlenet", tmp_path / "again.pt", cache=tmp_path / "cache")
