"""Attention building blocks (Keras 3): masked scaled dot-product attention and what is built on it.

Everything uses ``Attention(Q, K, V) = softmax(QKᵀ/√d_k)·V``. Masks are boolean, True where a
query may look at a key. Masked keys get exactly zero weight, and a query with no allowed key
(a padding position) gets all-zero weights and a zero output rather than a uniform average, so
explanations never point at padding. Keras' own MultiHeadAttention is not used because it does
neither, and because the encoders need the per-head weights and a learned-query pooling variant.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

NEG_INF = -1e9


def scaled_dot_product_attention(q, k, v, mask=None, empty_rows_zero=True):
    """softmax(QKᵀ/√d_k)·V with a boolean mask.

    q: [..., Lq, d_k], k: [..., Lk, d_k], v: [..., Lk, d_v], mask: broadcastable to [..., Lq, Lk].
    Returns (output [..., Lq, d_v], weights [..., Lq, Lk]); each weight row sums to 1, or to 0
    when the query has no allowed key. Masked keys get exactly 0 (exp(-1e9) underflows).
    ``empty_rows_zero=False`` skips zeroing the rows of queries with no key, one pass over the
    [Lq, Lk] weights forward and backward: for training, where those rows (padding) are zeroed
    downstream anyway.
    """
    q = q * ops.cast(1.0 / math.sqrt(q.shape[-1]), q.dtype)  # scale Q [..., Lq, d], not the scores
    scores = ops.matmul(q, ops.swapaxes(k, -1, -2))  # [..., Lq, Lk]
    if mask is not None:
        mask = ops.cast(mask, "bool")
        scores = ops.where(mask, scores, ops.cast(NEG_INF, scores.dtype))
    weights = ops.softmax(scores, axis=-1)
    if mask is not None and empty_rows_zero:
        weights = weights * ops.cast(mask, weights.dtype)  # rows with no key -> 0
    return ops.matmul(weights, v), weights  # [..., Lq, d_v], [..., Lq, Lk]


def causal_mask(length: int):
    """[L, L]: position t may attend to positions <= t."""
    i = ops.arange(length)
    return ops.expand_dims(i, 1) >= ops.expand_dims(i, 0)


def padding_mask(items):
    """[B, L] bool: True at real steps (item index > 0)."""
    return ops.greater(items, 0)


@keras.saving.register_keras_serializable(package="interest")
class MultiHeadAttention(layers.Layer):
    """Multi-head attention: project to H heads, attend per head, concatenate, project back."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.dropout_rate = dim, heads, dropout
        self.q = layers.Dense(dim, name="q")
        self.k = layers.Dense(dim, name="k")
        self.v = layers.Dense(dim, name="v")
        self.o = layers.Dense(dim, name="o")
        self.drop = layers.Dropout(dropout)

    def build(self, query_shape, key_shape=None):
        key_shape = key_shape or query_shape
        for dense, shape in ((self.q, query_shape), (self.k, key_shape), (self.v, key_shape)):
            dense.build(shape)
        self.o.build((*query_shape[:-1], self.dim))
        self.built = True

    def _split(self, x):
        b, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (b, length, self.heads, self.dim // self.heads))  # [B, L, H, d]
        return ops.transpose(x, (0, 2, 1, 3))  # [B, H, L, d]

    def call(self, query, key=None, attention_mask=None, training=None):
        """query [B, Lq, D], key [B, Lk, D] (default: query), attention_mask [B, Lq, Lk] ->
        (output [B, Lq, D], weights [B, H, Lq, Lk])."""
        key = query if key is None else key
        q, k, v = self._split(self.q(query)), self._split(self.k(key)), self._split(self.v(key))
        m = None if attention_mask is None else ops.expand_dims(attention_mask, 1)  # [B, 1, Lq, Lk]
        # training: rows of padding queries are zeroed by the block after (x * keep)
        out, weights = scaled_dot_product_attention(q, k, v, m, empty_rows_zero=not training)  # [B,H,Lq,d], [B,H,Lq,Lk]
        out = ops.transpose(out, (0, 2, 1, 3))
        out = ops.reshape(out, (ops.shape(out)[0], ops.shape(out)[1], self.dim))  # [B, Lq, D]
        return self.drop(self.o(out), training=training), weights

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "heads": self.heads, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="interest")
class FeedForward(layers.Layer):
    """Position-wise feed-forward: Dense(mult·D, gelu) -> dropout -> Dense(D) -> dropout."""

    def __init__(self, dim: int, mult: int = 2, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.mult, self.dropout_rate = dim, mult, dropout
        self.inner = layers.Dense(dim * mult, activation="gelu", name="inner")
        self.outer = layers.Dense(dim, name="outer")
        self.drop1, self.drop2 = layers.Dropout(dropout), layers.Dropout(dropout)

    def build(self, shape):
        self.inner.build(shape)
        self.outer.build((*shape[:-1], self.dim * self.mult))
        self.built = True

    def call(self, x, training=None):  # [B, L, D] -> [B, L, D]
        h = self.drop1(self.inner(x), training=training)
        return self.drop2(self.outer(h), training=training)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "mult": self.mult, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="interest")
class CausalFilter(layers.Layer):
    """A learned filter over the whole window, per channel: FMLP-Rec's global filter, made causal.

    FMLP-Rec (WWW 2022) and BSARec (AAAI 2024) multiply the sequence's Fourier transform by a
    learned filter: a circular convolution, in which every position also sees the steps after
    it. Here the filter is a learned kernel of ``max_len`` lags per channel applied as a linear,
    causal convolution, ``y[t, d] = Σ_{s<=t} k[t - s, d] · x[s, d]``, so that every position can
    be trained to predict its next item (SASRec's objective) without seeing it. The convolution
    is a [L, L] Toeplitz product per channel, the cost of one attention head.
    """

    def __init__(self, max_len: int, dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.max_len, self.dim, self.dropout_rate = max_len, dim, dropout
        self.drop = layers.Dropout(dropout)

    def build(self, shape):
        # FMLP-Rec's initialisation (0.02 · N(0, 1)): the filter starts near silent
        self.kernel = self.add_weight(
            name="kernel", shape=(self.max_len, self.dim), initializer=keras.initializers.RandomNormal(stddev=0.02)
        )
        self.built = True

    def toeplitz(self, length):
        """[L, L, D]: entry [t, s] is the kernel at lag t - s, and 0 where s is after t."""
        i = ops.arange(length)
        lag = ops.expand_dims(i, 1) - ops.expand_dims(i, 0)  # [L, L]
        taps = ops.take(ops.cast(self.kernel, self.compute_dtype), ops.maximum(lag, 0), axis=0)  # [L, L, D]
        return taps * ops.cast(lag >= 0, taps.dtype)[..., None]

    def call(self, x, keep, training=None, last_only=False):
        """x [B, L, D], keep [B, L] real steps -> (y [B, L', D], mix [B, L', L]); L' = 1 with last_only.

        ``mix`` is how much each position drew on each step (the kernel's magnitude over channels,
        normalised over the real steps): its rows sum to 1, or to 0 with no real step, and it is 0
        on padding and on the future, as attention weights are."""
        real = ops.cast(keep, x.dtype)  # [B, L]
        taps = self.toeplitz(ops.shape(x)[1])  # [L, L, D]
        if last_only:
            taps = taps[-1:]  # [1, L, D]
        y = ops.einsum("tsd,bsd->btd", taps, x * real[..., None])  # [B, L', D]
        weight = ops.mean(ops.abs(taps), axis=-1)[None] * real[:, None, :]  # [B, L', L]
        total = ops.sum(weight, axis=-1, keepdims=True)
        mix = ops.where(total > 0, weight / ops.maximum(total, 1e-12), ops.zeros_like(weight))
        return self.drop(y, training=training), mix

    def get_config(self):
        return {**super().get_config(), "max_len": self.max_len, "dim": self.dim, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="interest")
class TransformerBlock(layers.Layer):
    """Pre-norm block: x + MHA(LN(x)), then + FFN(LN(.)); padding positions are zeroed after each.

    With ``filter_mix`` α > 0 (and ``max_len``), BSARec's mix: x + (1 - α) · MHA(LN(x)) + α ·
    filter(LN(x)), a causal learned filter (``CausalFilter``) beside attention; α = 1 is a
    filter-only block (FMLP-Rec's). The weights it returns then mix the same way, so that an
    explanation also covers what the filter drew on.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ff_mult: int = 2,
        dropout: float = 0.0,
        filter_mix: float = 0.0,
        max_len: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dim, self.heads, self.ff_mult, self.dropout_rate = dim, heads, ff_mult, dropout
        self.filter_mix, self.max_len = filter_mix, max_len
        self.norm1 = layers.LayerNormalization(epsilon=1e-6, name="norm1")
        self.attn = MultiHeadAttention(dim, heads, dropout, name="attn")
        self.filter = CausalFilter(max_len, dim, dropout, name="filter") if filter_mix > 0 else None
        self.norm2 = layers.LayerNormalization(epsilon=1e-6, name="norm2")
        self.ff = FeedForward(dim, ff_mult, dropout, name="ff")

    def build(self, shape):
        self.norm1.build(shape)
        self.attn.build(shape)
        if self.filter is not None:
            self.filter.build(shape)
        self.norm2.build(shape)
        self.ff.build(shape)
        self.built = True

    def call(self, x, attention_mask, keep, training=None, last_only=False):
        """x [B, L, D], attention_mask [B, L, L] (who attends to whom), keep [B, L] (real steps) ->
        (x [B, L, D], weights [B, H, L, L]).

        ``last_only``: only the last position queries (every position is still a key), so the
        outputs are x [B, 1, D] and weights [B, H, 1, L]: a final block at inference, where the
        user embedding is the last state and the others would be computed for nothing.
        """
        real = keep  # [B, L] bool
        keep = ops.expand_dims(ops.cast(keep, x.dtype), -1)  # [B, L, 1]
        normed = self.norm1(x)  # [B, L, D]
        query = normed
        if last_only:  # the last position queries alone: [B, 1, ...]
            x, keep, attention_mask, query = x[:, -1:], keep[:, -1:], attention_mask[:, -1:], normed[:, -1:]
        h, weights = self.attn(query, normed, attention_mask=attention_mask, training=training)
        if self.filter is not None:  # BSARec: (1 - α) · attention + α · the causal filter
            a = self.filter_mix
            f, mix = self.filter(normed, real, training=training, last_only=last_only)  # [B, L', D], [B, L', L]
            h = (1.0 - a) * h + a * f
            weights = (1.0 - a) * weights + a * ops.cast(ops.expand_dims(mix, 1), weights.dtype)  # [B, H, L', L]
        x = (x + h) * keep
        x = (x + self.ff(self.norm2(x), training=training)) * keep
        return x, weights

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "heads": self.heads,
            "ff_mult": self.ff_mult,
            "dropout": self.dropout_rate,
            "filter_mix": self.filter_mix,
            "max_len": self.max_len,
        }


@keras.saving.register_keras_serializable(package="interest")
class QueryPooling(layers.Layer):
    """Attention pooling with a learned query per head (HAN's context vector, in Q·K form).

    For every query position t it pools the keys allowed by ``mask[t]``:
    weights[t, j] = softmax_j((u + W_q x_t)·W_k x_j / √d), output[t] = Σ_j weights[t, j]·W_v x_j.
    With ``W_q`` the query also depends on position t's own state, so pooling can adapt to
    what the user does now; ``u`` alone is the classic HAN context vector.
    """

    def __init__(self, dim: int, heads: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads = dim, heads
        self.key = layers.Dense(dim, activation="tanh", name="key")  # HAN's u = tanh(W h + b)
        self.query = layers.Dense(dim, name="query")
        self.value = layers.Dense(dim, name="value")

    def build(self, shape):
        self.context = self.add_weight(
            name="context", shape=(self.heads, self.dim // self.heads), initializer="glorot_uniform"
        )
        self.key.build(shape)
        self.query.build(shape)
        self.value.build(shape)
        self.built = True

    def _heads(self, x):  # [B, L, D] -> [B, H, L, d]
        b, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (b, length, self.heads, self.dim // self.heads))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, query_states, key_states, attention_mask):
        """query_states [B, Lq, D], key_states [B, Lk, D], attention_mask [B, Lq, Lk] ->
        (pooled [B, Lq, D], weights [B, H, Lq, Lk])."""
        q = self._heads(self.query(query_states))  # [B, H, Lq, d]
        q = q + ops.reshape(self.context, (1, self.heads, 1, self.dim // self.heads))
        k, v = self._heads(self.key(key_states)), self._heads(self.value(key_states))
        out, weights = scaled_dot_product_attention(q, k, v, ops.expand_dims(attention_mask, 1))
        out = ops.transpose(out, (0, 2, 1, 3))
        out = ops.reshape(out, (ops.shape(out)[0], ops.shape(out)[1], self.dim))  # [B, Lq, D]
        return out, weights

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "heads": self.heads}


@keras.saving.register_keras_serializable(package="interest")
class SequenceEmbedding(layers.Layer):
    """Item (+ position, event type, time gap) embeddings of a padded sequence: [B, L] ids -> [B, L, D].

    The item table doubles as the output layer (scores are dot products with it), so it is
    exposed as ``item_table``. Item vectors are scaled by √D before the additive features, as in
    SASRec, and padding positions come out as exact zeros. Positions are counted back from the
    most recent step (row 0 = the last step), so how much padding precedes a history does not
    change what its steps look like.
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        dim: int,
        n_event_types: int = 0,
        n_gap_buckets: int = 0,
        dropout: float = 0.0,
        use_position: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size, self.max_len, self.dim = vocab_size, max_len, dim
        self.n_event_types, self.n_gap_buckets = n_event_types, n_gap_buckets
        self.dropout_rate, self.use_position = dropout, use_position
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.items = layers.Embedding(vocab_size, dim, embeddings_initializer=init, name="items")
        self.positions = layers.Embedding(max_len, dim, embeddings_initializer=init, name="positions")
        self.event_types = (
            layers.Embedding(n_event_types + 1, dim, embeddings_initializer=init, name="event_types")
            if n_event_types
            else None
        )
        self.gaps = (
            layers.Embedding(n_gap_buckets + 1, dim, embeddings_initializer=init, name="gaps")
            if n_gap_buckets
            else None
        )
        self.drop = layers.Dropout(dropout)

    def build(self, shape=None):
        for emb in (self.items, self.positions, self.event_types, self.gaps):
            if emb is not None:
                emb.build((None, self.max_len))
        self.built = True

    @property
    def item_table(self):
        return self.items.embeddings  # [V, D]

    def call(self, inputs, training=None):
        items = inputs["item_idx"]  # [B, L]
        x = self.items(items) * math.sqrt(self.dim)  # [B, L, D]
        if self.use_position:
            steps_ago = ops.arange(ops.shape(items)[1] - 1, -1, -1)  # [L]: L-1 .. 0 (L <= max_len)
            x = x + self.positions(steps_ago)[None]  # [1, L, D]
        if self.event_types is not None:
            x = x + self.event_types(inputs["event_type_idx"])
        if self.gaps is not None:
            x = x + self.gaps(inputs["time_gap_bucket"])
        x = self.drop(x, training=training)
        return x * ops.expand_dims(ops.cast(padding_mask(items), x.dtype), -1)  # [B, L, D]

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "max_len": self.max_len,
            "dim": self.dim,
            "n_event_types": self.n_event_types,
            "n_gap_buckets": self.n_gap_buckets,
            "dropout": self.dropout_rate,
            "use_position": self.use_position,
        }
