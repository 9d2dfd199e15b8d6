"""Evaluation of generated clips (``ovi-eval``): sync, audio, video and toy-world metrics, benchmark prompt
sets, cross-attention maps.

    from ovi.eval import evaluate
    report = evaluate("outputs/run", metrics=["toy", "panns"], weights={"panns": "Cnn14_16k_mAP=0.438.pth"})
"""
from ovi.eval.run import evaluate, score_clips

__all__ = ["evaluate", "score_clips"]
