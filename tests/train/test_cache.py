from __future__ import annotations

import numpy as np
import torch

from scenetag.data import load_dataset
from scenetag.data.images import open_image
from scenetag.data.preprocessing import Preprocessing
from scenetag.data.transforms import image_seed, make_views
from scenetag.models import build_model
from scenetag.train.cache import Trunk, TrunkRunner, build_cache



def _tiny_model():
    torch.manual_seed(0)
    return build_model("test_efficientnet", "none", 5, "reference", 0.5)


def test_cached_gradients_equal_uncached(synth_dir, tmp_path):
    ds = load_dataset(synth_dir).subset(range(8))
    model = _tiny_model()
    pp = Preprocessing(size=48)
    k = model.boundary_for_fraction(0.5)
    cache = build_cache(model, {"t": 1}, ds, ["orig", "flip"], [k], pp, seed=0, cache_dir=tmp_path / "c", batch_size=8, engine="torch", dtype="float32", progress=False)
    views = torch.stack([make_views(open_image(p), ["orig", "flip"], pp, image_seed(0, i)) for i, p in enumerate(ds.paths)])
    x_pix = views[:, 1]
    x_act = cache.get(k, np.arange(8), 1)
    y = torch.from_numpy(ds.labels).float()
    model.freeze_until(k)
    model.train()
    grads = []
    for fwd in (lambda: model(x_pix), lambda: model.forward_from(k, x_act)):
        model.zero_grad()
        torch.manual_seed(1)  # same dropout masks
        torch.nn.functional.binary_cross_entropy_with_logits(fwd(), y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


def test_cache_is_reused_and_rebuilt_when_damaged(synth_dir, tmp_path, caplog):
    caplog.set_level("INFO")
    ds = load_dataset(synth_dir).subset(range(6))
    model = _tiny_model()
    pp = Preprocessing(size=32)
    args = dict(model=model, model_id={"t": 1}, ds=ds, kinds=["orig"], taps=[len(model.pieces())], pp=pp, seed=0, cache_dir=tmp_path, batch_size=4, engine="torch", progress=False)
    a = build_cache(**args)
    b = build_cache(**args)
    assert a.key == b.key and "reusing" in caplog.text
    f = next(tmp_path.glob(f"{a.key}-*.npy"))
    f.write_bytes(f.read_bytes()[:-10])
    c = build_cache(**args)
    assert "damaged" in caplog.text
    np.testing.assert_array_equal(a.acts[len(model.pieces())], c.acts[len(model.pieces())])
    d = build_cache(**(args | {"kinds": ["flip"]}))
    assert d.key != a.key  # a different view recipe never reuses a stale cache


def test_onnx_engine_matches_torch():
    model = _tiny_model().eval()
    taps = [2, len(model.pieces())]
    x = torch.randn(3, 3, 48, 48)
    ort_out = TrunkRunner(Trunk(model, taps), "onnx", sample=x)(x)
    torch_out = TrunkRunner(Trunk(model, taps), "torch")(x)
    for a, b in zip(ort_out, torch_out):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_big_cache_goes_to_memory_mapped_file(synth_dir, tmp_path):
    ds = load_dataset(synth_dir).subset(range(6))
    model = _tiny_model()
    args = dict(model=model, model_id={"t": 1}, ds=ds, kinds=["orig", "flip"], taps=[2, len(model.pieces())], pp=Preprocessing(size=32), seed=0, cache_dir=tmp_path, batch_size=4, engine="torch", progress=False)
    small = build_cache(**args, in_memory_gb=0.0)  # nothing fits in memory
    assert all(isinstance(a, np.memmap) for a in small.acts.values())
    big = build_cache(**(args | {"cache_dir": None}), in_memory_gb=4.0)
    for tap in small.acts:
        assert not isinstance(big.acts[tap], np.memmap)
        np.testing.assert_array_equal(np.asarray(small.acts[tap]), big.acts[tap])
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


