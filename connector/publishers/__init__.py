"""Publisher adapters: one module per external system, one interface (base.py)."""
