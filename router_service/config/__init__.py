"""What the YAML says, validated: service settings (`service`) and the split deployment's per-application
settings (`apps`). Pure pydantic; must not import serving, routing internals, Ray or vLLM.
Serve's file shape (applications, import paths) is read in `deployments.serve_config`, not here.
"""
