"""Delivery: the engine that publishes batches with retries (engine.py) and the parking of
sinks that are down, with their drains (parking.py)."""
