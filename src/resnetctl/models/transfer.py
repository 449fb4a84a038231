"""Starting a model from another one's weights (fine-tuning): every layer whose name and weight
shapes match is copied; the rest (a classifier for another class count) keeps its fresh init.

The input normalisation keeps the new dataset's mean and std, and the augmentation layer its
own seed: both describe the data, not what was learnt.
"""

from __future__ import annotations

NOT_LEARNT = ("normalize", "augment")  # builder layer names that belong to the dataset


def load_matching_weights(model, source) -> dict:
    """Copy ``source``'s weights into ``model`` layer by layer; returns what was loaded and skipped."""
    by_name = {layer.name: layer for layer in source.layers}
    loaded, skipped = [], []
    for layer in model.layers:
        if not layer.weights or layer.name in NOT_LEARNT:
            continue
        other = by_name.get(layer.name)
        if other is None:
            skipped.append({"layer": layer.name, "reason": "not in the source"})
            continue
        mine, theirs = layer.get_weights(), other.get_weights()
        shapes = [w.shape for w in mine], [w.shape for w in theirs]
        if shapes[0] != shapes[1]:
            skipped.append({"layer": layer.name, "reason": f"shapes {shapes[1]} in the source, {shapes[0]} here"})
            continue
        layer.set_weights(theirs)
        loaded.append(layer.name)
    return {"loaded_layers": len(loaded), "skipped": skipped}
