"""Ovi's data pipeline (paper §3): raw videos -> probe -> split -> filter -> sync -> caption -> pack ->
webdataset shards, plus the audio-only path for stage-1 data. See data_pipeline/README.md."""
