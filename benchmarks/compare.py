"""Two consistency results over the same orders, compared order by order.

The pipeline is chaotic: one more decision early in a stream changes what is asked later,
so a set's mean ARI moves by a few hundredths between two variants for reasons unrelated
to either. `consistency.py` shuffles with fixed seeds, so two result files hold the same
orders, and each order's (and each pair of orders') figure can be compared with its own
counterpart. This prints, per row, the mean difference and its standard error; a
difference under about two standard errors is not one.

```bash
.venv/bin/python benchmarks/compare.py before.json after.json
```
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

FIGURES = ("ari", "labels", "llm_calls", "order_pairs_ari")


def paired(before: list[float], after: list[float]) -> tuple[float, float] | None:
    """(mean of after - before, its standard error); None without two pairs."""
    if len(before) != len(after) or len(before) < 2:
        return None
    diffs = [b - a for a, b in zip(before, after, strict=True)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return mean, math.sqrt(var / len(diffs))


def rows(result: dict) -> dict[tuple, dict]:
    """Per-order figures by (data, error rate, error kind, strategy)."""
    out = {}
    for run in result["runs"]:
        for name, figures in run["strategies"].items():
            key = (run["data"], run.get("error_rate"), run.get("error_kind"), name)
            out[key] = figures.get("per_order", {})
    return out


def compare(before: dict, after: dict) -> list[str]:
    """One line per row both results hold: each figure's paired difference."""
    lines = []
    old, new = rows(before), rows(after)
    for key in [k for k in old if k in new]:
        cells = []
        for figure in FIGURES:
            found = paired(old[key].get(figure, []), new[key].get(figure, []))
            if found is None:
                cells.append(f"{figure} –")
                continue
            mean, se = found
            digits = 1 if figure in ("labels", "llm_calls") else 4
            sure = "*" if se and abs(mean) >= 2 * se else ""
            cells.append(f"{figure} {mean:+.{digits}f} ± {se:.{digits}f}{sure}")
        lines.append(f"{' '.join(str(k) for k in key)}: " + "; ".join(cells))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args()
    found = compare(json.loads(args.before.read_text()), json.loads(args.after.read_text()))
    print("\n".join(found) or "no row of the two results holds per-order figures")
    print("(* : at least two standard errors from zero)")


if __name__ == "__main__":
    main()
