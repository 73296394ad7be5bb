"""`python -m router_service.fit` keeps working for existing users; the CLI is `router_service.cli.fit`."""

from router_service.cli.fit import main

if __name__ == "__main__":
    raise SystemExit(main())
