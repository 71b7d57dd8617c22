"""Core feature modules: one RFC section or XEP per file, each loaded by name from the config."""
