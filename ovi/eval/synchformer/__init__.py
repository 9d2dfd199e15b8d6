"""Synchformer (Iashin et al. 2024, "Synchformer: Efficient Synchronization from Sparse Cues") and the DeSync
metric MMAudio's av-benchmark computes with it, written by hand: the authors publish code and weights but no
installable package, and the project does not vendor code. Weights by path: ``load_synchformer``.
"""
from ovi.eval.synchformer.config import RELEASE, WINDOW, SynchformerConfig, SyncWindow, tiny_config
from ovi.eval.synchformer.metric import DesyncMetric
from ovi.eval.synchformer.model import Synchformer, load_synchformer

__all__ = ["RELEASE", "WINDOW", "DesyncMetric", "SyncWindow", "Synchformer", "SynchformerConfig", "load_synchformer",
           "tiny_config"]
