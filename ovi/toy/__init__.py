"""A procedural audio-video world with exact ground truth, and a sync metric measured from media alone.

Four scene kinds (``scenes/``): balls that bounce with an impact sound at each floor contact, lights that
flash with a tone per flash, a drawn face whose mouth follows espeak-ng speech, and a still scene with steady
ambience. ``world.make_clip`` renders a clip of the training geometry plus its ground truth;
``metrics.score_clip`` recovers events, colours, counts and the kind from the pixels and the waveform.

The toy model learnt on it (``ovi-toy rebuild``, shipped in checkpoints/toy): ``fixed_codecs`` are the pixel and
mel-pool codecs in the release codecs' latent shapes (``codecs`` fits and writes them with the tiny text encoder),
``vocoder`` is the Griffin-Lim stand-in for BigVGAN, ``init_fusion`` the stage-2
starting point, ``rebuild`` runs the whole recipe with the project's CLIs, ``evaluate`` and ``attention`` measure
the generated clips (sync, adherence) and the cross-modal attention's time alignment, ``renoise`` which noise levels
the model keeps a real clip's objects through, and ``recovery`` how much of their moving part one model call gives
back at each level.
"""
