"""The paper's published numbers (CVPR 2015), for the tables that stand beside ours.

Metrics are percentages; forward times are milliseconds on a Tesla K40c (Table 1: mean of 20 trials at
500 x 500). Source: the paper's Tables 1, 2, 4 and 5 (with the baselines they print).
"""

TABLE1 = {  # backbone -> row
    "alexnet": {"mean_iu": 39.8, "forward_ms": 50, "conv_layers": 8, "params_m": 57, "rf_size": 355, "max_stride": 32},
    "vgg16": {"mean_iu": 56.0, "forward_ms": 210, "conv_layers": 16, "params_m": 134, "rf_size": 404, "max_stride": 32},
    "googlenet": {"mean_iu": 42.5, "forward_ms": 59, "conv_layers": 22, "params_m": 6, "rf_size": 907, "max_stride": 32},
}

TABLE2 = {  # net -> (pixel acc, mean acc, mean IU, f.w. IU) on seg11valid
    "FCN-32s-fixed": {"pixel_acc": 83.0, "mean_acc": 59.7, "mean_iu": 45.4, "fw_iu": 72.0},
    "FCN-32s": {"pixel_acc": 89.1, "mean_acc": 73.3, "mean_iu": 59.4, "fw_iu": 81.4},
    "FCN-16s": {"pixel_acc": 90.0, "mean_acc": 75.7, "mean_iu": 62.4, "fw_iu": 83.0},
    "FCN-8s": {"pixel_acc": 90.3, "mean_acc": 75.9, "mean_iu": 62.7, "fw_iu": 83.2},
}

TABLE4 = {  # NYUDv2 test (pixel acc, mean acc, mean IU, f.w. IU); Gupta et al. have no mean accuracy
    "Gupta et al.": {"pixel_acc": 60.3, "mean_acc": None, "mean_iu": 28.6, "fw_iu": 47.0},
    "FCN-32s RGB": {"pixel_acc": 60.0, "mean_acc": 42.2, "mean_iu": 29.2, "fw_iu": 43.9},
    "FCN-32s RGBD": {"pixel_acc": 61.5, "mean_acc": 42.4, "mean_iu": 30.5, "fw_iu": 45.5},
    "FCN-32s HHA": {"pixel_acc": 57.1, "mean_acc": 35.2, "mean_iu": 24.2, "fw_iu": 40.4},
    "FCN-32s RGB-HHA": {"pixel_acc": 64.3, "mean_acc": 44.9, "mean_iu": 32.8, "fw_iu": 48.0},
    "FCN-16s RGB-HHA": {"pixel_acc": 65.4, "mean_acc": 46.1, "mean_iu": 34.0, "fw_iu": 49.5},
}
TABLE4_BASELINES = ("Gupta et al.",)

TABLE5 = {  # SIFT Flow test (pixel acc, mean acc, mean IU, f.w. IU, geometric pixel acc); None = not reported
    "Liu et al.": {"pixel_acc": 76.7, "mean_acc": None, "mean_iu": None, "fw_iu": None, "geo_acc": None},
    "Tighe et al. [33]": {"pixel_acc": None, "mean_acc": None, "mean_iu": None, "fw_iu": None, "geo_acc": 90.8},
    "Tighe et al. [34] 1": {"pixel_acc": 75.6, "mean_acc": 41.1, "mean_iu": None, "fw_iu": None, "geo_acc": None},
    "Tighe et al. [34] 2": {"pixel_acc": 78.6, "mean_acc": 39.2, "mean_iu": None, "fw_iu": None, "geo_acc": None},
    "Farabet et al. 1": {"pixel_acc": 72.3, "mean_acc": 50.8, "mean_iu": None, "fw_iu": None, "geo_acc": None},
    "Farabet et al. 2": {"pixel_acc": 78.5, "mean_acc": 29.6, "mean_iu": None, "fw_iu": None, "geo_acc": None},
    "Pinheiro et al.": {"pixel_acc": 77.7, "mean_acc": 29.8, "mean_iu": None, "fw_iu": None, "geo_acc": None},
    "FCN-16s (two-headed)": {"pixel_acc": 85.2, "mean_acc": 51.7, "mean_iu": 39.5, "fw_iu": 76.1, "geo_acc": 94.3},
}
TABLE5_BASELINES = ("Liu et al.", "Tighe et al. [33]", "Tighe et al. [34] 1", "Tighe et al. [34] 2", "Farabet et al. 1",
                    "Farabet et al. 2", "Pinheiro et al.")

# "Beyond FCN": the published mean IU (percent) of each successor on PASCAL VOC, with the split, the setting
# and the source; None where the paper reports no VOC result. FCN-8s's row is this paper's (the VOC2011
# seg11valid split that our evaluation mirrors). The numbers come from the papers' tables as restated in
# SUCCESSORS-REFERENCE (sections 2.5, 3.5, 5.4, 6.4, 7.4, 8.5); the PSPNet-50 figure is the authors' own code.
_PSP_TEST = "paper: 82.6 VOC2012 test, ResNet-101, VOC data only, multi-scale (Zhao et al. 2017)"
_UNET = {"mean_iu": None, "pixel_acc": None, "split": "--", "setting": "no VOC result published",
         "source": "Ronneberger et al. 2015: ISBI cell tracking 2015 mean IoU 92% (PhC-U373), 77.5% (DIC-HeLa)"}
_DL3 = {"mean_iu": 77.21, "pixel_acc": None, "split": "VOC2012 val",
        "setting": "ResNet-101, ASPP + image pooling, multi-grid (1, 2, 4), OS 16, single scale, trainaug, no COCO",
        "source": "Chen et al. 2017 (arXiv:1706.05587), section 4"}
_DL3P = {"mean_iu": 78.85, "pixel_acc": None, "split": "VOC2012 val",
         "setting": "ResNet-101 + decoder, train and eval OS 16, single scale, trainaug, no COCO",
         "source": "Chen et al. 2018 (arXiv:1802.02611), Table 3"}
SUCCESSORS = {  # models.MODELS name -> published VOC figure
    "fcn8s_vgg16": {"mean_iu": 62.7, "pixel_acc": 90.3, "split": "VOC2011 seg11valid",
                    "setting": "VGG16, SBD train, single scale (62.2 on VOC2012 test, Table 3)",
                    "source": "Long et al. 2015, Table 2"},
    "unet": _UNET, "unet_same": _UNET,
    "dilation8_vgg16": {"mean_iu": 67.6, "pixel_acc": None, "split": "VOC2012 test",
                        "setting": "front end, VOC + SBD training, no CRF",
                        "source": "Yu & Koltun 2016, Table 2"},
    "dilation8_basic_vgg16": {"mean_iu": 71.3, "pixel_acc": None, "split": "VOC2012 val",
                              "setting": "front end + basic context, VOC + SBD + COCO training, no CRF",
                              "source": "Yu & Koltun 2016, Table 3"},
    "dilation8_large_vgg16": {"mean_iu": 72.1, "pixel_acc": None, "split": "VOC2012 val",
                              "setting": "front end + large context, VOC + SBD + COCO training, no CRF "
                                         "(73.5 on VOC2012 test, Table 4)",
                              "source": "Yu & Koltun 2016, Table 3"},
    "pspnet_resnet50": {"mean_iu": 77.05, "pixel_acc": None, "split": "VOC2012 val",
                        "setting": "PSPNet50, trainaug, single scale; " + _PSP_TEST,
                        "source": "hszhao/semseg README (the authors' PyTorch code)"},
    "pspnet_resnet101": {"mean_iu": 79.07, "pixel_acc": None, "split": "VOC2012 val",
                         "setting": "PSPNet101, trainaug, single scale; " + _PSP_TEST,
                         "source": "hszhao/semseg README (the authors' PyTorch code)"},
    "deeplabv3_resnet50": _DL3, "deeplabv3_resnet101": _DL3,
    "deeplabv3plus_resnet50": _DL3P, "deeplabv3plus_resnet101": _DL3P,
    "icnet_resnet50": {"mean_iu": None, "pixel_acc": None, "split": "--",
                       "setting": "no VOC result published; Cityscapes val 67.7 (train set, 30K iterations), "
                                  "test 69.5 (train + val)",
                       "source": "hszhao/ICNet README (the authors' release)"},
}
