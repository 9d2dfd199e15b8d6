"""Training data: shard streams (shards.py), decoding (media.py, latents.py), batching (loader.py)."""
