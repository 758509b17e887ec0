"""Other systems' config formats, converted to ours (pure: no I/O, no validation)."""
