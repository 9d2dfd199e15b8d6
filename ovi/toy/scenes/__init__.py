"""One module per scene kind. Each has ``render(rng, size) -> (frames uint8 [T, H, W, 3], audio float32 [N],
truth dict)``; ``ovi.toy.world`` adds the caption and the clip-level fields."""
