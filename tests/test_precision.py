"""Mixed precision choices and gradient hygiene shared by every engine (engines/base.py)."""
import pytest
import torch

from engines.base import clean_gradients, cuda_amp_dtype
from engines.generate.dcgan import DCGAN


@pytest.mark.parametrize("capability,dtype", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                              ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_bf16_only_on_native_bf16_gpus(monkeypatch, capability, dtype):
    # is_bf16_supported() says yes on a T4 (7.5) through emulation: the capability decides, not it
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert cuda_amp_dtype(torch.device("cuda", 0)) == dtype


def tiny():
    torch.manual_seed(0)
    e = DCGAN({"g_width": 8, "d_width": 8, "z_dim": 8}, 32)
    e.setup(torch.device("cpu"))
    return e


def test_one_loss_scaler_per_optimiser():
    e = tiny()
    assert set(e.scalers) == {"D", "G"} and not any(s.is_enabled() for s in e.scalers.values())
    e.scalers = {k: torch.amp.GradScaler("cpu", init_scale=1024.0) for k in e.optimizers}
    before = {n: p.clone() for n, p in e.D.named_parameters()}
    loss = sum(p.sum() for p in e.D.parameters()) * float("inf")
    e.optimize("D", loss)
    assert e.scalers["D"].get_scale() == 512.0 and e.scalers["G"].get_scale() == 1024.0
    assert all(torch.equal(before[n], p) for n, p in e.D.named_parameters())  # the step was skipped
    state = e.state_dict_full()
    f = tiny()
    f.scalers = {k: torch.amp.GradScaler("cpu", init_scale=1.0) for k in f.optimizers}
    f.load_state_dict_full(state)
    assert f.scalers["D"].get_scale() == 512.0 and f.scalers["G"].get_scale() == 1024.0


def test_inf_gradient_does_not_poison_adam():
    e = tiny()
    w = next(e.G.parameters())
    loss = (w * torch.where(torch.arange(w.numel()).view_as(w) == 0, float("inf"), 1.0)).sum()
    e.optimize("G", loss)
    assert torch.isfinite(w).all()
    for st in e.optimizers["G"].state.values():
        assert torch.isfinite(st["exp_avg"]).all() and torch.isfinite(st["exp_avg_sq"]).all()


def test_clean_gradients_maps_nan_and_inf():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([float("nan"), float("inf"), -float("inf")])
    opt = torch.optim.SGD([p], lr=1.0)
    clean_gradients(opt)
    assert p.grad.tolist() == [0.0, 1e5, -1e5]


def test_checkpoints_with_one_shared_scaler_still_load():
    e = tiny()
    state = e.state_dict_full()
    old = {**state, "scaler": torch.amp.GradScaler("cpu", init_scale=64.0).state_dict()}
    old.pop("scalers")
    f = tiny()
    f.load_state_dict_full(old)  # a disabled scaler state loads without complaint
