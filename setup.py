"""Install: ``pip install -e ".[dev]"`` (see README.md).

torch is required but never upgraded here: install the build you want first (CPU, or CUDA on a GPU
host) and the loose ``torch>=2.4`` pin keeps it.
"""
from setuptools import find_packages, setup

CORE = [
    "torch>=2.4",
    "numpy>=1.26",
    "safetensors>=0.4",
    "omegaconf>=2.3",
    "tqdm>=4.66",
    "diffusers>=0.42",  # UniPCMultistepScheduler.set_timesteps(sigmas=...) in flow mode
    "transformers>=4.51",
    "huggingface_hub>=0.30",
    "sentencepiece>=0.2",
    "ftfy>=6.2",
    "bigvgan>=2.4",
    "soundfile>=0.12",
    "av>=12",
    "imageio-ffmpeg>=0.5",
    "pillow>=10",
]
TRAIN = [
    "deepspeed>=0.15",
    "tensorboard>=2.15",
]
DATA = [
    "decord>=0.6",
    "webdataset>=0.2.100",
    "opencv-python-headless>=4.8",
    # scenedetect 0.6.7.1 and syncnet-python are installed with --no-deps by the README's set-up command:
    # syncnet-python imports scenedetect.video_manager (gone in 0.7), and 0.6's click<8.3 pin would make pip
    # backtrack huggingface_hub/transformers/diffusers. These are scenedetect 0.6's own requirements:
    "platformdirs>=3",
    "click>=8",
    "python_speech_features>=0.6",
    "ffmpeg-python>=0.2",
    "scipy>=1.10",
    "pyarrow>=14",
    "ray[data]>=2.9",
    "fsspec>=2023.1",  # bucket inputs (s3://, gs://) through fsspec
]
DEV = ["pytest>=8", "pytest-timeout>=2.3"]

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
        "dev": sorted(set(TRAIN + DATA + DEV)),
    },
    entry_points={
        "console_scripts": [
            "ovi-generate=ovi.cli.generate:main",
            "ovi-download=ovi.cli.download:main",
            "ovi-train=train.cli:main",
            "ovi-data=data_pipeline.cli:main",
        ]
    },
)
