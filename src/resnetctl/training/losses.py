"""Cross-entropy on integer labels with label smoothing (Keras' sparse loss has no smoothing)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="resnetctl")
class SparseCrossentropy(keras.losses.Loss):
    """``SparseCategoricalCrossentropy`` plus ``label_smoothing``, on probabilities or logits."""

    def __init__(self, label_smoothing=0.0, from_logits=False, name="sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        num_classes = y_pred.shape[-1]
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        one_hot = ops.one_hot(labels, num_classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {
            **super().get_config(),
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
        }
