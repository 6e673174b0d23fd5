"""Reliability benchmark: hostile inputs, SIGKILLs, a faulty LLM server, and load.

    .venv/bin/python benchmarks/faults.py hostile            # corpus through API, HTTP, CLI
    .venv/bin/python benchmarks/faults.py kill --kills 70    # SIGKILL classify/consolidate/curation
    .venv/bin/python benchmarks/faults.py server --items 2000  # 429/5xx/timeouts/bad JSON
    .venv/bin/python benchmarks/faults.py load --minutes 5   # locust against `canonlabel serve`

Each prints a JSON report and stores it under benchmarks/results/faults_<what>.json;
the README's reliability table quotes them (cases tried, handled, lost).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results"


def texts(n: int) -> list[str]:
    rows = [json.loads(x) for x in (DATA / "banking77.jsonl").open(encoding="utf-8")]
    random.Random(0).shuffle(rows)
    return [r["text"] for r in rows[:n]]


def hostile() -> dict:
    import subprocess

    from canonlabel import Classifier, Settings
    from canonlabel.server import create_app
    from canonlabel.testing import FakeLabeler, HashEmbedder
    from tests.conftest import with_app
    from tests.reliability import hostile as h

    cases = h.text_cases()
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        s = Settings(db=tmp / "a.db", max_text_chars=h.LIMIT_CHARS)
        with Classifier.open(settings=s, embedder=HashEmbedder(), labeler=FakeLabeler()) as clf:
            api = h.run_api(clf, cases)
        s = s.model_copy(update={"db": tmp / "h.db"})
        app = create_app(s, classifier=Classifier.open(
            settings=s, embedder=HashEmbedder(), labeler=FakeLabeler()))  # fmt: skip

        http = with_app(app, lambda client: h.run_http(client, cases))
        strings = h.write_jsonl(cases, tmp / "in.jsonl")
        subprocess.run(
            [sys.executable, "-m", "canonlabel.cli", "classify", str(tmp / "in.jsonl"), "-o",
             str(tmp / "out.jsonl"), "--db", str(tmp / "c.db"), "--llm", "fake", "--embedder",
             "hash"], capture_output=True, check=True,
        )  # fmt: skip
        cli = h.read_outcomes(strings, tmp / "out.jsonl")
        files = [_file_case(tmp, c) for c in h.file_cases()]
    for name, got, want in (
        ("python_api", api, [c.api for c in cases]),
        ("http", http, [c.http for c in cases]),
        ("cli_jsonl", cli, [c.cli for c in strings]),
        ("cli_files", files, ["ok"] * len(files)),
    ):
        report[name] = {
            "tried": len(got),
            "handled": sum(g == w for g, w in zip(got, want)),
            "lost": sum(g == "lost" for g in got),
        }
    return report


def _file_case(tmp: Path, case) -> str:
    import subprocess

    src, out = tmp / f"f_{case.name}{case.suffix}", tmp / f"f_{case.name}.out"
    src.write_bytes(case.content)
    done = subprocess.run(
        [sys.executable, "-m", "canonlabel.cli", "classify", str(src), "-o", str(out), "--db",
         str(tmp / "f.db"), "--llm", "fake", "--embedder", "hash"], capture_output=True, text=True,
    )  # fmt: skip
    if "Traceback" in done.stderr:
        return "lost"
    if case.expect == "error":
        return "ok" if done.returncode == 2 and done.stderr.startswith("error:") else "wrong"
    rows = out.read_text(encoding="utf-8").splitlines() if out.exists() else []
    return "ok" if done.returncode == 0 and len(rows) == case.rows else "lost"


def kill(kills: int, seed: int) -> dict:
    from canonlabel.testing import faults

    rng = random.Random(seed)
    per = {"classify": kills * 2 // 5, "consolidate": kills // 5}
    per["curation"] = kills - per["classify"] - per["consolidate"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        return {
            "classify": faults.kill_classify(tmp, texts(8000), per["classify"], rng),
            "consolidate": faults.kill_consolidate(tmp, texts(3000), per["consolidate"], rng),
            "curation": faults.kill_curation(tmp, texts(800), per["curation"], rng),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("hostile")
    k = sub.add_parser("kill")
    k.add_argument("--kills", type=int, default=70)
    k.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("server")
    s.add_argument("--items", type=int, default=2000)
    lo = sub.add_parser("load")
    lo.add_argument("--minutes", type=float, default=5.0)
    lo.add_argument("--rate", type=float, default=20.0, help="requests per second")
    lo.add_argument("--embedder", default="minilm", help="hash isolates canonlabel's own memory")
    args = parser.parse_args()
    if args.what == "hostile":
        report = hostile()
    elif args.what == "kill":
        report = kill(args.kills, args.seed)
    elif args.what == "server":
        from benchmarks.faulty_server import run_faulty

        report = run_faulty(texts(args.items))
    else:
        from benchmarks.load import run_locust

        report = run_locust(args.minutes, args.rate, args.embedder)
    print(json.dumps(report, indent=2))
    OUT.mkdir(exist_ok=True)
    name = args.what + ("_hash" if getattr(args, "embedder", "minilm") == "hash" else "")
    (OUT / f"faults_{name}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
