"""Several models behind one address: the catalog, a worker process per model, the router."""
