"""Datasets: downloads and their verification, readers of the real on-disk formats, synthetic twins, HDF5 store."""

__all__ = ["fetch", "extract", "verify"]


def __getattr__(name):
    # Imported on first use, so that readers and twins do not pull in the download machinery.
    if name in __all__:
        from segbench.data import download

        return getattr(download, name)
    raise AttributeError(f"module 'segbench.data' has no attribute {name!r}")
