"""Datasets: Fashion-MNIST from IDX files, the CIFAR python format, fixed held-out splits."""
import gzip
import pickle

import numpy as np
import pytest
import torch

from conftest import SHARED, Planted
from nas.data import FASHION_MNIST_DIR, load_data, random_crop_flip, read_idx
from nas.errors import UserError

needs_fmnist = pytest.mark.skipif(not FASHION_MNIST_DIR.exists(),
                                  reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")


@needs_fmnist
def test_fashion_mnist_from_debian_package():
    d = load_data("fashion-mnist", heldout=5000, seed=0)
    assert len(d.train) == 55000 and len(d.heldout) == 5000 and len(d.test) == 10000
    assert d.train.images.shape[1:] == (1, 28, 28) and d.train.images.dtype == torch.uint8
    assert sorted(torch.unique(d.train.labels).tolist()) == list(range(10))
    assert torch.bincount(d.test.labels).tolist() == [1000] * 10  # the official balanced test set
    again = load_data("fashion-mnist", heldout=5000, seed=0)
    assert torch.equal(again.heldout.images, d.heldout.images)  # a fixed split
    other = load_data("fashion-mnist", heldout=5000, seed=1)
    assert not torch.equal(other.heldout.labels, d.heldout.labels)
    x = d.normalise(d.train.images[:64])
    assert x.shape == (64, 3, 28, 28) and abs(float(x.mean())) < 0.3 and 0.7 < float(x.std()) < 1.3


def test_idx_reader_rejects_other_files(tmp_path):
    f = tmp_path / "x.gz"
    f.write_bytes(gzip.compress(b"\x00\x00\x0c\x01" + (3).to_bytes(4, "big") + b"abc"))
    with pytest.raises(UserError, match="not an IDX file of unsigned bytes"):
        read_idx(f)
    f.write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(UserError, match="header says \\[5\\] but the file holds 3"):
        read_idx(f)


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_data(f"fashion-mnist:{tmp_path}")
    with pytest.raises(UserError, match="did you mean 'cifar10'"):
        load_data("cifar11:/x")


def test_cifar_python_format_from_real_samples(tmp_path):
    src = SHARED / "data" / "cifar10-samples"
    if not src.exists():
        pytest.skip(f"shared CIFAR-10 samples not available at {src}")
    from PIL import Image

    files = sorted(src.glob("cifar10_*.png"))
    imgs = np.stack([np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1).reshape(-1) for f in files])
    labels = [int(f.stem.split("_")[2]) for f in files]
    for i in range(1, 6):  # the python format: five training batches and a test batch
        with (tmp_path / f"data_batch_{i}").open("wb") as fh:
            pickle.dump({b"data": imgs, b"labels": labels}, fh)
    with (tmp_path / "test_batch").open("wb") as fh:
        pickle.dump({b"data": imgs[:10], b"labels": labels[:10]}, fh)
    d = load_data(f"cifar10:{tmp_path}", heldout=10, seed=0)
    assert len(d.train) == 90 and len(d.heldout) == 10 and len(d.test) == 10
    assert d.train.images.shape[1:] == (3, 32, 32) and d.num_classes == 10
    first = np.asarray(Image.open(files[0]).convert("RGB")).transpose(2, 0, 1)
    assert any(np.array_equal(first, im.numpy()) for im in d.heldout.images) or \
        any(np.array_equal(first, im.numpy()) for im in d.train.images)
    (tmp_path / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(UserError, match="data_batch_3: not a CIFAR pickle"):
        load_data(f"cifar10:{tmp_path}")


def test_cifar_loader_refuses_a_planted_pickle_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    arrays = {b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with (tmp_path / name).open("wb") as fh:
            pickle.dump(arrays, fh, protocol=2)  # the format CIFAR ships in: numpy arrays in a dict
    assert len(load_data(f"cifar10:{tmp_path}", heldout=2).train) == 18
    with (tmp_path / "data_batch_2").open("wb") as fh:
        pickle.dump({b"data": Planted(marker), b"labels": [0]}, fh)
    with pytest.raises(UserError, match=r"data_batch_2: not a CIFAR pickle \(refusing pathlib.*touch"):
        load_data(f"cifar10:{tmp_path}")
    assert not marker.exists()  # nothing was executed
    pickle.loads(pickle.dumps(Planted(marker)))  # the same bytes through plain pickle do run
    assert marker.exists()


def test_random_crop_flip_is_a_crop_of_the_padded_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    y = random_crop_flip(x, pad=2, generator=g)
    assert y.shape == x.shape
    assert torch.equal(y, random_crop_flip(x, pad=2, generator=torch.Generator().manual_seed(0)))
    for i in range(2):  # every output pixel comes from its own image (or the zero padding)
        assert set(y[i].unique().tolist()) <= set(x[i].unique().tolist()) | {0}


def test_imagefolder_of_real_photos(tmp_path):
    src = SHARED / "data" / "cifar10-samples"
    if not src.exists():
        pytest.skip(f"shared CIFAR-10 samples not available at {src}")
    import shutil

    for f in sorted(src.glob("cifar10_*.png")):  # one folder per class, named by the label
        (tmp_path / "train" / f"c{f.stem.split('_')[2]}").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, tmp_path / "train" / f"c{f.stem.split('_')[2]}" / f.name)
    (tmp_path / "train" / "c0" / "notes.txt").write_text("not an image")
    d = load_data(f"imagefolder:{tmp_path}:48", heldout=4, seed=0)
    assert d.num_classes == 8 and len(d.train) == 16 and len(d.heldout) == 4 and d.test is None
    assert d.train.images.shape[1:] == (3, 48, 48) and d.train.images.dtype == torch.uint8
    (tmp_path / "train" / "c0" / "broken.png").write_bytes(b"nope")
    with pytest.raises(UserError, match="broken.png: not a readable image"):
        load_data(f"imagefolder:{tmp_path}")
    with pytest.raises(UserError, match="one sub-folder per class"):
        load_data(f"imagefolder:{tmp_path / 'train' / 'c0'}")
