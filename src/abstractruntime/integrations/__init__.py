"""Optional integrations. Each is an explicit opt-in to its dependency; the kernel imports none."""
