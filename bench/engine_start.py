"""vLLM CPU engine start and generation time, eager against torch.compile, for one model folder.

    VLLM_CPU_KVCACHE_SPACE=1 python bench/engine_start.py models/smollm2-135m-instruct eager 1024
    VLLM_CPU_KVCACHE_SPACE=1 python bench/engine_start.py models/smollm2-135m-instruct compiled 1024

Prints one RESULT line (start seconds, seconds for 16 chat prompts × 32 tokens, two answers). Run the
two modes one after the other on the same machine and compare; nothing here asserts anything.
"""

import os
import sys
import time
from typing import Any, cast

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

if __name__ == "__main__":  # vLLM spawns worker processes
    from vllm import LLM, SamplingParams

    model, eager, max_len = sys.argv[1], sys.argv[2] == "eager", int(sys.argv[3])
    started = time.time()
    llm = LLM(model=model, dtype="float32", max_model_len=max_len, max_num_seqs=16, enforce_eager=eager)
    start_s = time.time() - started
    started = time.time()
    outs = llm.chat(
        cast(Any, [[{"role": "user", "content": p}] for p in ["What is 37+45?", "What is the capital of France?"] * 8]),
        SamplingParams(temperature=0, max_tokens=32),
        use_tqdm=False,
    )
    gen_s = time.time() - started
    print(
        f"RESULT {model} eager={eager} start={start_s:.1f}s generate16x32={gen_s:.2f}s :: "
        f"{outs[0].outputs[0].text!r} {outs[1].outputs[0].text!r}",
        flush=True,
    )
