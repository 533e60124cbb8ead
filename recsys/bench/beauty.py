"""Record Amazon Beauty results (JSON written by `recsys.train.beauty_benchmark --out`) into
docs/benchmarks.json, and write the table of our rows next to the published ones.

    python -m recsys.bench.beauty RESULT.json [...] [--where "NVIDIA H200 (lent GPU machine)"]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recsys.bench.report import DOCS, record

ABLATIONS = "<!-- below: ablations, written by hand; recsys.bench.beauty keeps them -->"
METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20")
# shared/data/amazon-beauty/README.md: published full-ranking results on this exact file.
PUBLISHED = {
    "Popularity": (0.0080, 0.0044, 0.0152, 0.0068, 0.0217, 0.0084),
    "GRU4Rec": (0.0164, 0.0099, 0.0283, 0.0137, 0.0479, 0.0187),
    "BERT4Rec": (0.0203, 0.0124, 0.0347, 0.0170, 0.0599, 0.0233),
    "SASRec": (0.0387, 0.0249, 0.0605, 0.0318, 0.0902, 0.0394),
    "S3-Rec": (0.0387, 0.0244, 0.0647, 0.0327, 0.0994, 0.0414),
    "ICLRec": (0.0500, 0.0326, 0.0744, 0.0403, 0.1058, 0.0483),
    "BSARec": (0.0736, 0.0523, 0.1008, 0.0611, 0.1373, 0.0703),
}


def command_of(args: dict, model: str) -> str:
    """The command line that reruns a result (flags left at None are left out)."""
    flags = {"--device": args["device"], "--epochs": args["epochs"], "--patience": args["patience"],
             "--batch-size": args["batch_size"], "--lr": args["lr"], "--time-budget": args.get("time_budget"),
             "--threads": args.get("threads"), "--seed": args["seed"]}
    command = f"python -m recsys.train.beauty_benchmark --models {model}" + "".join(
        f" {flag} {value:g}" if isinstance(value, float) else f" {flag} {value}"
        for flag, value in flags.items() if value is not None)
    command += "".join(f" --set {pair}" for pair in args.get("set") or [])
    command += " --ann-dsn recsys" if args.get("ann_dsn") else ""
    command += " --served" if args.get("served") else ""
    return command + (f" --title-emb {args['title_emb']}" if args.get("title_emb") else "")


def import_results(paths: list[Path], where: str | None, suffix: str = "") -> None:
    for path in paths:
        result = json.loads(path.read_text())
        for run_name, body in result["models"].items():
            model = run_name + suffix
            figures = {f"beauty.{model}.{m.lower()}": (v, "fraction") for m, v in body["metrics"].items()
                       if m in METRICS or m.startswith(("coverage", "long_tail"))}
            for m, v in body.get("ann_metrics", {}).items():  # the same model through pgvector HNSW
                figures[f"beauty.{model}_ann.{m.lower()}"] = (v, "fraction")
            for m, v in body.get("served_metrics", {}).items():  # HNSW top 120 -> ranker (beauty_served)
                stage, _, metric = m.partition(".")
                if stage in ("served", "retrieval"):
                    figures[f"beauty.{stage if stage == 'served' else 'served_retrieval'}.{metric.lower()}"] = (v, "fraction")
            if "epochs_run" in body:
                figures[f"beauty.{model}.epochs"] = (body["epochs_run"], "epochs")
            record(figures, command_of(result["args"], run_name), where=where)
    write_table(DOCS)


def write_table(docs: Path) -> None:
    data = json.loads((docs / "benchmarks.json").read_text())
    ours = sorted({name.split(".")[1] for name in data if name.startswith("beauty.")})
    lines = ["## Amazon Beauty: our rows next to the published ones", "",
             "Leave-one-out, full ranking over all 12,101 items, history excluded, all 22,363 users "
             "(shared/data/amazon-beauty/README.md). Our rows come from `recsys.train.beauty_benchmark` "
             "(commands and machines in the `beauty` table above).", "",
             "| model | " + " | ".join(METRICS) + " | source |", "| --- |" + " ---: |" * len(METRICS) + " --- |"]
    for model in ours:
        values = [data.get(f"beauty.{model}.{m.lower()}", {}).get("value") for m in METRICS]
        cells = " | ".join("–" if v is None else f"{v:.4f}" for v in values)
        lines.append(f"| **{model}** (ours) | {cells} | {data[f'beauty.{model}.ndcg@10']['machine']} |")
    for model, values in PUBLISHED.items():
        lines.append(f"| {model} (published) | " + " | ".join(f"{v:.4f}" for v in values) + " | README |")
    path = docs / "benchmarks-beauty.md"
    kept = path.read_text().partition(ABLATIONS)[2] if path.exists() else ""
    path.write_text("\n".join(lines) + "\n" + (f"\n{ABLATIONS}{kept}" if kept else ""))
    record({}, "", docs)  # regenerate benchmarks.md with the table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--where", default=None, help="the machine, when the results came from another one")
    parser.add_argument("--suffix", default="", help="appended to the model names (e.g. _cpu beside GPU rows)")
    args = parser.parse_args()
    import_results(args.results, args.where, args.suffix)


if __name__ == "__main__":
    main()
