"""How much a prompt embedding says about which model answers it: held-out AUC per task and model.

For every task of the tables and every model, a logistic regression on the prompt embedding predicts
"this model is right" (score > 0.5), scored by 5-fold cross-validated ROC AUC. 0.5 is no signal: then
no router that reads only the embedding can beat the per-task zero router within that task.
Usage: python scripts/routing_signal.py ../shared/data/routing/routerbench/*.csv [--embedder-keep tail]
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from eval.embed_cache import CachedEmbedder
from router_service.data.loaders import load_tables
from router_service.routing.embedding import DEFAULT_EMBEDDER, EMBEDDER_KEEP, make_embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="+")
    parser.add_argument("--embedder", default=DEFAULT_EMBEDDER)
    parser.add_argument("--embedder-keep", default="head", choices=EMBEDDER_KEEP)
    args = parser.parse_args()
    table = load_tables(args.tables)
    if table.categories is None:
        raise SystemExit("the tables have no tasks")
    embeddings = CachedEmbedder(make_embedder(args.embedder, keep=args.embedder_keep)).encode(list(table.prompts))
    scores, labels = table.score_matrix(), np.asarray(table.categories)
    print(f"embedder {args.embedder}, keep {args.embedder_keep}; 5-fold CV ROC AUC of 'model is right'")
    print("task | " + " | ".join(table.models))
    for task in sorted(set(labels)):
        rows = np.flatnonzero(labels == task)
        cells = []
        for j in range(len(table.models)):
            right = (scores[rows, j] > 0.5).astype(int)
            if min(right.sum(), len(right) - right.sum()) < 5:
                cells.append("–")  # (almost) always right or always wrong: nothing to rank
                continue
            folds = StratifiedKFold(5, shuffle=True, random_state=0)
            model = LogisticRegression(C=1.0, max_iter=2000)
            p = cross_val_predict(model, embeddings[rows], right, cv=folds, method="predict_proba")[:, 1]
            cells.append(f"{roc_auc_score(right, p):.2f}")
        print(f"{task} ({len(rows)}) | " + " | ".join(cells))


if __name__ == "__main__":
    main()
