"""The paper's published numbers (CVPR 2015), for the tables that stand beside ours.

Metrics are percentages; forward times are milliseconds on a Tesla K40c (Table 1: mean of 20 trials at
500 x 500). Source: the paper's Tables 1 and 2.
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
