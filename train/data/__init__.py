"""Training data: raw clip -> model input (media.py), latent format (latents.py), the resumable shard
stream (stream.py), batching (loader.py). The shard format itself is data_pipeline/shards.py."""
