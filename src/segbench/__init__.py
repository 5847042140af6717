"""segbench: the experiments of "Fully Convolutional Networks for Semantic Segmentation" as a pipeline."""

__version__ = "0.1.0"
