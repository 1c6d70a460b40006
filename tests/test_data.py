"""Tests for lthgan.data: embedded digit sets, CycleGAN folders, errors for missing data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lthgan import data, digits
from lthgan.data import DataError, ImageSet


@pytest.fixture(scope="module")
def sk_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.from_numpy(d.images).float(), torch.from_numpy(d.target).long()


# --------------------------------------------------------------------------- embedded digits


def test_digits_shapes_ranges_and_labels(sk_digits):
    train = data.load("digits", "train")
    test = data.load("digits", "test")
    assert len(train) + len(test) == 1797
    assert len(test) == 300
    for s in (train, test):
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (3, 32, 32)
        assert s.resolution == 32 and s.channels == 3
        # grayscale digits replicated to RGB
        assert torch.equal(s.images[:, 0], s.images[:, 1]) and torch.equal(s.images[:, 0], s.images[:, 2])
        assert s.labels.dtype == torch.long and set(s.labels.tolist()) == set(range(10))
        # labels are sklearn's for the recorded source digits
        assert torch.equal(s.labels, sk_digits[1][s.source_index])
        # white strokes on black with a dark margin, full dynamic range used
        assert int(s.images.max()) == 255 and int(s.images.min()) == 0
        assert int(s.images[:, :, :2].max()) == 0 and int(s.images[:, :, :, -2:].max()) == 0


def test_digits_are_upscaled_sklearn_digits(sk_digits):
    s = data.load("digits", "test", resolution=32)
    raw = sk_digits[0][s.source_index]                       # [N, 8, 8], 0..16
    # block-average our 26x26 digit box back to 8x8: it must track the raw digit closely
    box = s.images[:, 0, 3:29, 3:29].float()[:, None] / 255.0
    small = F.interpolate(box, size=(8, 8), mode="area")[:, 0]
    corr = np.corrcoef(small.flatten().numpy(), (raw / 16.0).flatten().numpy())[0, 1]
    assert corr > 0.95


def test_digits_split_disjoint_and_covering():
    for seed in (0, 3):
        tr = data.load("digits", "train", seed=seed).source_index
        te = data.load("digits", "test", seed=seed).source_index
        assert set(tr.tolist()).isdisjoint(te.tolist())
        assert sorted(tr.tolist() + te.tolist()) == list(range(1797))


def test_embedded_sets_deterministic_from_seed():
    a = data.load("digits-m", "train", seed=5)
    b = data.load("digits-m", "train", seed=5)
    c = data.load("digits-m", "train", seed=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.source_index, c.source_index)
    d0, d1 = data.load("digits", "test", seed=1), data.load("digits", "test", seed=1)
    assert torch.equal(d0.images, d1.images)


def test_digits_m_blends_digit_over_colour_patch():
    d = data.load("digits", "test")
    m = data.load("digits-m", "test")
    assert torch.equal(d.source_index, m.source_index) and torch.equal(d.labels, m.labels)
    assert m.images.shape == d.images.shape and m.images.dtype == torch.uint8
    assert not torch.equal(m.images, d.images)
    # colour: channels differ; backgrounds differ between images
    assert (m.images[:, 0].float() - m.images[:, 1].float()).abs().mean() > 3
    assert m.images.float().mean(dim=(1, 2, 3)).std() > 10
    # out = |patch - digit| inverts the patch under the stroke, so the digit stands out from
    # its surroundings in almost every image
    stroke = d.images[:, :1].expand_as(m.images)
    on, off = stroke == 255, stroke == 0
    assert on.any() and off.any()
    diff = []
    for i in range(len(m)):
        img = m.images[i].float()
        diff.append((img[on[i]].mean() - img[off[i]].mean()).abs())
    assert (torch.stack(diff) > 15).float().mean() > 0.8


def test_digits_m_same_digit_same_image_across_splits():
    tr = data.load("digits-m", "train", seed=2)
    full = digits.digits_m_all(32, 2)
    assert torch.equal(tr.images, full[tr.source_index])


def test_other_resolution():
    s = data.load("digits-m", "test", resolution=64)
    assert s.images.shape == (300, 3, 64, 64) and s.resolution == 64
    assert s.batch([0, 1]).shape == (2, 3, 64, 64)


def test_batch_matches_plain_conversion():
    s = data.load("digits-m", "test")
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(s), (17,), generator=g)
    x = s.batch(idx, g)                                        # no augmentation: generator unused
    assert x.dtype == torch.float32 and x.shape == (17, 3, 32, 32)
    assert torch.allclose(x, s.images[idx].float() / 127.5 - 1.0)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert torch.allclose(s.all(), s.images.float() / 127.5 - 1.0)
    assert s.batch(np.array([3, 4])).shape == (2, 3, 32, 32)
    assert s.sample(5, torch.Generator().manual_seed(1)).shape == (5, 3, 32, 32)


def test_batch_rejects_bad_indices():
    s = data.load("digits", "test")
    with pytest.raises(DataError, match=r"\[0, 300\)"):
        s.batch([0, 300])
    with pytest.raises(DataError, match="integers"):
        s.batch(torch.tensor([0.5]))


def test_load_unpaired_digits_halves_disjoint():
    a, b = data.load_unpaired("digits:digits-m", "train", seed=0)
    assert a.name == "digits" and b.name == "digits-m"
    assert abs(len(a) - len(b)) <= 1 and len(a) + len(b) == 1497
    assert set(a.source_index.tolist()).isdisjoint(b.source_index.tolist())
    a2, b2 = data.load_unpaired("digits:digits-m", "train", seed=0)
    assert torch.equal(a.images, a2.images) and torch.equal(b.images, b2.images)
    ta, tb = data.load_unpaired("digits:digits-m", "test", seed=0)
    assert len(ta) == len(tb) == 300 and torch.equal(ta.labels, tb.labels)


def test_load_unpaired_bad_spec():
    with pytest.raises(DataError, match="digits:digits-m"):
        data.load_unpaired("digits")
    with pytest.raises(DataError, match="nope"):
        data.load_unpaired("digits:nope")


# --------------------------------------------------------------------------- folders


def _write_layout(root, sizes=(40, 30), n=(3, 2), rng=None):
    rng = rng or np.random.default_rng(0)
    written = {}
    exts = [".png", ".PNG", ".bmp"]
    for split, count in zip(("train", "test"), n):
        for side in "AB":
            d = root / f"{split}{side}"
            d.mkdir(parents=True)
            arrs = []
            for i in range(count):
                arr = rng.integers(0, 256, size=(sizes[1], sizes[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"img{i:02d}{exts[i % len(exts)]}")
                arrs.append(arr)
            (d / "notes.txt").write_text("not an image")
            written[f"{split}{side}"] = arrs
    return written


def test_folder_reads_cyclegan_layout(tmp_path):
    written = _write_layout(tmp_path)
    s = data.load(f"folder:{tmp_path}/B", "test", resolution=16)
    assert len(s) == 2 and s.labels is None and not s.augment
    assert s.images.shape == (2, 3, 16, 16)
    for i, arr in enumerate(written["testB"]):
        ref = np.asarray(Image.fromarray(arr).resize((16, 16), Image.BICUBIC))
        assert np.array_equal(s.images[i].permute(1, 2, 0).numpy(), ref)
    a, b = data.load_unpaired(f"folder:{tmp_path}", "train", resolution=16)
    assert len(a) == 3 and len(b) == 3
    assert a.augment and a.load_size == (18, 18)           # round(16 * 286 / 256)
    ref = np.asarray(Image.fromarray(written["trainA"][1]).resize((18, 18), Image.BICUBIC))
    assert np.array_equal(a.images[1].permute(1, 2, 0).numpy(), ref)


def test_folder_augmentation_crops_and_flips(tmp_path):
    _write_layout(tmp_path)
    s = data.load(f"folder:{tmp_path}/A", "train", resolution=16, load_size=20)
    assert s.images.shape == (3, 3, 20, 20)
    g = torch.Generator().manual_seed(0)
    idx = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    x = s.batch(idx, g)
    assert x.shape == (12, 3, 16, 16)
    seen_flip = seen_plain = False
    offsets = set()
    for k, i in enumerate(idx.tolist()):
        img = s.images[i].float() / 127.5 - 1.0
        match = None
        for t in range(5):
            for l in range(5):
                crop = img[:, t:t + 16, l:l + 16]
                if torch.equal(x[k], crop):
                    match = ("plain", t, l)
                elif torch.equal(x[k], crop.flip(-1)):
                    match = ("flip", t, l)
        assert match is not None, f"batch item {k} is not a crop of image {i}"
        seen_flip |= match[0] == "flip"
        seen_plain |= match[0] == "plain"
        offsets.add(match[1:])
    assert seen_flip and seen_plain and len(offsets) > 2
    # same generator state -> same batch
    assert torch.equal(x, s.batch(idx, torch.Generator().manual_seed(0)))
    # without a generator: the centre crop, no flip
    centre = s.batch([1])
    assert torch.equal(centre[0], s.images[1, :, 2:18, 2:18].float() / 127.5 - 1.0)
    assert s.all().shape == (3, 3, 16, 16)


def test_folder_missing_and_empty_errors(tmp_path):
    with pytest.raises(DataError) as e:
        data.load(f"folder:{tmp_path}/nothing/A")
    msg = str(e.value)
    assert str(tmp_path / "nothing" / "trainA") in msg and "testB" in msg and "horse2zebra" in msg
    (tmp_path / "empty" / "trainA").mkdir(parents=True)
    (tmp_path / "empty" / "trainA" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="holds no image files") as e:
        data.load(f"folder:{tmp_path}/empty/A")
    assert str(tmp_path / "empty" / "trainA") in str(e.value)
    with pytest.raises(DataError, match="folder:PATH/A"):
        data.load(f"folder:{tmp_path}/empty")


def test_folder_unreadable_image(tmp_path):
    d = tmp_path / "trainA"
    d.mkdir()
    (d / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="broken.png"):
        data.load(f"folder:{tmp_path}/A", resolution=16)


# --------------------------------------------------------------------------- torchvision sets: errors only


def test_cifar10_and_stl10_missing_root(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py") as e:
        data.load("cifar10")
    assert "download" in str(e.value)
    with pytest.raises(DataError) as e:
        data.load("cifar10", root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(e.value) and "download=True" in str(e.value)
    with pytest.raises(DataError, match="stl10_binary"):
        data.load("stl10", split="unlabeled", root=tmp_path)
    with pytest.raises(DataError, match="unlabeled"):
        data.load("stl10", split="everything", root=tmp_path)


def test_cifar10_corrupt_root_is_a_data_error(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"garbage")
    with pytest.raises(DataError, match="could not read"):
        data.load("cifar10", root=tmp_path)


def test_bad_arguments():
    with pytest.raises(DataError, match="unknown data set 'mnist'"):
        data.load("mnist")
    with pytest.raises(DataError, match="resolution"):
        data.load("digits", resolution=4)
    with pytest.raises(DataError, match="'train' and 'test'"):
        data.load("digits", split="val")
    with pytest.raises(DataError, match="load_size"):
        data.load("digits", augment=True, load_size=16)
    with pytest.raises(DataError, match="uint8"):
        ImageSet(torch.zeros(2, 3, 8, 8), name="x")
    with pytest.raises(DataError, match="resolution is 4"):
        ImageSet(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), name="x", resolution=4)
    assert issubclass(DataError, ValueError)


def test_subset_stack_and_to():
    s = data.load("digits", "test")
    sub = s.subset([5, 1])
    assert torch.equal(sub.images, s.images[[5, 1]]) and torch.equal(sub.labels, s.labels[[5, 1]])
    assert torch.equal(sub.source_index, s.source_index[[5, 1]])
    both = data.stack_sets([s, data.load("digits-m", "test")])
    assert len(both) == 600 and both.labels.shape == (600,)
    moved = s.to("cpu")
    assert torch.equal(moved.batch([0, 1]), s.batch([0, 1]))
    assert "digits" in repr(s) and "n=300" in repr(s)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_on_cuda_matches_cpu(tmp_path):
    _write_layout(tmp_path)
    s = data.load(f"folder:{tmp_path}/A", "train", resolution=16, load_size=20)
    gpu = s.to("cuda")
    idx = torch.tensor([0, 2, 1])
    a = s.batch(idx, torch.Generator().manual_seed(3))
    b = gpu.batch(idx, torch.Generator().manual_seed(3))
    assert b.is_cuda and torch.equal(a, b.cpu())
