import os
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
os.environ.setdefault("TORCH_HOME", str(SHARED / "torch-home"))
os.environ.setdefault("POKELAB_CACHE", str(ROOT / ".pytest_cache" / "pokelab-cache"))


@pytest.fixture
def tiny_dataset():
    """40 random 32 px images with the attributes the trainer reads (a stand-in for PreparedDataset)."""
    import torch

    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (40, 3, 32, 32), generator=g, dtype=torch.uint8)
    return types.SimpleNamespace(images=imgs, key="tiny-key", name="tiny", source="/nowhere", skipped=[],
                                 background="white")


@pytest.fixture
def pokemon_dir():
    d = SHARED / "datasets" / "pokemon" / "dreamworld-256"
    if not d.is_dir():
        pytest.skip("shared Pokémon images not available")
    return d


def pytest_configure(config):
    # Tiny nets: one intra-op thread is faster than two fighting over a shared 2-core machine.
    import torch

    torch.set_num_threads(1)
