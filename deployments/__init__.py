"""Ray Serve application for CoE Router: thin deployments over the Ray-free `router_service` core."""
