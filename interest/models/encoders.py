"""Three attention encoders behind one contract.

Every encoder maps a padded behaviour sequence (dict of [B, L] int tensors, most recent step last)
to a dict:

- ``sequence``  [B, L, D]  the user state after each step; position t sees only steps <= t, so
                           every position can be trained to predict the next item (SASRec-style);
- ``user``      [B, D]     the state after the last step: the user embedding;
- ``interests`` [B, K, D]  per-interest vectors (memory slots; K = 1 where there is one vector);
- ``attention`` [B, L]     how much the user embedding drew on each history step: sums to 1 over
                           real steps and is exactly 0 on padding (the explanation);
- ``interest_attention`` [B, K, L]  the same for each interest: the steps behind it (K = 1: the
                           attention itself);
- ``interest_weight`` [B, K]  how much the user embedding drew on each interest (sums to 1);
- ``attention_matrix`` [B, L, L]  only with ``call(..., return_matrix=True)``: the same weights
                           for every position's state (row t explains position t), for heatmaps.

``call(..., last_only=True)`` says only the last position's state is wanted (inference: the user
embedding and its explanation). An encoder may then skip the other positions' work, and its
``sequence`` may be [B, 1, D]; the other outputs are the same.

Scores for items are dot products with the item embedding table (shared with the input side),
so one objective and one evaluation serve all three.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from interest.models.layers import (
    FeedForward,
    QueryPooling,
    SequenceEmbedding,
    TransformerBlock,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)
from interest.schema import ENCODER_NAMES, SEQUENCE_FEATURES, fresh_positions

ENCODERS: dict[str, type[Encoder]] = {}


def register(name: str):
    """Register an encoder family under one of ``schema.ENCODER_NAMES``."""
    if name not in ENCODER_NAMES:
        raise ValueError(f"encoder {name!r} is not in interest.schema.ENCODER_NAMES")

    def wrap(cls):
        ENCODERS[name] = cls
        cls.kind = name
        return keras.saving.register_keras_serializable(package="interest")(cls)

    return wrap


class Encoder(keras.Model):
    """Shared parts: the sequence embedding (whose item table scores items) and the config."""

    kind = "base"

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        dim: int = 64,
        heads: int = 2,
        blocks: int = 2,
        ff_mult: int = 2,
        dropout: float = 0.2,
        memory_slots: int = 4,
        n_event_types: int = 0,
        n_gap_buckets: int = 0,
        interest_routing: bool = False,
        filter_mix: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.args = dict(
            vocab_size=vocab_size,
            max_len=max_len,
            dim=dim,
            heads=heads,
            blocks=blocks,
            ff_mult=ff_mult,
            dropout=dropout,
            memory_slots=memory_slots,
            n_event_types=n_event_types,
            n_gap_buckets=n_gap_buckets,
            interest_routing=interest_routing,
            filter_mix=filter_mix,
        )
        self.dim, self.max_len = dim, max_len
        self.embed = SequenceEmbedding(vocab_size, max_len, dim, n_event_types, n_gap_buckets, dropout, name="embed")

    def __call__(self, *args, **kwargs):
        out = super().__call__(*args, **kwargs)
        if "interest_attention" not in out:  # one interest: the user vector and its attention
            out["interest_attention"] = out["attention"][:, None, :]  # [B, 1, L]
            out["interest_weight"] = ops.ones_like(out["attention"][:, :1])  # [B, 1]
        # under mixed precision the layers compute in bfloat16; what leaves the encoder (sequence
        # states for the loss, user vectors for ranking) is float32, a no-op otherwise
        return {name: ops.cast(v, "float32") if "float" in str(v.dtype) else v for name, v in out.items()}

    def infer(self, inputs: dict) -> dict[str, np.ndarray]:
        """Inference outputs of a batch ({feature: [B, L] int}) through one compiled graph, without
        ``sequence``: eager calls of a Keras model are several times slower. With [B, C, L]
        features (a user's stored windows, oldest first), an encoder that reads whole histories
        (``read_windows``) reads them all; its explanations are then [B, C * L].

        The graph is traced once, for any batch size ([None, L]), so every batch runs the same
        kernels whichever shape a process saw first: a re-run reproduces its outputs bit for bit.
        """
        windows = len(inputs["item_idx"].shape) == 3
        if windows and not hasattr(self, "read_windows"):
            raise ValueError(f"the {self.kind} encoder reads the latest window only, not [B, C, L] windows")
        key = f"_infer_fn_{inputs['item_idx'].shape[1]}" if windows else "_infer_fn"  # one graph per C
        fn = self.__dict__.get(key)
        if fn is None:  # set past Keras' attribute tracking: a tf.function is not a layer
            shape = [None, inputs["item_idx"].shape[1], self.max_len] if windows else [None, self.max_len]
            spec = {name: tf.TensorSpec(shape, tf.int32) for name in SEQUENCE_FEATURES}

            def run(x):
                return {k: v for k, v in self(x, training=False, last_only=True).items() if k != "sequence"}

            def run_windows(x):
                return self.read_windows(x, fresh_steps(x["item_idx"]))

            fn = self.__dict__[key] = tf.function(run_windows if windows else run, input_signature=[spec])
        out = fn({name: tf.cast(inputs[name], tf.int32) for name in SEQUENCE_FEATURES})
        return {name: v.numpy() for name, v in out.items()}

    @property
    def item_table(self):
        """[V, D] item embeddings: inputs and output scores share them."""
        return self.embed.item_table

    def score(self, user):
        """user [N, D] -> logits over all items [N, V]."""
        return ops.matmul(user, ops.transpose(self.item_table))

    def get_config(self):
        return {**super().get_config(), **self.args}

    def dummy_inputs(self, batch: int = 2):
        zeros = ops.zeros((batch, self.max_len), dtype="int32")
        return {name: zeros for name in SEQUENCE_FEATURES}  # [B, L] each


@register("self_attention")
class SelfAttentionEncoder(Encoder):
    """SASRec-style: causal multi-head self-attention blocks; the user is the last position.

    Explanation: attention rollout (Abnar & Zuidema, 2020). Each block mixes its input by
    ``x + attention(x)``, so half of what a position carries on is its own residual and half the
    steps it attends to: ``0.5 A + 0.5 I`` per block (heads averaged), multiplied from the last
    block down. The last block's attention alone ignores the residual path, through which the
    latest step dominates the user vector; on planted data, removing the steps it weighted most
    lowered the top recommendation no more than removing random steps (BENCHMARKS.md).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        a = self.args
        if a["blocks"] < 1:
            raise ValueError("the self-attention encoder needs model.blocks >= 1")
        self.blocks_ = [
            TransformerBlock(
                a["dim"], a["heads"], a["ff_mult"], a["dropout"], a["filter_mix"], a["max_len"], name=f"block{i}"
            )
            for i in range(a["blocks"])
        ]
        self.norm = layers.LayerNormalization(epsilon=1e-6, name="norm")

    def call(self, inputs, training=None, return_matrix=False, last_only=False):
        items = inputs["item_idx"]  # [B, L]
        keep = padding_mask(items)  # [B, L]
        mask = ops.logical_and(causal_mask(ops.shape(items)[1])[None], keep[:, None, :])  # [B, L, L]
        x = self.embed(inputs, training=training)  # [B, L, D]
        last_only = last_only and not return_matrix
        mixes = []  # per block, heads averaged: [B, L', L]
        for i, block in enumerate(self.blocks_):
            final = last_only and i == len(self.blocks_) - 1  # the last block: the last query only
            x, weights = block(x, mask, keep, training=training, last_only=final)  # weights [B, H, L', L]
            mixes.append(ops.mean(weights, axis=1))
        if last_only:
            keep = keep[:, -1:]
        x = self.norm(x) * ops.cast(keep, x.dtype)[..., None]  # [B, L', D]; L' = 1 with last_only
        user = x[:, -1]  # [B, D]
        if return_matrix:  # every position's rollout [B, L, L]
            rollout = attention_rollout(mixes, keep)
            return {"sequence": x, "user": user, "interests": user[:, None, :], "attention": rollout[:, -1],
                    "attention_matrix": rollout}  # fmt: skip
        mixes[-1] = mixes[-1][:, -1:]  # the user's row only: a vector through the blocks, not a matrix
        attention = attention_rollout(mixes, keep[:, -1:])[:, 0]  # [B, L]
        return {"sequence": x, "user": user, "interests": user[:, None, :], "attention": attention}


def attention_rollout(mixes: list, keep) -> object:
    """Attention rollout through residual blocks: ``R = Â_n … Â_1`` with ``Â = 0.5 A + 0.5 I``.

    mixes: per block the head-averaged weights [B, L, L], the last one possibly for the last query
    only ([B, 1, L]); keep [B, L'] real query positions. Returns [B, L', L]: each real row sums to 1
    and is 0 on padding (no weight reaches a padded key, and the identity keeps what is real)."""
    length = ops.shape(mixes[0])[-1]
    last = mixes[-1]
    eye = ops.eye(length, dtype=last.dtype)[None]  # [1, L, L]
    rows = ops.shape(last)[1]
    out = 0.5 * last + 0.5 * eye[:, length - rows :, :]  # [B, L', L]
    for mix in reversed(mixes[:-1]):
        out = ops.matmul(out, 0.5 * mix + 0.5 * eye)
    return out * ops.cast(keep, out.dtype)[..., None]


@register("hierarchical")
class HierarchicalEncoder(Encoder):
    """HAN-style: attention inside each session, then attention across sessions.

    Per position t: causal self-attention blocks restricted to t's session contextualise the
    items; a learned-query pooling over t's session so far gives the (partial) session vector;
    a second pooling over the vectors of the sessions completed before t plus t's own gives the
    user state. Explanation: session weight × item-in-session weight, summed per item.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        a = self.args
        self.item_blocks = [
            TransformerBlock(a["dim"], a["heads"], a["ff_mult"], a["dropout"], name=f"item_block{i}")
            for i in range(max(a["blocks"] - 1, 0))
        ]
        self.item_pool = QueryPooling(a["dim"], a["heads"], name="item_pool")
        self.session_norm = layers.LayerNormalization(epsilon=1e-6, name="session_norm")
        self.session_pool = QueryPooling(a["dim"], a["heads"], name="session_pool")
        self.out = TransformerFF(a["dim"], a["ff_mult"], a["dropout"], name="out")

    def call(self, inputs, training=None, return_matrix=False, last_only=False):
        items, sessions = inputs["item_idx"], inputs["session_idx"]  # [B, L]
        keep = padding_mask(items)  # [B, L]
        keep_f = ops.cast(keep, self.compute_dtype)[..., None]  # [B, L, 1]
        causal = causal_mask(ops.shape(items)[1])[None]  # [1, L, L]; L may be under max_len (trim_padding)
        same = ops.equal(sessions[:, :, None], sessions[:, None, :])  # [B, L, L]
        in_session = ops.logical_and(ops.logical_and(causal, same), keep[:, None, :])  # [B, L, L]
        x = self.embed(inputs, training=training)  # [B, L, D]
        for block in self.item_blocks:
            x, _ = block(x, in_session, keep, training=training)
        s, item_w = self.item_pool(x, x, in_session)  # [B, L, D], [B, H, L, L]
        s = self.session_norm(s) * keep_f  # partial session vector at every position
        # j ends a session when the next step belongs to another one (or j is the last step)
        nxt = ops.concatenate([sessions[:, 1:], ops.full_like(sessions[:, :1], -1)], axis=1)
        ends = ops.logical_and(ops.not_equal(nxt, sessions), keep)  # [B, L]
        eye = ops.eye(ops.shape(items)[1], dtype="bool")[None]  # [1, L, L]
        visible = ops.logical_or(ends[:, None, :], eye)  # completed sessions, plus t itself
        across = ops.logical_and(ops.logical_and(causal, visible), keep[:, None, :])  # [B, L, L]
        u, session_w = self.session_pool(s, s, across)  # [B, L, D], [B, H, L, L]
        seq = self.out(u, training=training) * keep_f  # [B, L, D]
        item_in_session = ops.mean(item_w, axis=1)  # [B, L(e), L(j)]
        out = {"sequence": seq, "user": seq[:, -1], "interests": seq[:, -1][:, None, :]}
        if return_matrix:
            sessions_w = ops.mean(session_w, axis=1)  # [B, L(t), L(e)]
            out["attention_matrix"] = ops.einsum("bte,bej->btj", sessions_w, item_in_session)  # [B, L, L]
            out["attention"] = out["attention_matrix"][:, -1]
        else:
            last_sessions = ops.mean(session_w[:, :, -1, :], axis=1)  # [B, L(e)]
            out["attention"] = ops.einsum("be,bej->bj", last_sessions, item_in_session)  # [B, L]
        return out


@register("memory")
class MemoryEncoder(Encoder):
    """MANN-style: K memory slots written and read with attention; the slots are K interests.

    Write: slot k has a learned address; after step t it holds its initial content plus the
    attention-weighted sum (over steps <= t) of the steps that match its address. Read: the
    current step queries the K slots; the read-out is the user state. The interests are the slots
    through the same output head, so each is a vector in the item space: scoring items by the best
    of them (``interest.scoring.tasks.InterestsScorer``) retrieves for every interest at once. Explanation: how much of
    what the read drew on each step wrote. A slot's content is ``Σ_j w_kj v_j``, so its length
    along its own direction splits exactly into the steps' shares ``w_kj (v_j · ŝ_k)``; those
    shares (negative ones clipped to 0), weighted by the read attention over the slots and
    normalised to sum to 1, are the explanation. Read weight × write weight alone ignores what a
    step wrote, and on planted data does no better than shuffled weights.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        a = self.args
        self.blocks_ = [
            TransformerBlock(a["dim"], a["heads"], a["ff_mult"], a["dropout"], name=f"block{i}")
            for i in range(max(a["blocks"] - 1, 0))
        ]
        self.write_key = layers.Dense(a["dim"], name="write_key")
        self.write_value = layers.Dense(a["dim"], name="write_value")
        self.read_query = layers.Dense(a["dim"], name="read_query")
        self.slot_norm = layers.LayerNormalization(epsilon=1e-6, name="slot_norm")
        self.out = TransformerFF(a["dim"], a["ff_mult"], a["dropout"], name="out")

    def build(self, input_shape=None):
        k, d = self.args["memory_slots"], self.args["dim"]
        self.addresses = self.add_weight(name="addresses", shape=(k, d), initializer="glorot_uniform")
        self.initial = self.add_weight(name="initial", shape=(k, d), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, training=None, return_matrix=False, last_only=False):
        items = inputs["item_idx"]  # [B, L]
        keep = padding_mask(items)  # [B, L]
        keep_f = ops.cast(keep, self.compute_dtype)[..., None]  # [B, L, 1]
        causal = causal_mask(ops.shape(items)[1])[None]  # [1, L, L]; L may be under max_len (trim_padding)
        x = self.embed(inputs, training=training)  # [B, L, D]
        for block in self.blocks_:
            x, _ = block(x, ops.logical_and(causal, keep[:, None, :]), keep, training=training)
        keys = self.write_key(x)[:, None]  # [B, 1, L, D]
        values = self.write_value(x)[:, None]  # [B, 1, L, D]
        addresses = ops.broadcast_to(self.addresses[None, None], (ops.shape(x)[0], 1) + tuple(self.addresses.shape))
        t = slice(-1, None) if last_only and not return_matrix else slice(None)  # the positions written and read
        write_mask = ops.logical_and(causal, keep[:, None, :])[:, t, None, :]  # [B, T, 1, L(j)]; T = L or 1
        written, write_w = scaled_dot_product_attention(addresses, keys, values, write_mask)
        slots = self.slot_norm(written + self.initial[None, None])  # [B, T, K, D]
        query = self.read_query(x[:, t])[:, :, None, :]  # [B, T, 1, D]
        read, read_w = scaled_dot_product_attention(query, slots, slots)  # [B, T, 1, D], [B, T, 1, K]
        seq = self.out(read[:, :, 0], training=training) * keep_f[:, t]  # [B, T, D]
        out = {
            "sequence": seq,
            "user": seq[:, -1],
            # each slot through the output head: what the user vector would be if the read drew on
            # that slot alone, in the item space (a slot's items score highest against it)
            "interests": self.out(slots[:, -1], training=training),  # [B, K, D]
            "attention": _written_share(read_w[:, -1:], write_w[:, -1:], values, written[:, -1:])[:, 0],
            "interest_attention": _slot_shares(write_w[:, -1], values, written[:, -1]),  # [B, K, L]
            "interest_weight": read_w[:, -1, 0],  # [B, K]
        }
        if return_matrix:
            out["attention_matrix"] = _written_share(read_w, write_w, values, written)  # [B, L, L]
        if training and self.args["interest_routing"] and not last_only:  # the loss routes each target
            out["position_interests"] = self.out(slots, training=training) * keep_f[..., None]  # [B, L, K, D]
        return out

    def read_windows(self, inputs: dict, fresh) -> dict:
        """The slots written from a user's whole stored history, not only the latest window.

        inputs {feature: [B, C, L]}: each user's stored windows, oldest first (all padding where a
        user has fewer); fresh [B, C, L] bool: the steps to write, each step once (an older window
        repeats the first steps of the next). Each window goes through the blocks on its own, as
        in training; then every fresh step of every window writes the slots in one softmax, and
        the newest step reads them. With one window this is the ``call`` at its last position.
        -> {"user" [B, D], "interests" [B, K, D], "interest_weight" [B, K], and over the windows'
        steps laid end to end (oldest first) "attention" [B, C * L] and "interest_attention"
        [B, K, C * L]: the explanation as ``call`` gives it, 0 on padding and on repeated steps}."""
        shape = ops.shape(inputs["item_idx"])
        b, c, n = shape[0], shape[1], shape[2]
        d = self.args["dim"]
        flat = {f: ops.reshape(v, (b * c, n)) for f, v in inputs.items()}  # [B * C, L] each
        keep = padding_mask(flat["item_idx"])  # [B * C, L]
        x = self.embed(flat, training=False)  # [B * C, L, D]
        for block in self.blocks_:
            x, _ = block(x, ops.logical_and(causal_mask(n)[None], keep[:, None, :]), keep, training=False)
        keys = ops.reshape(self.write_key(x), (b, 1, c * n, d))  # [B, 1, C * L, D]
        values = ops.reshape(self.write_value(x), (b, 1, c * n, d))
        mask = ops.reshape(ops.cast(fresh, "bool"), (b, 1, 1, c * n))  # [B, 1, 1, C * L]
        addresses = ops.broadcast_to(self.addresses[None, None], (b, 1) + tuple(self.addresses.shape))
        written, write_w = scaled_dot_product_attention(addresses, keys, values, mask)  # [B, 1, K, D], [B, 1, K, C * L]
        slots = self.slot_norm(written + self.initial[None, None])[:, 0]  # [B, K, D]
        newest = ops.reshape(x, (b, c, n, d))[:, -1, -1]  # [B, D] the latest step
        read, read_w = scaled_dot_product_attention(
            self.read_query(newest)[:, None], slots, slots
        )  # [B, 1, D], [B, 1, K]
        out = {
            "user": self.out(read[:, 0]),
            "interests": self.out(slots),
            "interest_weight": read_w[:, 0],
            "attention": _written_share(read_w[:, None], write_w, values, written)[:, 0],  # [B, C * L]
            "interest_attention": _slot_shares(write_w[:, 0], values, written[:, 0]),  # [B, K, C * L]
        }
        return {k: ops.cast(v, "float32") for k, v in out.items()}


def fresh_steps(items):
    """[B, C, L] item indices of stored windows (oldest first) -> [B, C, L] bool: the steps that
    write the memory, each once (``schema.fresh_positions``); C and L must be known when traced."""
    return ops.logical_and(items > 0, ops.convert_to_tensor(fresh_positions(items.shape[1], items.shape[2]))[None])


def _along(values, written):
    """Each step's value along each slot's direction, negative parts clipped to 0.

    values [B, 1, L, D], written [B, T, K, D] -> [B, T, K, L]."""
    direction = written / ops.maximum(ops.norm(written, axis=-1, keepdims=True), 1e-9)  # [B, T, K, D]
    return ops.relu(ops.einsum("bjd,btkd->btkj", values[:, 0], direction))


def _slot_shares(write_w, values, written):
    """The steps behind each slot after the last step: their shares of its content, summing to 1.

    write_w [B, K, L], values [B, 1, L, D], written [B, K, D] -> [B, K, L]."""
    share = write_w * _along(values, written[:, None])[:, 0]  # [B, K, L]
    total = ops.sum(share, axis=-1, keepdims=True)  # [B, K, 1]
    return ops.where(total > 1e-9, share / ops.maximum(total, 1e-9), write_w)


def _written_share(read_w, write_w, values, written):
    """Each step's share of what the read drew from memory, normalised per position.

    read_w [B, T, 1, K], write_w [B, T, K, L], values [B, 1, L, D], written [B, T, K, D] -> [B, T, L].
    """
    share = ops.einsum("btk,btkj->btj", read_w[:, :, 0], write_w * _along(values, written))  # [B, T, L]
    total = ops.sum(share, axis=-1, keepdims=True)  # [B, T, 1]
    plain = ops.einsum("btk,btkj->btj", read_w[:, :, 0], write_w)  # fallback: nothing along any slot
    return ops.where(total > 1e-9, share / ops.maximum(total, 1e-9), plain)


@keras.saving.register_keras_serializable(package="interest")
class TransformerFF(layers.Layer):
    """x -> LN(x + FFN(x)): the output head of the pooling encoders."""

    def __init__(self, dim: int, mult: int = 2, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.mult, self.dropout_rate = dim, mult, dropout
        self.ff = FeedForward(dim, mult, dropout, name="ff")
        self.norm = layers.LayerNormalization(epsilon=1e-6, name="norm")

    def build(self, shape):
        self.ff.build(shape)
        self.norm.build(shape)
        self.built = True

    def call(self, x, training=None):  # [B, L, D] -> [B, L, D]
        return self.norm(x + self.ff(x, training=training))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "mult": self.mult, "dropout": self.dropout_rate}


def build_encoder(kind: str, precision: str = "float32", **args) -> Encoder:
    """Create and build an encoder by name (``self_attention``, ``hierarchical``, ``memory``).

    ``precision`` is a Keras dtype policy (``mixed_bfloat16``: bfloat16 compute, float32 weights)
    for training; an exported model is rebuilt in float32 from the same weights.
    """
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}; choose one of {sorted(ENCODERS)}")
    before = keras.config.dtype_policy()  # layers read the global policy when they are created
    keras.config.set_dtype_policy(precision)
    try:
        encoder = ENCODERS[kind](**args)
        encoder(encoder.dummy_inputs(), training=False)  # create the weights
    finally:
        keras.config.set_dtype_policy(before)
    return encoder


def encoder_args(model_cfg, spec) -> dict:
    """Constructor arguments from the model config and the data spec."""
    return dict(
        vocab_size=spec.vocab_size,
        max_len=spec.max_len,
        dim=model_cfg.dim,
        heads=model_cfg.heads,
        blocks=model_cfg.blocks,
        dropout=model_cfg.dropout,
        memory_slots=model_cfg.memory_slots,
        interest_routing=model_cfg.interest_routing,
        filter_mix=model_cfg.filter_mix,
        n_event_types=spec.n_event_types if model_cfg.use_event_type else 0,
        n_gap_buckets=spec.n_gap_buckets if model_cfg.use_time_gap else 0,
    )
