"""ml_collections configs; importable as `configs` so that one config can build on another."""
