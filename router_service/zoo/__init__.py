"""The local expert zoo: small specialist and generalist LLMs trained by the project itself.

Four skills whose answers can be checked exactly (`tasks.SKILLS`: arithmetic, strings, units,
capitals), one specialist per skill and a larger, pricier generalist (`build.ZOO_EXPERTS`), each a
`LlamaForCausalLM` with a shared character tokenizer that vLLM serves. Build with
`python -m router_service.zoo build` or `build.build_expert(name, out_dir)` (cached, locked,
deterministic). Nothing here imports torch / transformers until a model is built or loaded.
"""
