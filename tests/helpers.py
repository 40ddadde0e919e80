"""Shared test helpers (importable as `helpers`: pytest puts tests/ on sys.path)."""


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
