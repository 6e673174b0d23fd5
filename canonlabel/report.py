"""Writing evaluation and calibration reports: JSON, Markdown and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = [
    ("acc", "ACC"),
    ("nmi", "NMI"),
    ("ari", "ARI"),
    ("v_measure", "V"),
    ("labels", "labels"),
    ("llm_calls", "LLM calls"),
    ("hit_rate", "hit rate"),
    ("hit_precision", "hit prec."),
    ("router_share", "router"),
    ("audits", "audits"),
    ("order_invariance_ari", "order ARI"),
    ("stable_share", "stable"),
    ("seconds", "s"),
]


def markdown_table(report: dict) -> str:
    strategies = report["strategies"]
    cols = [(k, h) for k, h in COLUMNS if any(k in s for s in strategies.values())]
    lines = ["| strategy | " + " | ".join(h for _, h in cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, s in strategies.items():
        cells = []
        for key, _ in cols:
            value = s.get(key)
            cells.append(
                "–"
                if value is None
                else f"{value:.3f}"
                if isinstance(value, float) and key != "seconds"
                else f"{value:.1f}"
                if isinstance(value, float)
                else str(value)
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_eval_report(report: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    md = [
        f"# canonlabel eval: {report.get('dataset', '')}",
        "",
        f"{report['items']} items, {report['gold_labels']} gold labels, "
        f"LLM `{report.get('llm')}`, embedder `{report.get('embedder')}`, "
        f"repeats {report['repeats']}.",
        "",
        markdown_table(report),
        "",
    ]
    lat = [
        f"- {n}: "
        + ", ".join(
            f"{src} p50 {v['p50_ms']} ms / p95 {v['p95_ms']} ms (n={v['n']})"
            for src, v in s["latency"].items()
        )
        for n, s in report["strategies"].items()
        if s.get("latency")
    ]
    if lat:
        md += ["Latency per source:", "", *lat, ""]
    routed = [_router_line(n, s) for n, s in report["strategies"].items() if s.get("router")]
    if routed:
        md += ["Online router (disagreement with the LLM path, estimated from audits):", ""]
        md += [*routed, ""]
    plots = _plot_curves(report.get("curves", {}), out)
    md += [f"![{p.stem}]({p.name})" for p in plots]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return [out / "report.json", out / "report.md", *plots]


def _router_line(name: str, s: dict) -> str:
    def err(part: dict) -> str:
        if part.get("error") is None:
            return "answers nothing yet"
        return f"error {part['error']:.3f} (95% upper {part['upper_95']:.3f})"

    r = s["router"]
    line = (
        f"- {name}: router answered {s['router_share']:.1%} of items, {s['audits']} audits; "
        f"head {err(r['head'])}, cache {err(r['cache'])}; LLM calls per 1,000 items: "
        f"{', '.join(map(str, s.get('llm_calls_per_1000') or [])) or '–'}"
    )
    return line + (f"\n  - warning: {r['warning']}" if r.get("warning") else "")


def _plot_curves(curves: dict, out: Path) -> list[Path]:
    if not curves:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4))
    for name, c in curves.items():
        items = c["items"]
        window = 100
        hits = c["hits"]
        rate = [
            (hits[i] - hits[max(0, i - window)]) / min(i + 1, window) if i else 0
            for i in range(len(items))
        ]
        ax1.plot(items, rate, label=name)
        ax2.plot(items, c["llm_calls"], label=name)
        calls, block = c["llm_calls"], min(1000, max(1, len(items) // 10))
        ends = list(range(block, len(items) + 1, block))
        per = [
            1000 * (calls[e - 1] - (calls[e - block - 1] if e > block else 0)) / block for e in ends
        ]
        ax3.plot([items[e - 1] for e in ends], per, marker=".", label=name)
    ax1.set(title=f"cache-hit rate (last {window} items)", xlabel="items processed", ylim=(0, 1))
    ax2.set(title="cumulative LLM calls (audits included)", xlabel="items processed")
    ax3.set(title="convergence: LLM calls per 1,000 items", xlabel="items processed")
    for ax in (ax1, ax2, ax3):
        ax.legend()
    fig.tight_layout()
    paths.append(out / "hit_rate_llm_calls.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        if any(c["raw_labels"]):
            (line,) = ax.plot(c["items"], c["raw_labels"], linestyle="--", label=f"{name} raw")
            ax.plot(c["items"], c["labels"], color=line.get_color(), label=f"{name} canonical")
    ax.set(title="raw vs canonical labels", xlabel="items processed", ylabel="labels")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "label_convergence.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
