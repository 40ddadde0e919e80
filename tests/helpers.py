"""Shared test helpers (importable as `helpers`: pytest puts tests/ on sys.path)."""
import torch


class Killed(Exception):
    """Stands in for kill -9: the process dies inside a step and nothing more gets saved."""


def on_nth_step(engine, n, *, before=None, after=None):
    """Wrap ``engine.train_step``: call ``before()`` before the n-th step and pass that step's output
    through ``after(out)``. Counting starts at 1 across epochs."""
    real = engine.train_step
    calls = {"n": 0}

    def step(batch):
        calls["n"] += 1
        hit = calls["n"] == n
        if hit and before is not None:
            before()
        out = real(batch)
        return after(out) if hit and after is not None else out

    engine.train_step = step


def kill_at_step(engine, n):
    def die():
        raise Killed()

    on_nth_step(engine, n, before=die)


def blobs(n=8, size=32, seed=1, square=False, r_spread=0.5):
    """Coloured discs (or squares) on a tinted background, in [-1, 1]: structured pictures a tiny net
    learns quickly."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        colour = torch.rand(3, 1, 1, generator=g) * 2 - 1
        cx, cy = (torch.rand(2, generator=g) - 0.5).tolist()
        r = 0.3 + r_spread * float(torch.rand(1, generator=g))
        if square:
            inside = torch.maximum((xx - cx).abs(), (yy - cy).abs()) < r
        else:
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        out.append(torch.where(inside.expand(3, size, size), colour, -0.5 * colour))
    return torch.stack(out)


def checkpoint_round_trip(engine):
    """What the trainer does with an engine's state: torch.save it and load it back with weights_only=True."""
    import io

    buf = io.BytesIO()
    torch.save(engine.state_dict_full(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# a flat colour per type, so a conditional net has something to learn on 16 px pictures
TYPE_RGB = {"Fire": (230, 40, 30), "Water": (30, 60, 230), "Grass": (40, 200, 60), "Grass|Poison": (40, 200, 60)}


def labelled_set(root, types, n, columns=(), values=lambda i: (), extra_rows=()):
    """``root/pics/1..n.png`` (picture i of type ``types[i % len(types)]``) and ``root/species.csv``
    (``id,name,types`` plus ``columns`` filled by ``values(i)``, then ``extra_rows``), loaded as a labelled
    16 px dataset on the ``types`` column."""
    import numpy as np
    from PIL import Image

    from engines.data.prepare import load_dataset
    from engines.labels import load_labels

    d = root / "pics"
    d.mkdir()
    rows = [",".join(["id", "name", "types", *columns])]
    for i in range(1, n + 1):
        t = types[i % len(types)]
        Image.fromarray(np.full((16, 16, 3), TYPE_RGB[t], np.uint8)).save(d / f"{i}.png")
        rows.append(",".join([str(i), f"mon{i}", t, *values(i)]))
    (root / "species.csv").write_text("\n".join([*rows, *extra_rows]) + "\n")
    ds = load_dataset(d, size=16, cache_dir=root / "cache", progress=False)
    return load_labels(ds, root / "species.csv", "types")
