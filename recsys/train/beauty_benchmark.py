"""Amazon Beauty full-ranking benchmark (protocol: shared/data/amazon-beauty/README.md).

    python -m recsys.train.beauty_benchmark --models pop,als,sasrec,two_tower --epochs 30 --out results.json

Leave-one-out, test input truncated to the last 50 items, every catalog item ranked, history
excluded, HR@5/10/20 and NDCG@5/10/20 averaged over all users. Sequence models are fitted on
the training prefixes and early-stopped on the validation item; pop and ALS are tuned on
nothing and, for the test, refitted on everything before the test item (they have no other
way to use the validation item that the sequence models read as input).

Models: ``pop``, ``als``, ``sasrec`` (ID-only user tower, full softmax), ``sasrec_sampled``,
``two_tower`` (+ brand/category tags + recency, full softmax), ``two_tower_sampled``,
``two_tower_norec`` (no recency), ``sasrec_dot`` / ``two_tower_dot`` (unnormalised dot product),
``content_knn`` (needs ``--title-emb``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np

from recsys.services.base import redact
from recsys.train.metrics import DEFAULT_KS, SeenIndex, evaluate_full_ranking, long_tail_mask
from recsys.train.splits import LeaveOneOut, leave_one_out

MAX_LEN = 50
ALL_MODELS = ("pop", "als", "sasrec", "sasrec_sampled", "sasrec_dot", "two_tower", "two_tower_sampled", "two_tower_norec",
              "two_tower_dot", "content_knn")


# ----------------------------------------------------------------------------- data


def find_data_dir(explicit: str | None = None) -> Path:
    """$RECSYS_BEAUTY_DIR, else shared/data/amazon-beauty inside or beside the repo."""
    root = Path(__file__).resolve().parents[2]
    cands = [explicit, os.environ.get("RECSYS_BEAUTY_DIR"), root / "shared/data/amazon-beauty",
             root.parent / "shared/data/amazon-beauty"]
    for c in cands:
        if c and (Path(c) / "sequences.txt").exists():
            return Path(c)
    raise FileNotFoundError("Amazon Beauty data not found; pass --data or set RECSYS_BEAUTY_DIR")


def _read_rows(path: Path) -> list[list[int]]:
    with open(path) as f:
        return [[int(x) for x in line.split()] for line in f if line.strip()]


def load_beauty(data_dir: Path) -> dict:
    """Sequences as 0-based item indices (file id - 1), aligned timestamps, attribute tags."""
    seq_rows = _read_rows(data_dir / "sequences.txt")
    ts_rows = _read_rows(data_dir / "timestamps.txt")
    if [r[0] for r in seq_rows] != [r[0] for r in ts_rows]:
        raise ValueError("sequences.txt and timestamps.txt users differ")
    seqs = [np.asarray(r[1:], dtype=np.int64) - 1 for r in seq_rows]
    ts = [np.asarray(r[1:], dtype=np.int64) for r in ts_rows]
    n_items = int(max(s.max() for s in seqs)) + 1
    tags: list[list[int]] = [[] for _ in range(n_items)]
    vocab: dict[str, int] = {}
    attr = data_dir / "item_attributes.tsv"
    if attr.exists():
        with open(attr) as f:
            next(f)
            for line in f:
                item, _, rest = line.rstrip("\n").partition("\t")
                i = int(item) - 1
                if 0 <= i < n_items:
                    for a in (x.strip() for x in rest.split(" | ")):
                        if a:
                            tags[i].append(vocab.setdefault(a, len(vocab)))
    return {"sequences": seqs, "timestamps": ts, "n_items": n_items, "tags": tags, "n_tags": len(vocab)}


def subset_users(data: dict, max_users: int | None, seed: int = 0) -> dict:
    if not max_users or max_users >= len(data["sequences"]):
        return data
    rows = np.sort(np.random.default_rng(seed).choice(len(data["sequences"]), max_users, replace=False))
    out = dict(data)
    out["sequences"] = [data["sequences"][i] for i in rows]
    out["timestamps"] = [data["timestamps"][i] for i in rows]
    return out


# ----------------------------------------------------------------------------- models


def run_pop(split: LeaveOneOut, n_items: int, **_) -> dict:
    from recsys.train.popularity import PopularityRecommender, interaction_matrix

    m = PopularityRecommender().fit(interaction_matrix(split.train_plus_valid(), n_items))
    return {"metrics": _eval(m.score, split, n_items)}


def als_config(seed: int = 0):
    from recsys.train.als import ALSConfig

    return ALSConfig(factors=64, regularization=0.05, alpha=10.0, iterations=15, seed=seed)


def run_als(split: LeaveOneOut, n_items: int, seed: int = 0, **_) -> dict:
    from recsys.train.als import ALSRecommender
    from recsys.train.popularity import interaction_matrix

    cfg = als_config(seed)
    valid = ALSRecommender(cfg).fit(interaction_matrix(split.train, n_items))
    vm = evaluate_full_ranking(valid.score, split.valid_target, split.valid_seen, (10,))
    m = ALSRecommender(cfg).fit(interaction_matrix(split.train_plus_valid(), n_items))
    return {"metrics": _eval(m.score, split, n_items), "valid_NDCG@10": vm["NDCG@10"], "config": asdict(cfg)}


def run_content_knn(split: LeaveOneOut, n_items: int, title_emb: str | None = None, **_) -> dict:
    """Recency-weighted mean of the history's title vectors, cosine against every item."""
    if not title_emb:
        raise ValueError("content_knn needs --title-emb items.npy (n_items x d, row = item id - 1)")
    e = np.load(title_emb).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True) + 1e-9

    def score(rows):
        u = np.zeros((len(rows), e.shape[1]), np.float32)
        for j, r in enumerate(rows):
            h = split.test_input[r]
            w = 0.7 ** np.arange(len(h))[::-1]
            u[j] = (w[:, None] * e[h]).sum(0)
        return u @ e.T

    return {"metrics": _eval(score, split, n_items)}


def two_tower_config(name: str, args) -> "object":
    from recsys.models.two_tower import TwoTowerConfig

    base = TwoTowerConfig(
        dim=64, max_len=MAX_LEN, n_layers=2, n_heads=1, dropout=0.5, id_dropout=0.1,
        lr=args.lr, batch_size=args.batch_size, epochs=args.epochs, patience=args.patience,
        eval_batch_size=2048, eval_every=2, seed=args.seed, device=args.device, max_seconds=args.time_budget,
        gap_unit_seconds=86400.0, n_gap_buckets=16,
    )
    if name.startswith("sasrec"):
        base = replace(base, id_only=True, use_recency=False)
    if name == "two_tower_norec":
        base = replace(base, use_recency=False)
    if name.endswith("_sampled"):  # in-batch softmax collapsed at temperature 0.05 on Beauty; 0.2 trains
        base = replace(base, loss="sampled", temperature=0.2)
    if name.endswith("_dot"):  # plain dot product, no L2 norm / temperature (as BSARec)
        base = replace(base, normalize=False, learn_temperature=False)
    return replace(base, **overrides(args.set))


def overrides(pairs: list[str]) -> dict:
    """``--set key=value`` pairs as typed TwoTowerConfig fields (for ablations)."""
    from recsys.models.two_tower import TwoTowerConfig

    types = {f.name: f.type for f in fields(TwoTowerConfig)}
    out = {}
    for pair in pairs or []:
        key, _, raw = pair.partition("=")
        if key not in types:
            raise SystemExit(f"--set {pair}: {key!r} is not a TwoTowerConfig field")
        kind = str(types[key])
        if raw.lower() == "none" and "None" in kind:
            out[key] = None
        elif "bool" in kind:
            out[key] = raw.lower() in ("1", "true", "yes")
        elif "int" in kind:
            out[key] = int(raw)
        elif "float" in kind:
            out[key] = float(raw)
        else:
            out[key] = raw
    return out


def run_two_tower(split: LeaveOneOut, n_items: int, name: str, data: dict, args, dsn: str | None = None) -> dict:
    import torch

    from recsys.train.two_tower import EvalSet, ItemFeatures, evaluate_two_tower, fit_two_tower, pad_lists

    cfg = two_tower_config(name, args)
    feats = ItemFeatures(n_items=n_items)
    if not cfg.id_only:
        feats.tags = pad_lists(data["tags"], width=8)
        feats.n_tags = data["n_tags"]
        if args.title_emb:
            feats.content = np.load(args.title_emb).astype(np.float32)
    t0 = time.perf_counter()
    model, history = fit_two_tower(
        split.train, feats, cfg, valid=EvalSet.validation(split), train_timestamps=split.train_ts,
        log=lambda s: print(f"[{name}] {s}", flush=True),
    )
    fit_s = time.perf_counter() - t0
    counts = np.bincount(np.concatenate(split.train), minlength=n_items)
    with torch.no_grad():
        metrics = evaluate_two_tower(model, EvalSet.test(split), DEFAULT_KS, coverage_k=10, long_tail=long_tail_mask(counts))
    best = max((h.get("valid_NDCG@10", -1) for h in history), default=-1)
    out = {"metrics": metrics, "valid_NDCG@10": best, "epochs_run": len(history), "fit_seconds": fit_s,
           "history": history, "config": asdict(cfg)}
    if dsn:
        out["ann_metrics"] = ann_metrics(model, EvalSet.test(split), dsn, name)
    if args.served:
        from recsys.train.beauty_served import served_metrics

        out["served_metrics"] = served_metrics(model, split, data, dsn, name, als_config(args.seed),
                                               log=lambda s: print(f"[{name}] {s}", flush=True))
    return out


def title_vectors(data: str | None) -> Path:
    """`--title-emb minilm`: each item's spec text (title, category path, brand) through the packaged MiniLM,
    one row per item id (id 1 = row 0), cached under the state directory (a few minutes on 2 cores once)."""
    from recsys.catalog.amazon import load_beauty_catalog
    from recsys.catalog.embed import encode_texts

    items = load_beauty_catalog(data).items.sort_values("item_id")
    if not np.array_equal(items["item_id"].to_numpy(), np.arange(1, len(items) + 1)):
        raise ValueError("item ids are not 1..n: cannot lay the title vectors out by id")
    path = Path(os.environ.get("RECSYS_STATE_DIR", ".recsys")) / f"beauty-spec-minilm-{len(items)}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, encode_texts(items["spec_text"].tolist()))
    return path


def resolve_dsn(value: str | None) -> str | None:
    """``recsys``: the platform's own Postgres (the embedded one, started if it is not running)."""
    if value != "recsys":
        return value
    from recsys.config import load_config
    from recsys.services import Postgres

    postgres = Postgres(load_config())
    postgres.start()
    return postgres.dsn


def ann_metrics(model, test, dsn: str, name: str, ks=DEFAULT_KS, ef_search: int = 200) -> dict:
    """The same model retrieved as serving does it: its item vectors in a pgvector HNSW set, each
    test user's vector a nearest-neighbour query, history excluded; plus the index's recall of the
    exact top-k."""
    import psycopg
    import torch

    from recsys.catalog import vectors
    from recsys.train.metrics import hr_ndcg_from_topk
    from recsys.train.two_tower import inference_arrays

    k = max(ks)
    items = model.item_vectors().detach().cpu().numpy()
    arrays = inference_arrays(test.inputs, model.cfg, test.input_ts, test.target_ts)
    version = f"beauty-{name}"
    lists, overlap = [], []
    with psycopg.connect(dsn, autocommit=True) as conn:
        vectors.write_vectors(conn, version, "beauty-eval", [str(i) for i in range(len(items))], items)
        vectors.prepare(conn)
        try:
            for start in range(0, len(test.targets), 2048):
                rows = np.arange(start, min(len(test.targets), start + 2048))
                with torch.no_grad():
                    users = model.user_vectors(arrays, rows).cpu().numpy()
                for u, q in zip(rows, users):
                    seen = set(test.seen[u].tolist()) - {int(test.targets[u])}
                    vectors.set_ef_search(conn, max(ef_search, k + len(seen)))  # it returns at most ef_search rows
                    found = vectors.search(conn, version, items.shape[1], q, k + len(seen))
                    ann = [int(s) for s, _ in found if int(s) not in seen][:k]
                    exact = [i for i in np.argsort(-(items @ q))[: k + len(seen)] if i not in seen][:k]
                    overlap.append(len(set(ann) & set(exact)) / k)
                    lists.append(ann + [-1] * (k - len(ann)))
        finally:
            vectors.retire(conn, version)
            conn.execute("DELETE FROM vector_sets WHERE model_version = %s", (version,))
    out = hr_ndcg_from_topk(np.array(lists), test.targets, ks)
    out[f"recall_vs_exact@{k}"] = float(np.mean(overlap))
    return out


def _eval(score_fn, split: LeaveOneOut, n_items: int) -> dict:
    counts = np.bincount(np.concatenate(split.train), minlength=n_items)
    return evaluate_full_ranking(score_fn, split.test_target, SeenIndex(split.test_seen), DEFAULT_KS,
                                 batch_size=2048, coverage_k=10, long_tail=long_tail_mask(counts))


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="pop,als,sasrec,two_tower")
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="the reference SASRec's learning rate (issue 14)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds of training per sequence model")
    p.add_argument("--max-users", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None)
    p.add_argument("--title-emb", default=None, help=".npy of item title vectors (row = item id - 1), or "
                   "'minilm': the packaged MiniLM over the items' spec text (cached)")
    p.add_argument("--out", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TwoTowerConfig field of the sequence models (ablations)")
    p.add_argument("--ann-dsn", default=None, help="a Postgres+pgvector DSN, or 'recsys' for the platform's own: "
                   "also measure the sequence models through an HNSW index there, as serving retrieves")
    p.add_argument("--served", action="store_true", help="also the served path (HNSW top 120, then a LightGBM "
                   "ranker learned on the validation requests; recsys.train.beauty_served); needs --ann-dsn")
    args = p.parse_args(argv)
    if args.served and not args.ann_dsn:
        p.error("--served needs --ann-dsn (a DSN, or 'recsys')")
    dsn = resolve_dsn(args.ann_dsn)
    title_spec = args.title_emb   # as given (the results name it, so that the command reruns anywhere)
    if args.title_emb == "minilm":
        args.title_emb = str(title_vectors(args.data))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = set(models) - set(ALL_MODELS)
    if bad:
        p.error(f"unknown models {sorted(bad)}; choose from {ALL_MODELS}")

    data = subset_users(load_beauty(find_data_dir(args.data)), args.max_users, args.seed)
    n_items = data["n_items"]
    split = leave_one_out(data["sequences"], data["timestamps"], max_len=MAX_LEN)
    print(f"users {split.n_users} items {n_items} train interactions {sum(map(len, split.train))}", flush=True)
    results: dict = {"protocol": "leave-one-out, full ranking, history excluded, test input last 50",
                     "users": split.n_users, "items": n_items, "device": args.device,
                     "args": vars(args) | {"ann_dsn": redact(dsn), "title_emb": title_spec}, "models": {}}
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda but torch sees no GPU")
        results["device_name"] = torch.cuda.get_device_name()
        results["torch"] = torch.__version__
    for name in models:
        t0 = time.perf_counter()
        if name == "pop":
            r = run_pop(split, n_items)
        elif name == "als":
            r = run_als(split, n_items, seed=args.seed)
        elif name == "content_knn":
            r = run_content_knn(split, n_items, title_emb=args.title_emb)
        else:
            r = run_two_tower(split, n_items, name, data, args, dsn)
        r["seconds"] = time.perf_counter() - t0
        results["models"][name] = r
        m = r["metrics"]
        print(f"{name:18s} " + " ".join(f"{k} {m[k]:.4f}" for k in
              ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20")) + f"  ({r['seconds']:.0f}s)", flush=True)
        if "served_metrics" in r:
            print("served path        " + " ".join(f"{k} {v:.4f}" for k, v in r["served_metrics"].items()), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps({k: {m: round(v, 4) for m, v in r["metrics"].items()} for k, r in results["models"].items()}, indent=1))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
