"""endmark replicas on Ray Serve: whole single-model servers behind one address."""
