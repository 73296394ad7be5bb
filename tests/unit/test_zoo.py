"""The expert zoo: task generators, tokenizer, chat template, build caching (no vLLM, no Ray)."""

from __future__ import annotations

import json
import threading

import pytest

from router_service.data.loaders import read_jsonl
from router_service.routing.grading import is_correct
from zoo import tasks
from zoo.build import (
    ZOO_EXPERTS,
    ExpertSpec,
    QualityGateError,
    build_expert,
    get_spec,
    is_current,
)
from zoo.cache import MARKER, read_marker
from zoo.quality import read_quality
from zoo.tokenizer import (
    BOS_ID,
    CHARS,
    EOS_ID,
    SEP_ID,
    VOCAB,
    VOCAB_SIZE,
    build_tokenizer,
    encode_answer,
    encode_prompt,
    render_prompt,
)
from zoo.train import ModelSize, make_batch

from .helpers import heavy_imports_of


# ----------------------------------------------------------------------------- tasks
@pytest.mark.parametrize("skill", list(tasks.SKILLS))
def test_generators_are_deterministic(skill):
    a = tasks.generate(skill, 40, seed=3)
    b = tasks.generate(skill, 40, seed=3)
    assert a == b
    assert tasks.generate(skill, 40, seed=3, split="train") == tasks.generate(skill, 40, seed=3, split="train")
    assert (
        a != tasks.generate(skill, 40, seed=4) or skill == "capitals"
    )  # capitals: the split is one prompt per country


@pytest.mark.parametrize("skill", list(tasks.SKILLS))
def test_prompts_short_and_distinct(skill):
    for split in ("train", "heldout"):
        examples = tasks.generate(skill, 60, seed=0, split=split)
        assert len(examples) >= 50
        assert len({ex.prompt for ex in examples}) == len(examples)
        for ex in examples:
            assert ex.skill == skill
            assert 0 < len(ex.prompt) <= 60 and 0 < len(ex.answer) <= 12
            assert set(ex.prompt + ex.answer) <= set(CHARS)


def _check(ex: tasks.Example) -> bool:
    """Independent oracle: recompute the answer from the prompt text."""
    import re

    p = ex.prompt
    if ex.skill == "arithmetic":
        a, b = map(int, re.findall(r"\d+", p))
        return ex.answer == str(a + b)
    if ex.skill == "strings":
        word = next(
            w
            for w in re.findall(r"[A-Za-z]+", p)
            if w.lower()
            not in {
                "reverse",
                "the",
                "word",
                "spell",
                "backwards",
                "write",
                "in",
                "what",
                "is",
                "reversed",
                "letters",
                "of",
            }
        )
        return ex.answer == word[::-1]
    if ex.skill == "units":
        scale = {"km": 10**6, "m": 10**3, "cm": 10, "mm": 1, "kg": 10**6, "g": 10**3, "mg": 1, "L": 10**3, "mL": 1}
        n = int(re.search(r"\d+", p).group())
        src, dst = [u for u in re.findall(r"[A-Za-z]+", p) if u in scale][:2]
        if p.startswith("How many"):
            dst, src = src, dst
        return ex.answer == str(n * scale[src] // scale[dst])
    if ex.skill == "capitals":
        country = next(c for c in tasks.CAPITALS if c in p)
        return ex.answer == tasks.CAPITALS[country]
    raise AssertionError(ex.skill)


@pytest.mark.parametrize("skill", list(tasks.SKILLS))
def test_answers_are_checkable(skill):
    for split in tasks.SPLITS:
        for ex in tasks.generate(skill, 100, seed=1, split=split):
            assert _check(ex), ex
            assert is_correct(f"  {ex.answer.upper()}\n", ex.answer, "exact")
            assert not is_correct(ex.answer + "0", ex.answer, "exact")


@pytest.mark.parametrize("skill", list(tasks.SKILLS))
def test_splits_are_disjoint(skill):
    import random

    heldout = {ex.prompt for ex in tasks.generate(skill, 500, seed=0, split="heldout")}
    validation = {ex.prompt for ex in tasks.generate(skill, 500, seed=0, split="validation")}
    train = {ex.prompt for ex in tasks.generate(skill, 3000, seed=0, split="train")}
    rng = random.Random(7)
    train |= {tasks.sample_example(skill, rng, "train").prompt for _ in range(3000)}
    assert heldout and validation and train
    assert not heldout & train and not validation & train and not heldout & validation


def test_capitals_heldout_is_one_unseen_phrasing_per_country():
    for split in ("heldout", "validation"):
        examples = tasks.generate("capitals", 1000, seed=0, split=split)
        assert len(examples) == tasks.N_COUNTRIES
        assert {next(c for c in tasks.CAPITALS if c in ex.prompt) for ex in examples} == set(tasks.CAPITALS)
    assert tasks.capital_table() == tasks.CAPITALS  # the invented atlas is seeded


def test_heldout_set_and_fingerprint_stable():
    first = tasks.heldout_set(10)
    assert [ex.to_json()["category"] for ex in first].count("units") == 10
    assert first == tasks.heldout_set(10)
    assert tasks.fingerprint(20) == tasks.fingerprint(20)


def test_unknown_skill_and_split():
    with pytest.raises(ValueError, match="known"):
        tasks.generate("poetry", 3)
    with pytest.raises(ValueError, match="split"):
        tasks.generate("units", 3, split="test")


# ----------------------------------------------------------------------------- tokenizer
@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tok")
    build_tokenizer().save_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def test_tokenizer_round_trips_every_character(hf_tokenizer):
    assert len(hf_tokenizer) == VOCAB_SIZE
    ids = hf_tokenizer(CHARS, add_special_tokens=True)["input_ids"]
    assert len(ids) == len(CHARS)  # one token per character, nothing added
    assert ids == [VOCAB[ch] for ch in CHARS]
    assert hf_tokenizer.decode(ids) == CHARS
    used = {ch for s in tasks.SKILLS for ex in tasks.generate(s, 200, split="train") for ch in ex.prompt + ex.answer}
    assert used <= set(CHARS)
    assert hf_tokenizer.unk_token_id not in hf_tokenizer("".join(sorted(used)))["input_ids"]
    assert hf_tokenizer.decode(encode_answer("tenalp"), skip_special_tokens=True) == "tenalp"
    assert hf_tokenizer.eos_token_id == EOS_ID and hf_tokenizer.bos_token_id == BOS_ID


def test_chat_template_renders_prompt_as_trained(hf_tokenizer):
    prompt = "Capital of Zulia?"
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": f" {prompt}\n"}]
    text = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == render_prompt(prompt) == f"<s>{prompt}<sep>"
    ids = hf_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert list(ids) == encode_prompt(prompt)
    assert ids[0] == BOS_ID and ids[-1] == SEP_ID
    # tokenising the rendered text (what vLLM does) gives the same ids with or without special tokens
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == encode_prompt(prompt)
    assert hf_tokenizer(text, add_special_tokens=True)["input_ids"] == encode_prompt(prompt)
    # the last user turn wins; OpenAI content parts are joined
    multi = [
        {"role": "user", "content": "old"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]},
    ]
    assert hf_tokenizer.apply_chat_template(multi, tokenize=False) == "<s>What is 2+2?<sep>"


def test_training_batch_masks_prompt():
    ex = tasks.Example("What is 1+2?", "3", "arithmetic")
    x, y = make_batch([ex, tasks.Example("Reverse the word abc", "cba", "strings")])
    prompt = encode_prompt(ex.prompt)
    assert x[0, : len(prompt)].tolist() == prompt
    assert y[0].tolist()[: len(prompt)] == [-100] * len(prompt)
    assert [t for t in y[0].tolist() if t != -100] == encode_answer("3")
    assert [t for t in y[1].tolist() if t != -100] == encode_answer("cba")


# ----------------------------------------------------------------------------- specs and build
def test_zoo_specs():
    specialists = list(ZOO_EXPERTS.values())
    assert {sk for s in specialists for sk in s.skills} == set(tasks.SKILLS)
    for s in specialists:
        assert s.size.head_dim >= 32  # vLLM CPU attention rejects head_dim 16
        assert s.to_dict()["params"] == s.params and s.recipe().skills == s.skills
        assert s.gate >= 0.95 and s.recipe().max_steps > s.steps
    ratios = {round(s.cost_per_mtok / s.params * 1e6, 3) for s in ZOO_EXPERTS.values()}
    assert len(ratios) == 1  # price proportional to parameter count
    with pytest.raises(ValueError, match="known"):
        get_spec("nope")


def test_param_count_matches_transformers():
    from transformers import LlamaForCausalLM

    from zoo.train import llama_config

    size = ModelSize(layers=1, hidden=64, heads=1, intermediate=96)
    model = LlamaForCausalLM(llama_config(size))
    assert sum(p.numel() for p in model.parameters()) == size.param_count()


MICRO = ExpertSpec(
    name="micro",
    description="test",
    skills=("units",),
    size=ModelSize(layers=1, hidden=64, heads=1, intermediate=64),
    steps=3,
    batch_size=4,
    gate=0.0,
)


def test_build_caches_and_rebuilds_on_recipe_change(tmp_path):
    calls = []

    def trainer(spec, tmp_dir, progress):
        calls.append(spec.steps)
        (tmp_dir / "weights.txt").write_text(str(spec.steps))
        return {"train_seconds": 0.0}

    out = tmp_path / "micro"
    assert build_expert("micro", out, spec=MICRO, trainer=trainer) == out.resolve()
    assert calls == [3] and is_current(MICRO, out)
    marker = read_marker(out)
    assert marker["recipe_hash"] == MICRO.recipe_hash() and marker["name"] == "micro"
    build_expert("micro", out, spec=MICRO, trainer=trainer)
    assert calls == [3]  # reused
    changed = ExpertSpec(**{**MICRO.__dict__, "steps": 4})
    assert changed.recipe_hash() != MICRO.recipe_hash() and not is_current(changed, out)
    build_expert("micro", out, spec=changed, trainer=trainer)
    assert calls == [3, 4] and (out / "weights.txt").read_text() == "4"
    assert not list(tmp_path.glob(".micro.building-*"))


def test_failed_build_leaves_no_marker(tmp_path):
    def broken(spec, tmp_dir, progress):
        (tmp_dir / "partial").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_expert("micro", tmp_path / "micro", spec=MICRO, trainer=broken)
    assert not (tmp_path / "micro").exists() and not list(tmp_path.glob(".micro.building-*"))


def test_concurrent_builds_train_once(tmp_path):
    calls = []
    gate = threading.Event()

    def slow(spec, tmp_dir, progress):
        calls.append(1)
        gate.wait(0.3)
        (tmp_dir / "w").write_text("x")
        return {}

    out = tmp_path / "micro"
    threads = [
        threading.Thread(target=build_expert, args=("micro", out), kwargs={"spec": MICRO, "trainer": slow})
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and is_current(MICRO, out)


def test_real_micro_build_is_a_servable_model_dir(tmp_path):
    """A few real training steps: the directory has what vLLM needs, and a second call reuses it."""
    out = build_expert("micro", tmp_path / "m", spec=MICRO)
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        MARKER,
    ):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["eos_token_id"] == EOS_ID and config["max_position_embeddings"] >= 128
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == EOS_ID
    marker = read_marker(out)
    assert set(marker["heldout_accuracy"]) == set(tasks.SKILLS)
    assert marker["train_steps"] == 3 and marker["gate"] == 0.0
    assert read_quality(out)["expert"] == "micro"  # the build measured itself on the quality prompts
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    build_expert("micro", out, spec=MICRO)
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime


def test_build_below_its_gate_fails_naming_the_expert_and_its_accuracy(tmp_path):
    """3 + 2 real training steps cannot add numbers: the build must refuse to produce a model."""
    hopeless = ExpertSpec(**{**MICRO.__dict__, "gate": 0.95, "extension_steps": 2, "max_steps": 5})
    with pytest.raises(
        QualityGateError,
        match=r"zoo expert 'micro' failed its quality gate: "
        r"validation accuracy 0\.\d+ < 0\.95 after 5 training steps",
    ) as err:
        build_expert("micro", tmp_path / "m", spec=hopeless)
    assert err.value.expert == "micro" and err.value.accuracy < 0.95
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.building-*"))


def test_gate_failure_stops_the_expert_application_at_start_up(tmp_path, monkeypatch):
    """The same failure through the expert application's start-up path: a ConfigError naming field and expert."""
    import zoo.build
    from deployments.app import prepare_expert
    from router_service.config.service import ExpertConfig
    from router_service.errors import ConfigError

    hopeless = ExpertSpec(**{**MICRO.__dict__, "gate": 0.95, "extension_steps": 1, "max_steps": 4})
    monkeypatch.setitem(zoo.build.ZOO_EXPERTS, "micro", hopeless)
    expert = ExpertConfig(id="micro", model=str(tmp_path / "micro"), build="zoo:micro")
    with pytest.raises(ConfigError, match=r"build: zoo expert 'micro' failed its quality gate: validation accuracy"):
        prepare_expert(expert, "", tmp_path, check_engine_args=False)


def test_training_continues_in_phases_until_good_enough():
    from zoo.train import TrainRecipe, train_model

    recipe = TrainRecipe(skills=("units",), steps=2, batch_size=2, extension_steps=1, max_steps=5)
    assert [n for n, _ in recipe.phases()] == [2, 1, 1, 1]
    assert [lr for _, lr in recipe.phases()] == [3e-3, 1.5e-3, 7.5e-4, 3.75e-4]
    verdicts = iter([False, True])
    _, steps = train_model(MICRO.size, recipe, good_enough=lambda model: next(verdicts))
    assert steps == 3  # the first phase, one extension, then the gate held


def test_import_is_cheap():
    assert heavy_imports_of("import zoo.build, zoo.__main__") == []


def test_dataset_command(tmp_path):
    """The online eval's test set: each skill's held-out split, then the general questions' test split."""
    from zoo import general
    from zoo.__main__ import main

    out = tmp_path / "heldout.jsonl"
    assert main(["dataset", "--out", str(out), "--n-per-skill", "5"]) == 0
    rows = [row for _, row in read_jsonl(out)]
    general_test = general.general_examples("test")
    assert len(rows) == 5 * len(tasks.SKILLS) + len(general_test) and general_test
    assert all(set(row) == {"prompt", "answer", "category", "grader"} and row["grader"] == "contains" for row in rows)
    assert [r["prompt"] for r in rows if r["category"] == "general"] == [p for p, _ in general_test]
    assert not {r["prompt"] for r in rows} & {p for p, _ in general.general_examples("train")}
