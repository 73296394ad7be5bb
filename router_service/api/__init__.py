"""The HTTP edge: routes (`app`), guards (keys, limits, body size), the OpenAI wire schema (`schema`) and
response shaping (`shaping`). It validates and maps errors; it never routes or calls experts itself.
Must not import Ray, vLLM or torch.
"""
