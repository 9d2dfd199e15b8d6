"""The Ovi trainer (OVI §4.2-4.3): audio-tower pretraining and fine-tuning, audio-video fusion training.

    cli.py            ovi-train entry point: YAML config + overrides -> trainer.train
    config.py         the config schema (configs/train/*.yaml) and its cross-field checks
    trainer.py        the loop: data -> objective -> DeepSpeed step, logging, checkpoints, export
    objective.py      rectified-flow noising, velocity target, condition dropout, losses
    model_init.py     the stage's model and its starting weights (Wan DiT, stage exports, Ovi files)
    params.py         trainable / frozen parameters by name pattern
    engine.py         process group, DeepSpeed config, AdamW + schedule
    checkpoint.py     atomic save / exact resume, fallback past damaged checkpoints, data slots (elastic resume)
    preflight.py      every input checked before anything is built
    run_lock.py       one trainer per run folder; workers end with their launcher
    memory.py         --dry-run: build model + engine, per-rank peak memory
    export.py         checkpoint -> one safetensors file (release key format)
    metrics.py        FLOP / MFU estimate, metric sinks
    encoders.py       encoder protocol, codec geometry, tiny stand-ins; released_encoders.py the real ones
    precompute.py     raw shards -> latent shards
    synthetic.py      small datasets in the data pipeline's format (tests, benchmarks, smoke runs)
    data/             shard streams, decoding, latent format, batching
See train/README.md.
"""
