"""The pretrain step: the classifier stand-ins for ImageNet, torchvision's and Caffe's weights, and the
pruned trunks."""
