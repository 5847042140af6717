"""Net surgery (Caffe ``surgery.py``): transplant a classifier into an FCN, stage 32s -> 16s -> 8s, freeze.

``transplant`` is ``copy_params_from_vgg16`` of pytorch-fcn / Caffe ``surgery.transplant``: convolutions
are copied one to one, the fully connected fc6/fc7 are *reshaped* into convolutions (fc6: 4096 x 25088 ->
4096 x 512 x 7 x 7 for VGG16, whose flattening order is channel-major, exactly a conv's), and fc8 -- the
1000-way (or 20-way stand-in) classifier -- is dropped: the FCN's ``score_fr`` starts at zero. The same
function fills the trunk of the successor nets: the dilated VGG16 front end from a VGG16 classifier (fc6
reshaped into its dilated 7x7 conv), and PSPNet / DeepLab / ICNet from a ResNet classifier, whose trunk keys
they share (``fc`` dropped; dilation changes no weight shape). A net whose layers differ from the classifier's
in shape or number (DeepLab's decimated fc6/fc7, one per ASPP branch) has a ``transplant_hook(key, value)``
that says where each mapped value goes (``{key: value}``, as many as it likes).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from segbench.errors import WeightsError
from segbench.models import alexnet, googlenet, resnet, vgg
from segbench.models.fcn import FCN
from segbench.models.layers import BilinearUpsample


def _prefix_table(table: dict[str, tuple[str, bool]], dropped: tuple[str, ...]) -> Callable:
    def map_key(key: str) -> tuple[str | None, bool]:
        prefix, _, leaf = key.rpartition(".")
        if prefix in table:
            name, reshape = table[prefix]
            return f"{name}.{leaf}", reshape
        if prefix in dropped:
            return None, False
        raise WeightsError(f"unexpected classifier key {key!r}: expected the torchvision layout with modules "
                       f"{sorted(table) + list(dropped)}")
    return map_key


def _same_names_map(net: nn.Module, dropped: tuple[str, ...], family: str) -> Callable:
    """Keys whose first component names a trunk module are kept as they are; ``dropped`` ones are skipped."""
    def map_key(key: str) -> tuple[str | None, bool]:
        head = key.split(".", 1)[0]
        if head in net.trunk_names:
            return key, False
        if head in dropped:
            return None, False
        raise WeightsError(f"unexpected classifier key {key!r}: expected torchvision {family} modules "
                       f"{net.trunk_names} or dropped ones {dropped}")
    return map_key


def _key_map(fcn: nn.Module) -> Callable:
    if fcn.backbone == "vgg16":  # fc6 and fc7 dropped too for a net without them (U-Net's decoder on VGG16)
        table = vgg.torchvision_keys()  # (a transplant_hook places them itself: DeepLab's ASPP branches)
        unused = tuple(k for k, (name, _) in table.items() if name in ("fc6", "fc7") and not hasattr(fcn, name)
                       and not hasattr(fcn, "transplant_hook"))
        return _prefix_table({k: v for k, v in table.items() if k not in unused}, dropped=("classifier.6", *unused))
    if fcn.backbone in ("alexnet", "alexnet_caffe"):
        return _prefix_table(alexnet.torchvision_keys(fcn.backbone), dropped=("classifier.6",))
    if fcn.backbone == "googlenet":
        return _same_names_map(fcn, googlenet.DROPPED, "GoogLeNet")
    if fcn.backbone in ("resnet50", "resnet101", "resnet50_half"):
        return _same_names_map(fcn, resnet.DROPPED, "ResNet")
    raise ValueError(f"no transplant rule for backbone {fcn.backbone!r}")


def transplant(classifier: nn.Module | dict, fcn: nn.Module) -> nn.Module:
    """Copy a classifier's weights (module or torchvision-layout state dict) into ``fcn`` in place.

    ``fcn`` is an FCN or any successor net with a ``trunk_names`` list (dilated front end, PSPNet, DeepLab,
    ICNet; U-Net has no classifier). fc layers become convolutions; fc8 / GoogLeNet's and ResNet's ``fc``
    and GoogLeNet's auxiliary heads are dropped; score layers, heads and upsamplers are left as they are.
    If the net's first conv has more input channels than the classifier's (RGB-D early fusion), the extra
    channels get the mean of the RGB filters, as the NYUD ``color-d`` net does. Raises ``ValueError``
    naming the key and both shapes on any other mismatch, and ``errors.WeightsError`` (a ``KeyError``) if a trunk parameter is not
    provided. Returns ``fcn``.
    """
    state = classifier.state_dict() if isinstance(classifier, nn.Module) else classifier
    map_key = _key_map(fcn)
    target = fcn.state_dict()
    first_conv = next(n for n, m in fcn.named_modules() if isinstance(m, nn.Conv2d)) + ".weight"
    hook = getattr(fcn, "transplant_hook", None)
    new = {}
    for key, mapped in state.items():
        fcn_key, reshape = map_key(key)
        if fcn_key is None:
            continue
        for fcn_key, value in (hook(fcn_key, mapped) if hook else {fcn_key: mapped}).items():
            if fcn_key not in target:
                raise WeightsError(f"classifier key {key!r} maps to {fcn_key!r}, which the {fcn.backbone} FCN lacks")
            want = target[fcn_key].shape
            if reshape and value.numel() == want.numel():
                value = value.reshape(want)
            elif fcn_key == first_conv and value.shape[1] < want[1] and value.shape[2:] == want[2:]:
                extra = value.mean(dim=1, keepdim=True).expand(-1, want[1] - value.shape[1], -1, -1)
                value = torch.cat([value, extra], dim=1)
            if value.shape != want:
                raise ValueError(f"classifier key {key!r} has shape {tuple(value.shape)} but FCN parameter "
                                 f"{fcn_key!r} expects {tuple(want)}: build both with the same backbone and width")
            new[fcn_key] = value
    trunk_keys = [k for k in target if k.split(".", 1)[0] in fcn.trunk_names]
    missing = [k for k in trunk_keys if k not in new]
    if missing:
        raise WeightsError(f"the classifier provides no value for FCN parameters {missing[:5]}"
                       f"{' ...' if len(missing) > 5 else ''}; is it a {fcn.backbone} state dict?")
    fcn.load_state_dict(new, strict=False)
    return fcn


def init_from(fcn: FCN, coarser: nn.Module | dict) -> FCN:
    """Staged initialisation (32s -> 16s -> 8s, Caffe ``copy_from``), in place; returns ``fcn``.

    Every parameter and buffer the two nets share by name is copied; new skip score layers stay zero
    and every upsampler is reset to bilinear (``interp`` on every layer named "up*").
    """
    source = coarser.state_dict() if isinstance(coarser, nn.Module) else coarser
    target = fcn.state_dict()
    shared = {}
    for key, value in source.items():
        if key not in target:
            continue
        if value.shape != target[key].shape:
            raise ValueError(f"{key!r} has shape {tuple(value.shape)} in the coarser net but {tuple(target[key].shape)} "
                             "in the finer one: build both with the same backbone, width and num_classes")
        shared[key] = value
    if not shared:
        raise ValueError("the two nets share no parameter names: is the coarser net of the same backbone?")
    fcn.load_state_dict(shared, strict=False)
    for module in fcn.modules():
        if isinstance(module, BilinearUpsample):
            module.reset_bilinear()
    return fcn


def train_only(net: nn.Module, prefix: str) -> nn.Module:
    """``requires_grad`` True for the parameters whose names start with ``prefix``, False for all others, in
    place; returns ``net``."""
    for name, param in net.named_parameters():
        param.requires_grad_(name.startswith(prefix))
    return net


def freeze_trunk(fcn: FCN) -> FCN:
    """FCN-32s-fixed: only ``score_fr`` learns (``requires_grad`` False elsewhere), in place.

    Batch-norm layers (GoogLeNet) get ``momentum=0`` so their running statistics stay the classifier's; the
    training loop also keeps them in eval mode (``training.train.set_train_mode``: a layer whose parameters do
    not learn normalises with those statistics, in training as in evaluation).
    """
    train_only(fcn, "score_fr.")
    for module in fcn.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.0
    return fcn
