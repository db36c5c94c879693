"""The benchmarks' one results table: every module prints its rows through `row`, and
scripts/bench.py writes them out (`--json`). A module of its own so that no benchmark imports
the runner that imports it."""

from collections.abc import Callable

Row = Callable[[str, float | str, float | str, str], None]
ROWS: list[tuple[str, str, str, str]] = []
HEADER = f"{'figure':<46} {'platform':>12} {'baseline':>12} {'ratio':>10}"


def row(figure: str, ours: float | str, baseline: float | str, ratio: str) -> None:
    """Record and print one line of the results table."""
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    ROWS.append((figure, fmt(ours), fmt(baseline), ratio))
    print(f"{figure:<46} {fmt(ours):>12} {fmt(baseline):>12} {ratio:>10}", flush=True)
