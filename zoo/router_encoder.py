"""A router-trained prompt encoder, in the spirit of RouterDC (Chen et al. 2024, arXiv 2409.19886):
fine-tune the packaged all-MiniLM-L6-v2 so that a prompt's embedding sits near the experts that answer
it well, then serve it as the router's embedder (an ordinary sentence-transformers folder).

    python -m zoo.router_encoder --train ../shared/data/routing/model7/*.json --scoring accuracy \\
        --out models/router-encoder/model7 [--limit N] [--epochs 1]

Objectives (RouterDC's two contrastive losses):
* sample–expert: a learnable vector k_m per expert; for each prompt, softmax over cos(E(x), k_m)/τ
  with every expert that answered correctly (cell ≥ 0.5) as a positive and every wrong one as a
  negative, −log Σ_pos / Σ_all. Prompts every expert got right, or every expert got wrong, carry no
  routing signal and are left out of this term;
* sample–sample: in-batch supervised contrastive loss with the table's task labels as classes (RouterDC
  clusters the prompts; here the labels are known), so prompts of one task stay together.

Only the top `train_layers` transformer layers and the pooling are trained; the lower ones are frozen,
which keeps one epoch over model7's 7,598 prompts to minutes on two cores (the time is recorded).

Quality gate: on a seeded `validation_fraction` of the prompts held out of training, the encoder's own
router (argmax_m cos(E(x), k_m)) must score at least the best single model chosen on the training
rows. A build below it raises RouterEncoderGateError and writes nothing. The folder gets
`router-encoder.json`: the training files and scoring, settings, time, validation figures, the
experts' vectors, and the SHA-256 of the weights (the fit CLI records it in the artifacts it writes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router_service.data.loaders import load_tables
from router_service.data.scoring import SCORING_RULES, apply_scoring
from router_service.data.table import RoutingTable
from router_service.routing.embedding import ENCODER_WEIGHTS, ROUTER_ENCODER_RECORD, embedder_fingerprint

RECORD = ROUTER_ENCODER_RECORD


class RouterEncoderGateError(RuntimeError):
    """The trained encoder's own router did not reach the best single model on held-out prompts."""


def weights_sha256(folder: str | Path) -> str:
    return hashlib.sha256((Path(folder) / ENCODER_WEIGHTS).read_bytes()).hexdigest()


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _routed_quality(choice: np.ndarray, scores: np.ndarray) -> float:
    return float(np.nan_to_num(scores[np.arange(len(choice)), choice]).mean())


def train_router_encoder(
    table: RoutingTable,
    out_dir: str | Path,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    max_seq_length: int = 128,
    train_layers: int = 2,
    learning_rate: float = 5e-5,
    expert_learning_rate: float = 1e-2,
    temperature: float = 0.05,
    task_weight: float = 1.0,
    validation_fraction: float = 0.1,
    seed: int = 0,
    sources: Sequence[str] = (),
    scoring: str = "raw",
) -> dict[str, Any]:
    import torch
    from all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.max_seq_length = max_seq_length
    # MiniLM's layers are named encoder.layer.0 … encoder.layer.{n-1}.
    n_layers = 1 + max(
        int(name.split("encoder.layer.")[1].split(".")[0])
        for name, _ in model.named_parameters()
        if "encoder.layer." in name
    )
    trainable = {f"encoder.layer.{i}." for i in range(n_layers - train_layers, n_layers)}
    for name, param in model.named_parameters():
        param.requires_grad = any(t in name for t in trainable)

    train, val = _split(len(table), validation_fraction, seed)
    scores = torch.tensor(np.nan_to_num(table.scores, nan=-1.0), dtype=torch.float32)  # −1 = missing
    labels = table.categories or ["all"] * len(table)
    label_ids = torch.tensor([sorted(set(labels)).index(c) for c in labels])
    dim = int(model.get_embedding_dimension() or 0)
    experts = torch.nn.Parameter(torch.randn(len(table.models), dim) * 0.1)
    optimiser = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p.requires_grad], "lr": learning_rate},
            {"params": [experts], "lr": expert_learning_rate},
        ]
    )
    model.train()
    # sentence-transformers ≥ 5 renamed tokenize() to preprocess(); the project allows ≥ 3.
    to_features = getattr(model, "preprocess", None) or model.tokenize
    rng = np.random.default_rng(seed)
    steps = 0
    for _ in range(epochs):
        order = train[rng.permutation(len(train))]
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            features = to_features([table.prompts[i] for i in rows])
            emb = torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)
            sims = emb @ torch.nn.functional.normalize(experts, dim=-1).T / temperature
            y = scores[rows]
            pos, seen = y >= 0.5, y >= 0
            useful = pos.any(1) & (seen & ~pos).any(1)
            loss = torch.zeros(())
            if useful.any():
                s = sims[useful]
                neg_inf = torch.finfo(s.dtype).min
                loss = (
                    loss
                    + (
                        torch.logsumexp(s.masked_fill(~seen[useful], neg_inf), 1)
                        - torch.logsumexp(s.masked_fill(~pos[useful], neg_inf), 1)
                    ).mean()
                )
            if task_weight > 0 and len(rows) > 1:
                same = label_ids[rows][:, None] == label_ids[rows][None, :]
                eye = torch.eye(len(rows), dtype=torch.bool)
                pair = (emb @ emb.T / temperature).masked_fill(eye, torch.finfo(emb.dtype).min)
                anchors = (same & ~eye).any(1)
                if anchors.any():
                    loss = (
                        loss
                        + task_weight
                        * (
                            torch.logsumexp(pair[anchors], 1)
                            - torch.logsumexp(pair[anchors].masked_fill(~(same & ~eye)[anchors], -1e9), 1)
                        ).mean()
                    )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
    train_seconds = time.perf_counter() - started

    model.eval()
    val_emb = model.encode([table.prompts[i] for i in val], batch_size=64, normalize_embeddings=True)
    vectors = torch.nn.functional.normalize(experts.detach(), dim=-1).numpy()
    routed = _routed_quality(np.argmax(val_emb @ vectors.T, axis=1), table.scores[val])
    train_means = np.nanmean(table.scores[train], axis=0)
    best = int(np.nanargmax(train_means))
    best_single = float(np.nan_to_num(table.scores[val, best]).mean())
    record = {
        "base": "all-MiniLM-L6-v2",
        "train": list(sources),
        "scoring": scoring,
        "models": list(table.models),
        "rows": {"train": len(train), "validation": len(val)},
        "settings": {
            "epochs": epochs,
            "batch_size": batch_size,
            "max_seq_length": max_seq_length,
            "train_layers": train_layers,
            "learning_rate": learning_rate,
            "expert_learning_rate": expert_learning_rate,
            "temperature": temperature,
            "task_weight": task_weight,
            "validation_fraction": validation_fraction,
            "seed": seed,
        },
        "steps": steps,
        "train_seconds": round(train_seconds, 1),
        "validation": {
            "encoder_router": round(routed, 4),
            "best_single": round(best_single, 4),
            "best_single_model": table.models[best],
        },
        "expert_vectors": vectors.round(6).tolist(),
    }
    if routed < best_single:
        raise RouterEncoderGateError(
            f"router encoder below its gate: its own router scores {routed:.4f} on {len(val)} held-out prompts, "
            f"under the best single model {table.models[best]} ({best_single:.4f}); nothing was written"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    record["weights_sha256"] = weights_sha256(out)
    (out / RECORD).write_text(json.dumps(record, indent=1))
    assert embedder_fingerprint(str(out)) == record["weights_sha256"]  # what artifacts will record
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.router_encoder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", nargs="+", required=True, metavar="FILE", help="routing tables to train on")
    parser.add_argument("--scoring", choices=SCORING_RULES, default="raw")
    parser.add_argument("--out", required=True, metavar="DIR", help="output sentence-transformers folder")
    parser.add_argument("--limit", type=int, metavar="N", help="train on a seeded sample of N prompts (CI)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-layers", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    table = apply_scoring(load_tables(args.train), args.scoring)
    if args.limit and args.limit < len(table):
        table = table.subset(np.sort(np.random.default_rng(args.seed).permutation(len(table))[: args.limit]))
    try:
        record = train_router_encoder(
            table,
            args.out,
            epochs=args.epochs,
            train_layers=args.train_layers,
            max_seq_length=args.max_seq_length,
            seed=args.seed,
            sources=args.train,
            scoring=args.scoring,
        )
    except RouterEncoderGateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = {k: record[k] for k in ("rows", "steps", "train_seconds", "validation")}
    print(json.dumps(summary, indent=1))
    print(f"router encoder -> {args.out} (sha256 {record['weights_sha256'][:16]}…)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
