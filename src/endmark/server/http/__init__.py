"""Shared HTTP plumbing: errors, keys and limits, disconnects, the stream writer, the relay.

Nothing here imports a dialect, so router mode and the replicas use it too."""
