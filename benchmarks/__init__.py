"""The benchmark harness: endmark beside its peers, same model, threads and prompts, one run."""
