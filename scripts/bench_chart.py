"""The results table as a picture: every figure as the ratio of the platform's value to its
baseline (measured in the same run), one bar each, with the line where they are equal.

    .venv/bin/python scripts/bench_chart.py results.json bench.png [TITLE]   # from --json
    .venv/bin/python scripts/bench.py --chart bench.png               # drawn after the run

matplotlib comes with the `bench` extra (installed here when missing). Figures whose value or
baseline is not a number (a note, "n/a") are left out of the picture, not out of the table.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _number(text: str) -> float | None:
    try:
        return float(text.replace(" ", "").rstrip("x"))
    except ValueError:
        return None


def ratios(rows: list[tuple[str, str, str, str]]) -> list[tuple[str, float]]:
    """(figure, platform / baseline) for every row with two positive numbers."""
    found = []
    for figure, ours, baseline, _ in rows:
        a, b = _number(ours), _number(baseline)
        if a is not None and b is not None and a > 0 and b > 0:
            found.append((figure, a / b))
    return found


def require_matplotlib() -> None:
    """matplotlib, installed with the `bench` extra when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("chart: installing the bench extra (matplotlib)", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[bench]"], check=True
        )


def draw(rows: list[tuple[str, str, str, str]], out: Path, title: str) -> Path:
    """Write the PNG; returns its path."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    bars = ratios(rows)
    if not bars:
        raise SystemExit("chart: no figure with a numeric value and baseline to draw")
    height = 0.45 * len(bars) + 1.5
    fig, ax = plt.subplots(figsize=(11, height))
    names = [name for name, _ in bars][::-1]
    values = [value for _, value in bars][::-1]
    # By position, with the names as labels: two rows may share a name.
    ax.barh(range(len(values)), values, color="#4c72b0")
    ax.set_yticks(range(len(values)), names)
    ax.axvline(1.0, color="black", linewidth=1)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:.2f}x", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("platform / baseline (same run; log scale; what 'better' is depends on the row)")
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    table = [tuple(r) for r in json.loads(Path(sys.argv[1]).read_text())]
    print(draw(table, Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "scripts/bench.py"))  # type: ignore[arg-type]
