"""Datasets: downloads and their verification, readers of the real on-disk formats, synthetic twins, HDF5 store."""

__all__ = ["fetch", "extract", "verify"]

# Written last into a raw dataset folder, by a synthetic twin and by the download step alike: a folder that
# has it is complete. The workflow's rules name it as the output of the data steps.
MANIFEST = "manifest.json"


def __getattr__(name):
    # Imported on first use, so that readers and twins do not pull in the download machinery.
    if name in __all__:
        from segbench.data import download

        return getattr(download, name)
    raise AttributeError(f"module 'segbench.data' has no attribute {name!r}")
