"""Tests for lthgan.metrics: torch-fidelity FID/IS/KID with the digits and Inception extractors."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from lthgan import data, metrics
from lthgan.metrics import DigitsClassifier, MetricsError


@pytest.fixture(scope="module")
def digits_test():
    return data.load("digits", "test")


@pytest.fixture(scope="module")
def digits_train():
    return data.load("digits", "train")


@pytest.fixture(scope="module")
def digits_m_test():
    return data.load("digits-m", "test")


def _blur(x: torch.Tensor, k: int = 5) -> torch.Tensor:
    w = torch.ones(3, 1, k, k) / (k * k)
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="replicate"), w, groups=3)


def _noise(n: int, seed: int) -> torch.Tensor:
    return torch.rand((n, 3, 32, 32), generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --------------------------------------------------------------------------- the classifier


def test_bundled_weights_are_small_safetensors():
    assert metrics.DIGITS_WEIGHTS.is_file()
    assert metrics.DIGITS_WEIGHTS.stat().st_size < 1_000_000
    from safetensors import safe_open

    with safe_open(str(metrics.DIGITS_WEIGHTS), "pt") as f:
        meta = f.metadata()
    assert meta["trained_by"] == "scripts/train_digits_classifier.py"


def test_classifier_accuracy_both_domains(digits_test, digits_m_test):
    for s in (digits_test, digits_m_test):
        pred = metrics.classify(s.all())
        assert pred.dtype == torch.long and pred.shape == (len(s),)
        assert float((pred == s.labels).float().mean()) >= 0.95


def test_domain_head_tells_the_domains_apart(digits_test, digits_m_test):
    net = metrics.load_digits_classifier()
    for domain, s in enumerate((digits_test, digits_m_test)):
        with torch.no_grad():
            pred = net.domain_logits(s.all()).argmax(1)
        assert float((pred == domain).float().mean()) >= 0.95, DigitsClassifier.DOMAINS[domain]


def test_fid_sees_the_domain(digits_test, digits_train, digits_m_test):
    # A CycleGAN that copies its digits input instead of translating it must score far worse
    # against digits-m than real digits-m images do, and than real digits do against digits.
    same_domain = metrics.evaluate(digits_train.all()[:300], digits_test.all(), isc=False, kid=False)
    m_train = data.load("digits-m", "train")
    m_same = metrics.evaluate(m_train.all()[:300], digits_m_test.all(), isc=False, kid=False)
    untranslated = metrics.evaluate(digits_test.all(), digits_m_test.all(), isc=False, kid=False)
    assert untranslated["fid"] > 10 * max(same_domain["fid"], m_same["fid"])


def test_classify_matches_plain_forward(digits_m_test):
    net = metrics.load_digits_classifier()
    x = digits_m_test.all()[:40]
    with torch.no_grad():
        ref = net(x).argmax(1)
    assert torch.equal(metrics.classify(x, batch_size=7), ref)
    # uint8 input and other resolutions are accepted
    assert torch.equal(metrics.classify(digits_m_test.images[:40]), ref)
    big = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    assert float((metrics.classify(big) == ref).float().mean()) > 0.9


def test_label_kept(digits_test):
    x, y = digits_test.all(), digits_test.labels
    assert metrics.label_kept(x, y) >= 0.95
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    assert 0.0 <= metrics.label_kept(x, shuffled) <= 0.25
    noise = _noise(len(y), 1)
    assert metrics.label_kept(noise, y) <= 0.3
    with pytest.raises(MetricsError, match=r"shape \(300,\)"):
        metrics.label_kept(x, y[:10])
    with pytest.raises(MetricsError, match="0..9"):
        metrics.label_kept(x[:2], torch.tensor([3, 11]))


# --------------------------------------------------------------------------- FID / IS / KID, digits


def test_fid_sanity_ordering(digits_test, digits_train):
    real = digits_test.all()
    same = metrics.evaluate(real, real, isc=False, kid=False)
    other_real = metrics.evaluate(digits_train.all()[:300], real, isc=False, kid=False)
    blurred = metrics.evaluate(_blur(real), real, isc=False, kid=False)
    noise = metrics.evaluate(_noise(len(real), 2), real, isc=False, kid=False)
    assert abs(same["fid"]) < 1e-2
    assert other_real["fid"] < blurred["fid"] < noise["fid"]
    assert noise["fid"] > 20 * max(other_real["fid"], 1e-3)
    for r in (same, blurred, noise):
        assert r["is_mean"] is None and r["kid_mean"] is None


def test_fid_equals_reference_on_classifier_features(digits_test, digits_m_test):
    fake, real = digits_m_test.all()[:200], digits_test.all()
    res = metrics.evaluate(fake, real, isc=False, kid=False)
    net = metrics.load_digits_classifier()

    def feats(x):  # the uint8 round trip torch-fidelity sees, then the penultimate layer
        u8 = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        with torch.no_grad():
            return net.features(u8.float() / 127.5 - 1).double().numpy()

    f1, f2 = feats(fake), feats(real)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    ref = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert res["fid"] == pytest.approx(ref, rel=1e-3, abs=1e-3)


def test_full_result_records_extractor_and_settings(digits_test, digits_train):
    real = digits_test.all()
    fake = digits_train.all()[:320]
    res = metrics.evaluate(fake, real)
    assert res["extractor"] == "digits" and res["feature_extractor"] == "lthgan-digits"
    assert res["extractor_weights"].startswith("sha256:")
    assert res["n_fake"] == 320 and res["n_real"] == 300
    assert res["kid_subset_size"] == 150 and res["isc_splits"] == 10
    assert res["feature_layer_fid"] == "128" and res["feature_layer_isc"] == "logits"
    assert res["is_mean"] > 5.0 and res["is_std"] >= 0
    assert abs(res["kid_mean"]) < 0.05 and res["kid_std"] > 0  # subsets differ: a real spread
    for k in ("fid", "is_mean", "is_std", "kid_mean", "kid_std"):
        assert isinstance(res[k], float) and np.isfinite(res[k])
    import json

    json.dumps(res)
    # one class only: IS near 1, far below the all-classes score
    ones = digits_test.all()[digits_test.labels == 1]
    single = metrics.evaluate(ones, real, kid=False)
    assert 1.0 <= single["is_mean"] < 2.0
    noisy = metrics.evaluate(_noise(300, 4), real, isc=False)
    assert noisy["kid_mean"] > 10 * abs(res["kid_mean"]) + 0.01


def test_small_sets_pick_kid_subset_and_splits(digits_test):
    real = digits_test.all()
    res = metrics.evaluate(real[:6], real[:50], batch_size=4)
    assert res["kid_subset_size"] == 3 and res["isc_splits"] == 6 and res["n_fake"] == 6


def test_check_comparable(digits_test):
    real = digits_test.all()
    a = metrics.evaluate(real[:50], real, isc=False, kid=False)
    assert metrics.check_comparable([a, dict(a)]) == "digits"
    other = dict(a, extractor="inception", extractor_weights="sha256:0123")
    with pytest.raises(MetricsError, match="not comparable"):
        metrics.check_comparable([a, other])
    with pytest.raises(MetricsError, match="does not record"):
        metrics.check_comparable([a, {"fid": 1.0}])


def test_bad_inputs(digits_test):
    real = digits_test.all()[:20]
    with pytest.raises(MetricsError, match="unknown extractor 'vgg'"):
        metrics.evaluate(real, real, extractor="vgg")
    bad = real.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(MetricsError, match="NaN"):
        metrics.evaluate(bad, real)
    with pytest.raises(MetricsError, match=r"\[N, 3, H, W\]"):
        metrics.evaluate(real[:, :2], real)
    with pytest.raises(MetricsError, match="at least 2"):
        metrics.evaluate(real[:1], real)
    with pytest.raises(MetricsError, match="kid_subset_size"):
        metrics.evaluate(real, real, kid_subset_size=50)
    with pytest.raises(MetricsError, match="inception_weights only applies"):
        metrics.evaluate(real, real, inception_weights="x.pth")
    with pytest.raises(MetricsError, match="feature_layer"):
        metrics.evaluate(real, real, feature_layer="2048")
    assert issubclass(MetricsError, ValueError)


def test_registered_with_torch_fidelity():
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    cls = metrics.register_with_torch_fidelity()
    assert FEATURE_EXTRACTORS_REGISTRY["lthgan-digits"] is cls
    fe = cls("lthgan-digits", ["128", "logits"])
    x = (torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    f, logits = fe(x)
    net = metrics.load_digits_classifier()
    with torch.no_grad():
        ref_f = net.features(x.float() / 127.5 - 1)
    assert f.shape == (3, DigitsClassifier.NUM_FEATURES) and logits.shape == (3, 10)
    assert torch.allclose(f, ref_f, atol=1e-5)
    assert torch.allclose(logits, net.fc(ref_f), atol=1e-5)


# --------------------------------------------------------------------------- Inception path (no download)


def _random_inception_file(path, seed=0):
    """The real torch-fidelity Inception-v3 architecture with random (scale-preserving) weights."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    mp = pytest.MonkeyPatch()
    try:
        # build the architecture without fetching or loading anything
        mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        mp.undo()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
    torch.save(net.state_dict(), path)
    return path


def _forbid_downloads(monkeypatch):
    import torch.hub
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    def fail(*a, **k):
        pytest.fail("tried to download Inception weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    monkeypatch.setattr(fe, "load_state_dict_from_url", fail)


def test_inception_path_with_weights_file(tmp_path, monkeypatch, digits_m_test):
    import hashlib

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))   # an empty cache: nothing to fall back on
    _forbid_downloads(monkeypatch)
    weights = _random_inception_file(tmp_path / "inception.pth")
    x = digits_m_test.all()
    # "64" keeps torch-fidelity's FID eigen-solve small; IS still runs the whole network to the logits
    res = metrics.evaluate(x[:4], x[4:8], extractor="inception", inception_weights=weights,
                           feature_layer="64", device="cpu")
    assert res["extractor"] == "inception" and res["feature_extractor"] == "inception-v3-compat"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    assert res["extractor_weights"] == f"sha256:{digest}"
    assert res["feature_layer_fid"] == "64" and res["feature_layer_isc"] == "logits_unbiased"
    assert np.isfinite(res["fid"]) and res["fid"] > 0
    assert np.isfinite(res["is_mean"]) and res["is_mean"] >= 1.0
    assert res["kid_subset_size"] == 2 and np.isfinite(res["kid_mean"])
    # numbers from the two extractors are never put side by side
    dig = metrics.evaluate(x[:4], x[4:8], isc=False, kid=False)
    with pytest.raises(MetricsError, match="not comparable"):
        metrics.check_comparable([res, dig])


def test_inception_offline_without_file_says_where_to_put_it(tmp_path, monkeypatch, digits_test):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    _forbid_downloads(monkeypatch)
    x = digits_test.all()[:8]
    with pytest.raises(MetricsError) as e:
        metrics.evaluate(x, x, extractor="inception")
    msg = str(e.value)
    expected = metrics.inception_cache_path()
    assert str(tmp_path / "torch_home") in str(expected)
    assert str(expected) in msg
    assert "https://github.com/toshas/torch-fidelity/releases/" in msg
    assert "inception_weights=FILE" in msg


def test_inception_bad_weights_files(tmp_path, digits_test):
    x = digits_test.all()[:8]
    with pytest.raises(MetricsError, match="does not exist"):
        metrics.evaluate(x, x, extractor="inception", inception_weights=tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.randn(3, 3)}, wrong)
    with pytest.raises(MetricsError, match="not torch-fidelity's Inception-v3"):
        metrics.evaluate(x, x, extractor="inception", inception_weights=wrong)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(MetricsError, match="junk.pth is not a PyTorch weights file .*expected torch-fidelity's Inception-v3"):
        metrics.evaluate(x, x, extractor="inception", inception_weights=junk)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(digits_test, digits_m_test):
    a = metrics.evaluate(digits_m_test.all(), digits_test.all(), device="cpu", kid=False)
    b = metrics.evaluate(digits_m_test.all(), digits_test.all(), device="cuda", kid=False)
    assert b["fid"] == pytest.approx(a["fid"], rel=1e-3)
    assert b["is_mean"] == pytest.approx(a["is_mean"], rel=1e-3)


@pytest.mark.slow
def test_trained_generator_scores_better_than_untrained():
    gans = pytest.importorskip("lthgan.gans")
    # a tiny SNGAN at 16x16 (the classifier upsamples to 32): 30 iterations already halve the FID
    cfg = gans.SNGANConfig(resolution=16, z_dim=16, g_channels=8, d_channels=8, g_blocks=2, g_batch=16,
                           d_batch=16, n_dis=1, iterations=30, ema=0.8, lr_g=2e-3, lr_d=2e-3)
    train, test = data.load("digits", "train", resolution=16), data.load("digits", "test", resolution=16)
    task = gans.build("sngan", cfg, seed=0)
    untrained = gans.eval_pairs(task, {"G": task.models["G"]}, test, 200, seed=0)[0]
    trainer = gans.make_trainer(task, train, iterations=cfg.iterations, seed=0)
    for _ in range(cfg.iterations):
        trainer.step()
    trained = gans.eval_pairs(task, trainer.eval_models(), test, 200, seed=0)[0]
    before = metrics.evaluate(untrained.fake, untrained.real, kid=False)
    after = metrics.evaluate(trained.fake, trained.real, kid=False)
    assert after["fid"] < 0.75 * before["fid"]
    assert after["is_mean"] > before["is_mean"]
