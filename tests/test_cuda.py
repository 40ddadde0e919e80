"""Checks that need a CUDA GPU (marked ``cuda``; skipped elsewhere). benchmarks/gpu_check.sh runs them."""
import pytest
import torch

from engines.base import cuda_amp_dtype
from engines.registry import get_engine

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SMALL = {"dcgan": {"g_width": 16, "d_width": 16, "z_dim": 32},
         "stylegan2_ada": {"channel_base": 1024, "channel_max": 64, "z_dim": 32, "w_dim": 32, "mapping_layers": 2},
         "projected_gan": {"ngf": 8, "z_dim": 32}}


def test_amp_follows_the_card():
    major, _ = torch.cuda.get_device_capability(0)
    want = torch.bfloat16 if major >= 8 else torch.float16
    assert cuda_amp_dtype(torch.device("cuda", 0)) == want
    e = get_engine("dcgan")(SMALL["dcgan"], 32).setup(torch.device("cuda", 0), amp=True)
    assert e.amp_dtype == want
    assert all(s.is_enabled() == (want == torch.float16) for s in e.scalers.values())


@pytest.mark.parametrize("name", list(SMALL))
def test_gpu_samples_match_cpu_samples(name):
    """An export trained anywhere samples the same pictures on CPU and GPU (fp32 sampling)."""
    size = 64
    torch.manual_seed(0)
    cpu = get_engine(name)(SMALL[name], size, training=False)
    gpu = get_engine(name)(SMALL[name], size, training=False)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    a, b = cpu.sample(n=4, seed=3), gpu.sample(n=4, seed=3).cpu()
    assert torch.allclose(a, b, atol=2e-3), (a - b).abs().max()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(SMALL))
def test_mixed_precision_steps_stay_finite(name, dtype):
    if dtype == torch.bfloat16 and torch.cuda.get_device_capability(0)[0] < 8:
        pytest.skip("no native bf16 on this card")
    torch.manual_seed(0)
    from engines.augment import build_augment

    cls = get_engine(name)
    e = cls(SMALL[name], 64).setup(torch.device("cuda", 0), augment=build_augment(cls.default_augment),
                                  amp_dtype=dtype)
    x = torch.rand(8, 3, 64, 64, device="cuda") * 2 - 1
    for _ in range(5):
        out = e.train_step(x)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in out.values())
    assert all(torch.isfinite(p).all() for p in e.parameters())


def test_trainer_run_on_cuda_records_its_precision(tmp_path):
    import types

    from engines.config import TrainConfig
    from engines.runs.folder import read_info
    from engines.trainer import Trainer

    imgs = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    ds = types.SimpleNamespace(images=imgs, key="k", name="tiny", source="/nowhere", skipped=[], background="white")
    cfg = TrainConfig(image_size=32, batch_size=8, epochs=2, sample_every=2, eval_every=0, grid_n=4,
                      device="cuda", engine=dict(SMALL["dcgan"]))
    info = read_info(Trainer("dcgan", ds, tmp_path, cfg, progress=False).fit())
    assert info["status"] == "finished" and info["device"].startswith("cuda")
    assert info["amp"] in ("bfloat16", "float16")
