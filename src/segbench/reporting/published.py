"""The paper's published numbers (CVPR 2015), for the tables that stand beside ours.

Metrics are percentages; forward times are milliseconds on a Tesla K40c (Table 1: mean of 20 trials at
500 x 500). Source: the paper's Tables 1, 2, 4 and 5 (with the baselines they print). The successors table's published
figures are declared with each model (``segbench.models.MODELS[name].published``).
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
