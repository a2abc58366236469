"""Multi-label losses on logits (BCE, LSEP) and per-sample mixup, in plain TF ops (tf.data/train_step)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import tensorflow as tf

from trainer.features import MASK, NUM_FRAMES

Loss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def bce_with_logits(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy of sigmoid(logits) and (possibly soft) targets, mean over classes and batch."""
    labels = tf.cast(y_true, logits.dtype)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def _weighted_logsumexp(values: tf.Tensor, weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """log(sum_j w_j exp(v_j)) over the last axis counting only w_j > 0, and whether any w_j > 0.

    Rows without any weight get 0 (not -inf); no inf or NaN reaches the values or the gradients.
    """
    included = weights > 0
    has_any = tf.reduce_any(included, axis=-1)
    terms = values + tf.math.log(tf.where(included, weights, tf.ones_like(weights)))
    lowest = tf.fill(tf.shape(terms), terms.dtype.min)
    peak = tf.reduce_max(tf.where(included, terms, lowest), axis=-1, keepdims=True)
    peak = tf.stop_gradient(tf.where(has_any[..., None], peak, tf.zeros_like(peak)))
    offsets = tf.where(included, terms - peak, tf.zeros_like(terms))
    total = tf.reduce_sum(tf.where(included, tf.exp(offsets), tf.zeros_like(offsets)), axis=-1)
    return tf.squeeze(peak, -1) + tf.math.log(tf.where(has_any, total, tf.ones_like(total))), has_any


def lsep(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Log-Sum-Exp Pairwise ranking loss (Li et al. 2017), mean over the batch.

    Per video: log(1 + sum_{i positive, j negative} exp(s_j - s_i)), evaluated as
    softplus(logsumexp_j(s_j) + logsumexp_i(-s_i)) in O(classes). Soft targets (mixup) weight pair (i, j)
    by y_i * (1 - y_j). Videos without a positive or without a negative have no pairs and a loss of 0.
    """
    labels = tf.cast(y_true, logits.dtype)
    log_negatives, has_negative = _weighted_logsumexp(logits, 1.0 - labels)
    log_positives, has_positive = _weighted_logsumexp(-logits, labels)
    per_video = tf.nn.softplus(log_negatives + log_positives)
    return tf.reduce_mean(tf.where(has_negative & has_positive, per_video, tf.zeros_like(per_video)))


LOSSES: Mapping[str, Loss] = {"bce": bce_with_logits, "lsep": lsep}


def get_loss(name: str) -> Loss:
    """The loss function called `name` ("bce" or "lsep")."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    return LOSSES[name]


def _stateless_seed(seed: int | tf.Tensor) -> tf.Tensor:
    seed = tf.cast(seed, tf.int64)
    return tf.stack([seed, tf.zeros_like(seed)]) if seed.shape.rank == 0 else seed


def mixup(
    features: Mapping[str, tf.Tensor], labels: tf.Tensor, alpha: float, seed: int | tf.Tensor
) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """Mixes each sample with a shuffled partner of its batch by a per-sample lambda ~ Beta(alpha, alpha).

    Every float feature and the targets become lambda * own + (1 - lambda) * partner's; the frame mask and
    num_frames become the max of the two; other non-float features (ids) stay. alpha 0 returns the inputs.
    `seed` is a stateless seed (an int or a shape-[2] int tensor); vary it per batch: (seed, batch_index).
    """
    if alpha < 0:
        raise ValueError(f"mixup alpha must be >= 0, got {alpha}")
    if alpha == 0:
        return dict(features), labels
    first_seed, second_seed, shuffle_seed = tf.unstack(
        tf.random.experimental.stateless_split(_stateless_seed(seed), num=3)
    )
    labels = tf.convert_to_tensor(labels)
    batch_size = tf.shape(labels)[:1]
    first = tf.random.stateless_gamma(batch_size, seed=first_seed, alpha=alpha)
    second = tf.random.stateless_gamma(batch_size, seed=second_seed, alpha=alpha)
    total = first + second
    # Both gammas can underflow to 0 for a small alpha; such a sample keeps itself.
    weights = tf.where(
        total > 0, first / tf.where(total > 0, total, tf.ones_like(total)), tf.ones_like(total)
    )
    partners = tf.argsort(tf.random.stateless_uniform(batch_size, seed=shuffle_seed))

    def mix(values: tf.Tensor) -> tf.Tensor:
        own_weight = tf.reshape(tf.cast(weights, values.dtype), [-1] + [1] * (values.shape.rank - 1))
        return own_weight * values + (1.0 - own_weight) * tf.gather(values, partners)

    mixed = {}
    for key, values in features.items():
        values = tf.convert_to_tensor(values)
        if key in (MASK, NUM_FRAMES):
            mixed[key] = tf.maximum(values, tf.gather(values, partners))
        elif values.dtype.is_floating:
            mixed[key] = mix(values)
        else:
            mixed[key] = values
    targets = labels if labels.dtype.is_floating else tf.cast(labels, tf.float32)
    return mixed, mix(targets)
