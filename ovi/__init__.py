"""ovi: twin-backbone (video + audio) diffusion transformer that generates synchronized video and sound."""

__version__ = "0.1.0"
