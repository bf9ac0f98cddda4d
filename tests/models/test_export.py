"""Exported models: a folder loads back to the same outputs, and a damaged or missing one is
refused with one line naming the folder and the file, never a Keras trace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interest.models.encoders import build_encoder
from interest.models.export import ModelDamagedError, ModelNotFoundError, load_model, save_model

ARGS = dict(vocab_size=10, max_len=6, dim=8, heads=2, blocks=1)


@pytest.fixture()
def exported(tmp_path):
    encoder = build_encoder("self_attention", **ARGS)
    vocab = pd.DataFrame({"item_idx": np.arange(2, 10), "item_id": [f"i{i}" for i in range(8)], "count": 1})
    folder = save_model(encoder, vocab, {"date": "2026-11-26"}, {"best_epoch": 1}, str(tmp_path), "v1")
    return encoder, folder


def test_a_model_loads_back_with_the_same_outputs(exported):
    encoder, folder = exported
    loaded = load_model(folder)
    items = np.array([[0, 0, 2, 3, 4, 5]], np.int32)
    inputs = {"item_idx": items, "event_type_idx": 0 * items, "time_gap_bucket": 0 * items, "session_idx": 0 * items}
    np.testing.assert_allclose(encoder(inputs)["user"], loaded.encoder(inputs)["user"], atol=1e-6)
    assert loaded.version == "v1" and loaded.metrics == {"best_epoch": 1} and len(loaded.vocab) == 8


@pytest.mark.parametrize(
    "damage,part",
    [
        (lambda f: (f / "encoder.weights.h5").write_bytes((f / "encoder.weights.h5").read_bytes()[:200]), "weights"),
        (lambda f: (f / "encoder.weights.h5").unlink(), "encoder.weights.h5"),
        (lambda f: (f / "vocab.parquet").write_bytes(b"PAR1 cut short"), "vocab.parquet"),
        (lambda f: (f / "config.json").write_text("{"), "config.json"),
        (lambda f: (f / "encoder.json").write_text('{"kind": "self_attention"}'), "encoder.json"),
    ],
)
def test_a_damaged_model_folder_is_one_clear_error(exported, damage, part):
    from pathlib import Path

    _, folder = exported
    damage(Path(folder))
    with pytest.raises(ModelDamagedError, match=rf"model .*v1 is damaged: .*{part}.*train the date again"):
        load_model(folder)


def test_a_folder_that_is_no_model_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="is not an exported model folder"):
        load_model(str(tmp_path))
