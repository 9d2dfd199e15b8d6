"""Which weight file each learned metric needs and where it is published; nothing is downloaded at run time.

Every metric takes its weights as a local path (``--weights name=PATH`` on the CLI). A missing one stops that
metric with one line naming the file and where to get it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightSpec:
    file: str  # what to pass (a file or a folder)
    published: str  # where it is published


WEIGHTS: dict[str, WeightSpec] = {
    "panns": WeightSpec("Cnn14_16k_mAP=0.438.pth", "zenodo.org/record/3987831 (PANNs, Kong et al.)"),
    "clap": WeightSpec("a transformers CLAP folder, e.g. laion/larger_clap_general",
                       "huggingface.co/laion/larger_clap_general"),
    "whisper": WeightSpec("a transformers Whisper folder, e.g. openai/whisper-large-v3",
                          "huggingface.co/openai/whisper-large-v3"),
    "audiobox": WeightSpec("checkpoint.pt (audiobox-aesthetics)",
                           "huggingface.co/facebook/audiobox-aesthetics"),
    "clip": WeightSpec("a transformers CLIP folder, e.g. openai/clip-vit-large-patch14",
                       "huggingface.co/openai/clip-vit-large-patch14"),
    "i3d": WeightSpec("i3d_pretrained_400.pt (cd-fvd's I3D)", "github.com/songweige/content-debiased-fvd"),
    "s3fd": WeightSpec("sfd_face.pth", "github.com/joonson/syncnet_python (download_model.sh)"),
    "syncnet": WeightSpec("syncnet_v2.model", "github.com/joonson/syncnet_python (download_model.sh)"),
    "desync": WeightSpec("synchformer_state_dict.pth (or the authors' 24-01-04T16-39-21.pt)",
                         "github.com/hkchengrex/MMAudio/releases/download/v0.1/synchformer_state_dict.pth; the .pt: "
                         "github.com/v-iashin/Synchformer (24-01-04T16-39-21, AudioSet)"),
}


class MissingWeights(FileNotFoundError):
    """A metric's weight file was not given or does not exist."""


def weight_path(weights: dict[str, str | Path], name: str) -> Path:
    """The local path given for ``name``; raises MissingWeights naming the file and where it is published."""
    spec = WEIGHTS[name]
    given = weights.get(name)
    if given is None:
        raise MissingWeights(f"{name}: needs {spec.file} from {spec.published}; pass --weights {name}=PATH")
    path = Path(given)
    if not path.exists():
        raise MissingWeights(f"{name}: {path} does not exist; it should be {spec.file} from {spec.published}")
    return path
