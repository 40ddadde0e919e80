"""GPU habits every engine shares (engines/base.py): cuDNN autotuning, TF32 off for gradient penalties, no
weight gradients for D in G steps, no host syncs in WGAN-GP's schedule. CUDA is faked where needed."""
import pytest
import torch

from engines.base import frozen, no_tf32
from engines.generate.aegan import AEGAN
from engines.generate.dcgan import DCGAN
from engines.generate.wgan_gp import WGANGP


def _tiny(cls, **cfg):
    torch.manual_seed(0)
    e = cls({"g_width": 8, "d_width": 8, "z_dim": 8, **cfg}, 32)
    return e.setup(torch.device("cpu"))


def test_setup_turns_on_cudnn_benchmark_on_cuda_only(monkeypatch):
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        e = _tiny(DCGAN)
        assert torch.backends.cudnn.benchmark is False  # a CPU run leaves it alone
        monkeypatch.setattr(e, "to", lambda *a, **k: e)  # fake CUDA: nothing really moves
        e.setup(torch.device("cuda", 0))
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before


def test_no_tf32_saves_and_restores_both_flags():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        for matmul, cudnn in ((True, True), (True, False), (False, True)):
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
            with no_tf32():
                assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (matmul, cudnn)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with pytest.raises(RuntimeError), no_tf32():
            raise RuntimeError("boom")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # also after an error
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_frozen_restores_only_what_it_froze():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    net[0].requires_grad_(False)  # a pretrained part that must stay frozen
    with frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == [False, False, True, True]


def test_wgan_gp_penalty_runs_without_tf32(monkeypatch):
    import engines.generate.wgan_gp as wgan

    e = _tiny(WGANGP)
    seen = []
    real_gp = wgan.gradient_penalty

    def gp(*a, **k):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return real_gp(*a, **k)
    monkeypatch.setattr(wgan, "gradient_penalty", gp)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        e.train_step(torch.rand(4, 3, 32, 32) * 2 - 1)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    assert seen == [(False, False)]


def _d_nets(e):
    return [e.Dx, e.Dz] if isinstance(e, AEGAN) else [e.D]


@pytest.mark.parametrize("cls,cfg", [(DCGAN, {}), (WGANGP, {"n_critic": 1}), (AEGAN, {"e_width": 8})])
def test_d_gets_no_weight_gradients_in_g_steps(monkeypatch, cls, cfg):
    e = _tiny(cls, **cfg)
    phase, grads = [None], []
    for net in _d_nets(e):
        for p in net.parameters():
            p.register_hook(lambda g: grads.append(phase[0]))
    optimize = e.optimize

    def opt(name, loss):
        phase[0] = name
        optimize(name, loss)
        phase[0] = None
    monkeypatch.setattr(e, "optimize", opt)
    for _ in range(2):
        e.train_step(torch.rand(4, 3, 32, 32) * 2 - 1)
    assert "D" in grads and "G" not in grads
    assert all(p.requires_grad for net in _d_nets(e) for p in net.parameters())  # D trains again next step


class _NoHostSync(torch.Tensor):
    """A buffer that refuses to be read on the host (int(), .item()): a stand-in for a CUDA sync."""

    def __int__(self):
        raise AssertionError("the step read the counter on the host (a device sync on CUDA)")

    __index__ = __int__

    def item(self):
        raise AssertionError("the step read the counter on the host (a device sync on CUDA)")


def test_wgan_gp_schedule_needs_no_host_sync():
    e = _tiny(WGANGP, n_critic=3)
    e.critic_steps = torch.zeros((), dtype=torch.long).as_subclass(_NoHostSync)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    outs = [e.train_step(x) for _ in range(3)]
    assert float(outs[1]["loss/G"]) == 0.0 and float(outs[2]["loss/G"]) != 0.0  # G stepped at the 3rd step
    assert e._critic_steps == 3 and int(e.critic_steps.as_subclass(torch.Tensor)) == 3
    # the Python mirror is read back from the checkpointed buffer
    f = _tiny(WGANGP, n_critic=3)
    state = e.state_dict_full()
    state["modules"]["critic_steps"] = state["modules"]["critic_steps"].as_subclass(torch.Tensor)
    f.load_state_dict_full(state)
    assert f._critic_steps == 3
