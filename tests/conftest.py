from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def write_mixed_store(path, *, sizes=((48, 48), (48, 64)), n=8, num_classes=3, seed=0):
    """A training store of ``n`` images alternating between ``sizes`` (so batches hold several image sizes),
    with labels a net can learn: the class of each pixel is its brightest colour channel (255 on a border)."""
    import numpy as np

    from segbench.data.store import write_store

    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=(*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(n)]
    labels = []
    for image in images:
        label = (image.argmax(axis=2) % num_classes).astype(np.uint8)
        label[:2] = 255
        labels.append(label)
    return write_store(path, dataset="mixed", split="train", ids=[f"m{i}" for i in range(n)],
                       fields={"image": images, "label": labels},
                       class_names=[f"c{k}" for k in range(num_classes)], attrs={"mean_bgr": [104.0, 117.0, 123.0]})
