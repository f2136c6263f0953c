"""Running the per-capture analysis elsewhere than in this process: a Dask distributed cluster."""
