"""Install: ``scripts/install.sh`` (see README.md), which runs ``pip install -e ".[dev]"`` plus the two
packages whose metadata cannot be used as it is (syncnet-python, scenedetect 0.6).

torch is required but never upgraded here: an installed build (CPU, or CUDA on a GPU host) satisfies the
loose ``torch>=2.4`` pin and is kept. Every third-party module the code imports is declared below, except
the optional ones it imports only when asked: flash_attn (attention backend), torchvision (RAFT motion
filter), wandb (training metrics).
"""
from setuptools import find_packages, setup

CORE = [
    "torch>=2.4",
    "numpy>=1.26",
    "safetensors>=0.4",
    "omegaconf>=2.3",
    "tqdm>=4.66",
    "diffusers>=0.42",  # UniPCMultistepScheduler.set_timesteps(sigmas=...) in flow mode
    "transformers>=5.0",  # the encoder loader follows 5.x: T5 embeddings always tied, from_pretrained(dtype=)
    "tokenizers>=0.21",  # the random components' in-memory tokenizer
    "regex>=2023.0",  # prompt cleaning
    "huggingface_hub>=0.30",
    "sentencepiece>=0.2",
    "ftfy>=6.2",
    "bigvgan>=2.4",
    "soundfile>=0.12",
    "av>=12",  # video decoding and mp4 muxing (ovi.media)
    "pillow>=10",
    "peft>=0.13",  # LoRA adapters (ovi/lora.py): training, and loading onto the release in generation
]
TRAIN = [
    "deepspeed>=0.15",
    "tensorboard>=2.15",
]
DATA = [
    "webdataset>=0.2.100",
    "opencv-python-headless>=4.8",
    # scenedetect 0.6.7.1 and syncnet-python are installed with --no-deps by scripts/install.sh: syncnet-python
    # imports scenedetect.video_manager (gone in 0.7), and 0.6's click<8.3 pin would make pip backtrack
    # huggingface_hub/transformers/diffusers. What the two import, declared here instead:
    "platformdirs>=3",
    "click>=8",
    "python_speech_features>=0.6",
    "ffmpeg-python>=0.2",
    "scipy>=1.10",
    "pyarrow>=14",
    "ray[data]>=2.9",
    "fsspec>=2023.1",  # bucket inputs (s3://, gs://) through fsspec
]
# ovi-eval's metric libraries. cd-fvd and audiobox-aesthetics are installed with --no-deps by
# scripts/install.sh: their torchvision/torchaudio pins would replace the installed torch build, and only their
# model code is imported (cd-fvd's InceptionI3d, audiobox's AesMultiOutput).
EVAL = [
    "jiwer>=3.0",  # WER
    "panns-inference>=0.1",  # Cnn14 (imported without its __init__, which downloads a label csv)
    "torchlibrosa>=0.1",
    "matplotlib>=3.7",  # plots, attention figures
]
DEV = ["pytest>=8", "pytest-timeout>=2.3"]
UI = ["gradio>=5", "selenium>=4.20"]  # ovi-ui; selenium drives the browser test (Debian chromium)
QUANT = ["torchao>=0.18"]  # quantize=fp8_scaled | int8 (ovi/models/quant.py)

setup(
    name="ovi",
    version="0.1.0",
    description="Ovi-style twin-backbone audio-video generation: model, generation, training, data pipeline",
    python_requires=">=3.10",
    packages=find_packages(include=["ovi", "ovi.*", "train", "train.*", "data_pipeline", "data_pipeline.*"]),
    install_requires=CORE,
    extras_require={
        "train": TRAIN,
        "data": DATA,
        "eval": EVAL,
        "ui": UI,
        "quant": QUANT,
        "dev": sorted(set(TRAIN + DATA + EVAL + UI + QUANT + DEV)),
    },
    entry_points={
        "console_scripts": [
            "ovi-generate=ovi.cli.generate:main",
            "ovi-ui=ovi.cli.ui:main",
            "ovi-download=ovi.cli.download:main",
            "ovi-train=train.cli:main",
            "ovi-data=data_pipeline.cli:main",
            "ovi-toy=ovi.toy.cli:main",
            "ovi-eval=ovi.eval.cli:main",
        ]
    },
)
