"""Image classification data: Fashion-MNIST (IDX files, e.g. Debian's dataset-fashion-mnist),
CIFAR-10/100 (the python pickle format), and ImageFolder trees (decoded once into memory).

``load_data("fashion-mnist")`` returns a ``Data`` with three disjoint parts: ``train`` (what the
trainer learns from), ``heldout`` (a fixed, seeded slice of the training set, for search-time
accuracy and BN recalibration), and ``test`` (the official test set; never used by a search).
Datasets live in memory as uint8 tensors and are batched, augmented (random crop and flip) and
normalised with vectorised torch ops, which on a CPU is far faster than per-image transforms.
"""
from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from nas.errors import UserError
from nas.registry import did_you_mean

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: apt-get install dataset-fashion-mnist
MEAN_STD = {"fashion-mnist": ((0.2860,), (0.3530,)), "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
            "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}


@dataclass
class Split:
    """Images (N, C, H, W) uint8 and labels (N,) int64, in memory."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Data:
    name: str  # the spec it was loaded from, e.g. "fashion-mnist" or "cifar10:/data/cifar-10-batches-py"
    train: Split
    heldout: Split
    test: Split | None
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float (B, 3, H, W), normalised; grey images are repeated to 3 channels."""
        x = images.float().div_(255)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        x = (x - mean) / std
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def raw_batches(self, split: Split, batch_size: int, *, shuffle_seed=None, start: int = 0, stop: int | None = None,
                    shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """uint8 (images, labels) batches, in order or in the seeded order ``shuffle_seed`` (one
        seed per epoch; then the last partial batch is dropped). ``start``/``stop`` are batch
        indices (resuming mid-epoch); with ``shard=(rank, world)`` each global batch of
        ``batch_size * world`` images is split across the ranks."""
        n = len(split)
        order = np.random.default_rng(shuffle_seed).permutation(n) if shuffle_seed is not None else np.arange(n)
        rank, world = shard
        step = batch_size * world
        count = n // step if shuffle_seed is not None else -(-n // step)
        for b in range(start, count if stop is None else min(stop, count)):
            idx = torch.from_numpy(order[b * step + rank * batch_size: b * step + (rank + 1) * batch_size])
            if len(idx):
                yield split.images[idx], split.labels[idx]


def random_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crop (after zero padding by ``pad``) and horizontal flip, vectorised."""
    B, C, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    rows = (oy[:, None] + torch.arange(H))[:, None, :, None].expand(B, C, H, W + 2 * pad)
    out = padded.gather(2, rows)
    cols = (ox[:, None] + torch.arange(W))
    flip = torch.rand(B, generator=generator) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    return out.gather(3, cols[:, None, None, :].expand(B, C, H, W))


# ---- readers -------------------------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped): the MNIST / Fashion-MNIST format."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path}: IDX header says {dims} but the file holds {data.size} values")
    return data.reshape(dims)


def _fashion_mnist(path: Path) -> tuple[Split, Split, int]:
    def pick(stem: str) -> Path:
        for name in (f"{stem}.gz", stem):
            if (path / name).exists():
                return path / name
        raise UserError(f"Fashion-MNIST not found: {path / (stem + '.gz')} is missing; install it with "
                        "`apt-get install dataset-fashion-mnist` or give --data fashion-mnist:DIR")

    def split(kind: str) -> Split:
        x = read_idx(pick(f"{kind}-images-idx3-ubyte"))
        y = read_idx(pick(f"{kind}-labels-idx1-ubyte"))
        if len(x) != len(y):
            raise UserError(f"{path}: {kind} has {len(x)} images but {len(y)} labels")
        return Split(torch.from_numpy(x.copy())[:, None], torch.from_numpy(y.astype(np.int64)))

    return split("train"), split("t10k"), 10


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds (dicts, lists, bytes, ints and numpy arrays): any
    other global in the file, such as a function a planted pickle would call, is refused before it
    is looked up, so loading a user's folder never runs code from it."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}: a CIFAR batch holds only arrays, lists and bytes")


def _cifar(path: Path, classes: int) -> tuple[Split, Split, int]:
    files = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]) if classes == 10 else (["train"], ["test"])
    key = b"labels" if classes == 10 else b"fine_labels"

    def load(names: list[str]) -> Split:
        xs, ys = [], []
        for name in names:
            f = path / name
            try:
                with f.open("rb") as fh:
                    d = _CifarUnpickler(fh, encoding="bytes").load()
            except FileNotFoundError:
                raise UserError(f"CIFAR-{classes} file {f} is missing (expected the python version: "
                                f"{', '.join(names)} in {path})") from None
            except (pickle.UnpicklingError, EOFError) as e:
                raise UserError(f"{f}: not a CIFAR pickle ({e})") from None
            try:
                xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(d[key], dtype=np.int64))
            except (KeyError, ValueError) as e:
                raise UserError(f"{f}: field {e} missing or malformed for CIFAR-{classes}") from None
        return Split(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))

    return load(files[0]), load(files[1]), classes


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}


def _imagefolder(path: Path, size: int) -> tuple[Split, Split | None, int]:
    """``DIR/<class>/<image>`` (or ``DIR/train/<class>/...`` with ``DIR/val/<class>/...`` as the
    test split). Images are decoded once, resized (short side, bicubic) and centre-cropped to
    ``size`` x ``size``, and kept in memory as uint8: right for small and medium datasets; a
    dataset that does not fit in memory needs a streaming loader, which vitnas does not have yet."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_dir():
        raise UserError(f"imagefolder {path} is not a directory")
    root, val = (path / "train", path / "val") if (path / "train").is_dir() else (path, None)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"imagefolder {root}: expected one sub-folder per class, found none")

    def read(folder: Path) -> Split:
        xs, ys = [], []
        for label, name in enumerate(classes):
            for f in sorted((folder / name).iterdir()) if (folder / name).is_dir() else []:
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    img = Image.open(f).convert("RGB")
                except (UnidentifiedImageError, OSError) as e:
                    raise UserError(f"{f}: not a readable image ({e})") from None
                w, h = img.size
                s = size / min(w, h)
                img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
                w, h = img.size
                left, top = (w - size) // 2, (h - size) // 2
                xs.append(np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8).transpose(2, 0, 1))
                ys.append(label)
        if not xs:
            raise UserError(f"imagefolder {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return Split(torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.int64))

    return read(root), (read(val) if val is not None and val.is_dir() else None), len(classes)


def load_data(spec: str, *, heldout: int | float = 0.1, seed: int = 0) -> Data:
    """``fashion-mnist[:DIR]``, ``cifar10:DIR``, ``cifar100:DIR``, ``imagefolder:DIR[:SIZE]``. ``heldout`` images (a count or a
    fraction of the training set) are set aside with a seeded permutation: the same spec and seed
    always give the same split."""
    kind, _, where = spec.partition(":")
    if kind == "fashion-mnist":
        train, test, classes = _fashion_mnist(Path(where) if where else FASHION_MNIST_DIR)
    elif kind in ("cifar10", "cifar100"):
        if not where:
            raise UserError(f"--data {kind} needs the folder of the python-format files: {kind}:DIR")
        train, test, classes = _cifar(Path(where), 10 if kind == "cifar10" else 100)
    elif kind == "imagefolder":
        if not where:
            raise UserError("--data imagefolder needs a folder: imagefolder:DIR[:SIZE]")
        folder, _, size = where.partition(":")
        train, test, classes = _imagefolder(Path(folder), int(size) if size else 64)
    else:
        raise did_you_mean(kind, ["fashion-mnist", "cifar10", "cifar100", "imagefolder"], "dataset")
    n = len(train)
    k = int(round(heldout * n)) if isinstance(heldout, float) else int(heldout)
    if not 0 < k < n:
        raise UserError(f"held-out split of {heldout} leaves nothing to train on ({n} training images)")
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    hold, keep = perm[:k].sort().values, perm[k:].sort().values
    mean, std = MEAN_STD.get(kind, ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))  # ImageNet statistics otherwise
    return Data(spec, Split(train.images[keep], train.labels[keep]), Split(train.images[hold], train.labels[hold]),
                test, classes, mean, std)
