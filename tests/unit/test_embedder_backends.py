"""The exported embedder: the configured backend agrees with torch, and rows never depend on their batch.

The export (`zoo.embedder_export`, about 15 s) runs once per session into a temporary folder, from the
packaged MiniLM, so this also checks that the export works on a clean machine.
"""

import numpy as np
import pytest

from router_service.config.service import RouterConfig
from router_service.domain import ExpertCard, Query
from router_service.routing.embedding import make_embedder
from router_service.routing.strategies.base import get_strategy

from .routing_fixtures import separable_table

pytest.importorskip("sentence_transformers")
pytest.importorskip("onnxruntime")

PROMPTS = [
    "What is 37+45?",
    "What is the capital of France?",
    "Reverse the word planet",
    "Convert 3 km to m",
    "What is the capital of Zorbia?",
    "Write a haiku about the sea.",
    "hello, who are you?",
    "Explain recursion to a child, with an example they would meet at school.",
    "Solve: a train leaves at 3 pm at 60 km/h; another at 4 pm at 80 km/h. When does the second catch up?",
    "Translate 'good morning' into German.",
    "def add(a, b):\n    return a + b\n# what does add(2, 3) return?",
    "Which of these is a mammal? (A) shark (B) dolphin (C) trout (D) octopus",
]


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    from zoo.embedder_export import export

    out = tmp_path_factory.mktemp("embedder") / "all-MiniLM-L6-v2-onnx"
    record = export(out)
    assert record["min_cosine_to_torch"]["onnx"] >= record["gates"]["onnx"]
    return out


def chosen_backend() -> str:
    return RouterConfig().embedder_backend


@pytest.fixture(scope="session")
def torch_embedder():
    return make_embedder()


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8", "openvino", "openvino-int8"])
def test_every_backend_embeds_like_torch(backend, export_dir, torch_embedder):
    vectors = make_embedder(backend=backend, path=str(export_dir)).encode(PROMPTS)
    reference = torch_embedder.encode(PROMPTS)
    cosine = np.sum(vectors * reference, axis=1)
    assert cosine.min() >= (0.9999 if not backend.endswith("int8") else 0.98), cosine
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_the_configured_backend_routes_like_torch(export_dir, torch_embedder):
    """Strategies fitted with torch's vectors decide the same on these prompts with the chosen backend."""
    backend = chosen_backend()
    other = make_embedder(backend=backend, path=str(export_dir) if backend != "torch" else None)
    table = separable_table()
    experts = [ExpertCard(id=m) for m in table.models]
    train_x = torch_embedder.encode(list(table.prompts))
    prompts = PROMPTS + [f"what is {a} plus {b}" for a, b in [(3, 9), (51, 7)]] + ["spell kettle backwards"]
    reference, candidate = torch_embedder.encode(prompts), other.encode(prompts)
    for name in ("category", "skill", "cost_aware"):
        strategy = get_strategy(name).set_embedder(torch_embedder).fit(table, embeddings=train_x)
        by_torch = [strategy.route(Query(p, embedding=v), experts).expert_ids for p, v in zip(prompts, reference)]
        by_backend = [strategy.route(Query(p, embedding=v), experts).expert_ids for p, v in zip(prompts, candidate)]
        assert by_backend == by_torch, name
        assert len({ids[0] for ids in by_torch}) >= 2  # the prompts really exercise the decision


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8", "openvino"])
def test_a_rows_embedding_does_not_depend_on_its_batch(backend, export_dir):
    embedder = make_embedder(backend=backend, path=str(export_dir))
    alone = np.vstack([embedder.encode([p]) for p in PROMPTS])
    batched = embedder.encode(PROMPTS + ["a much longer neighbour " * 40])[: len(PROMPTS)]
    # int8 runs one row per call (its activation scale spans the whole input), so it is exact.
    tolerance = 0.0 if backend.endswith("int8") else 1e-5
    assert np.abs(alone - batched).max() <= tolerance


def test_a_missing_export_fails_with_the_command_that_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="zoo.embedder_export"):
        make_embedder(backend="onnx", path=str(tmp_path / "nothing")).encode(["x"])


def test_backends_run_only_the_packaged_model():
    with pytest.raises(ValueError, match="only the exported"):
        make_embedder("/some/other/model", backend="onnx")


# A few-shot prompt as RouterBench writes them: the same examples first, the question last, and longer
# than MiniLM's 256-token window.
FEW_SHOT = "".join(f"Question: what colour is object number {i}?\nA) red\nB) blue\nAnswer: A\n\n" for i in range(30))
LONG_PROMPTS = [FEW_SHOT + "Question: which planet is closest to the sun?", FEW_SHOT + "Question: how do I bake bread?"]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_keeping_the_tail_embeds_a_few_shot_prompts_question(backend, export_dir):
    path = str(export_dir) if backend != "torch" else None
    head = make_embedder(backend=backend, path=path).encode(LONG_PROMPTS)
    tail = make_embedder(backend=backend, path=path, keep="tail").encode(LONG_PROMPTS)
    # The head of both prompts is the same examples: one vector. The tail holds the two questions.
    assert float(head[0] @ head[1]) > 0.9999
    assert float(tail[0] @ tail[1]) < 0.95
    short = make_embedder(backend=backend, path=path, keep="tail").encode(PROMPTS[:3])
    assert np.allclose(short, make_embedder(backend=backend, path=path).encode(PROMPTS[:3]), atol=1e-5)


def test_the_tail_has_its_own_cache_key(export_dir):
    for backend, path in (("torch", None), ("onnx", str(export_dir))):
        head, tail = make_embedder(backend=backend, path=path), make_embedder(backend=backend, path=path, keep="tail")
        assert head.name == tail.name and head.cache_key != tail.cache_key
        assert tail.keep == "tail" and head.with_keep("tail").cache_key == tail.cache_key
