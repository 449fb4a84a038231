"""Cross-entropy on integer labels with label smoothing (Keras' sparse loss has no smoothing)
and the targets of MixUp/CutMix."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="resnetctl")
class SparseCrossentropy(keras.losses.Loss):
    """``SparseCategoricalCrossentropy`` plus ``label_smoothing``, on probabilities or logits.

    ``mix``: the model's :class:`resnetctl.models.layers.BatchMix`; its ``own_share`` of this
    step mixes each one-hot target with the mirrored image's, as the images were mixed, before
    smoothing. Not serialised: a reloaded loss is the plain one (training recompiles anyway).
    """

    def __init__(self, label_smoothing=0.0, from_logits=False, name="sparse_crossentropy", mix=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)
        self.mix = mix

    def call(self, y_true, y_pred):
        num_classes = y_pred.shape[-1]
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        one_hot = ops.one_hot(labels, num_classes, dtype=y_pred.dtype)
        if self.mix is not None:
            share = ops.cast(self.mix.own_share, y_pred.dtype)
            one_hot = share * one_hot + (1.0 - share) * ops.flip(one_hot, axis=0)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {
            **super().get_config(),
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
        }
