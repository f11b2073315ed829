"""Seqrec models: shapes, padding layouts, SASRec's causal masking, the registry's errors."""

from __future__ import annotations

import pytest
import torch

from llara.seqrec import MODELS, SASRec, build_model, left_align, resolve_hparams, right_align

N_ITEMS, D, L = 30, 16, 6
SMALL = {"hidden_size": D, "max_len": L}


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are small: one thread is several times faster than two on a loaded 2-core machine."""
    torch.set_num_threads(1)


def _model(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, N_ITEMS, {**SMALL, **kw}).eval()


def _histories() -> torch.Tensor:
    """Left-padded batch with lengths 6, 3 and 1 (pad id = N_ITEMS)."""
    p = N_ITEMS
    return torch.tensor([[1, 2, 3, 4, 5, 6], [p, p, p, 7, 8, 9], [p, p, p, p, p, 10]])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes_and_padding_row(name):
    m = _model(name)
    seqs = _histories()
    assert m.item_emb.weight.shape == (N_ITEMS + 1, D)
    assert m.item_embeddings().shape == (N_ITEMS, D)
    assert m.encode(seqs).shape == (3, D)
    assert m.score_all(seqs).shape == (3, N_ITEMS)
    cands = torch.randint(0, N_ITEMS, (3, 5))
    assert m.score(seqs, cands).shape == (3, 5)
    sets = torch.randint(0, N_ITEMS, (3, 4, 5))
    scores = m.score(seqs, sets)
    assert scores.shape == (3, 4, 5)
    # score() is the dot product of the user state with the item table rows
    expected = m.encode(seqs) @ m.item_embeddings().T
    torch.testing.assert_close(scores[:, 2], torch.gather(expected, 1, sets[:, 2]))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_left_and_right_padding_agree(name):
    m = _model(name)
    left = _histories()
    right = right_align(left, N_ITEMS)
    assert right[1].tolist() == [7, 8, 9] + [N_ITEMS] * 3
    torch.testing.assert_close(m.encode(left), m.encode(right))
    assert torch.equal(left_align(right, N_ITEMS), left)
    # a narrower or wider batch is padded / cropped to max_len (the most recent items are kept)
    narrow = left[:, -3:]
    wide = torch.cat([torch.full((3, 4), N_ITEMS), left], dim=1)
    torch.testing.assert_close(m.encode(wide), m.encode(left))
    torch.testing.assert_close(m.encode(narrow)[1:], m.encode(left)[1:])


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_state_ignores_padding_embedding(name):
    """SASRec masks padding and GRU4Rec never reads it: the padding row cannot leak into a state."""
    m = _model(name)
    seqs = _histories()
    before = m.encode(seqs)
    with torch.no_grad():
        m.item_emb.weight[N_ITEMS].normal_()
    torch.testing.assert_close(m.encode(seqs), before)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_padding_row_stays_zero_in_training(name):
    """Caser convolves over padding: its row must be zero and get no update (padding_idx)."""
    m = _model(name).train()
    assert m.item_emb.weight[N_ITEMS].abs().sum() == 0
    opt = torch.optim.Adam(m.parameters(), lr=0.1, weight_decay=0.01)
    loss = torch.nn.functional.cross_entropy(m.score_all(_histories()), torch.tensor([1, 2, 3]))
    loss.backward()
    opt.step()
    assert m.item_emb.weight[N_ITEMS].abs().sum() == 0


def test_sasrec_is_causal():
    m = _model("sasrec", n_layers=2, n_heads=2)
    assert isinstance(m, SASRec)
    seqs = _histories()
    states = m.sequence_states(seqs)
    changed = seqs.clone()
    changed[:, 4] = 0  # change the second most recent item of every row
    new = m.sequence_states(changed)
    torch.testing.assert_close(new[:, :4], states[:, :4])  # earlier positions unchanged
    assert not torch.allclose(new[:, 4:], states[:, 4:])  # the changed position and later ones move
    # a history's state does not depend on how much padding precedes it
    short = torch.tensor([[7, 8, 9]])
    torch.testing.assert_close(m.encode(short), m.encode(seqs[1:2]))


# ---- causality: no information from the future ---------------------------------------------------
# A read-out with a non-degenerate gradient (a fixed random projection of the state) is
# differentiated with respect to the item embedding at every position, captured by a forward hook
# on the item table, so the model's own code path (its own masks, alignment and state selection)
# is what is checked. Masked attention weights are exactly 0 after the softmax, so a position the
# state must not see gets an exactly zero gradient; every position it should see gets a gradient
# far above rounding (relative to the largest one: measured >= 0.18 here; the threshold is 1e-3,
# while a gradient that only rounding creates is ~1e-7 of it).


def _position_grads(model: torch.nn.Module, readout) -> torch.Tensor:
    """Per-position gradient norms ``[batch, L]`` of ``readout(model)`` w.r.t. the embedded items."""
    captured = []

    def hook(_module, _inputs, output):
        output.retain_grad()
        captured.append(output)

    handle = model.item_emb.register_forward_hook(hook)
    try:
        readout(model).backward()
    finally:
        handle.remove()
    assert len(captured) == 1, "the model embedded its input more than once"
    return captured[0].grad.norm(dim=-1)


def _projection(seed: int = 7) -> torch.Tensor:
    return torch.randn(D, generator=torch.Generator().manual_seed(seed))


def _sasrec_grads(m: SASRec, t: int) -> torch.Tensor:
    seqs = _histories()[:1]  # six real items, no padding
    return _position_grads(m, lambda mod: mod.sequence_states(seqs)[0, t] @ _projection())[0]


@pytest.mark.parametrize("t", [0, 2, 4, 5])
def test_sasrec_state_at_t_sees_exactly_positions_up_to_t(t):
    """Position t's state has a clearly non-zero gradient to every item at positions <= t and an
    exactly zero one to every later item."""
    g = _sasrec_grads(_model("sasrec", n_layers=2, n_heads=2), t)
    assert torch.all(g[t + 1:] == 0), g
    assert torch.all(g[:t + 1] > 1e-3 * g.max()), g


def test_sasrec_causality_check_fails_with_full_attention(monkeypatch):
    """The check above is not vacuous: with the causal mask flipped to full attention, later items
    get gradient and the zero-gradient assertion would fail."""
    m = _model("sasrec", n_layers=2, n_heads=2)
    monkeypatch.setattr(m, "attention_mask", lambda seqs: torch.ones(seqs.shape[0], 1, seqs.shape[1], seqs.shape[1],
                                                                      dtype=torch.bool))
    g = _sasrec_grads(m, 2)
    assert torch.all(g[3:] > 1e-3 * g.max()), g


def test_sasrec_ignores_padding_keys():
    """A left-padded history: no state reads a padding position except the padding row itself."""
    m = _model("sasrec", n_layers=2, n_heads=2)
    seqs = _histories()[1:2]  # three padding slots, then items 7, 8, 9
    g = _position_grads(m, lambda mod: mod.encode(seqs) @ _projection())[0]
    assert torch.all(g[:3] == 0), g
    assert torch.all(g[3:] > 1e-3 * g.max()), g


class _GRU4RecLastSlot(MODELS["gru4rec"]):
    """A deliberately wrong GRU4Rec that reads the GRU output at the last slot, after the padding."""

    def _encode_left_aligned(self, seqs):
        seqs = right_align(seqs, self.pad_id)
        out, _ = self.gru(self.emb_dropout(self.item_emb(seqs)))
        return self.out(out[:, -1])


def _gru_grads(m) -> torch.Tensor:
    seqs = _histories()[1:2]  # items 7, 8, 9; right-aligned inside the model: 7, 8, 9, pad, pad, pad
    return _position_grads(m, lambda mod: mod.encode(seqs) @ _projection())[0]


def test_gru4rec_state_is_read_right_after_the_last_item():
    """GRU4Rec takes the state after the last real item: every item has gradient, the padding slots
    that follow it (the GRU's 'future') have exactly none."""
    g = _gru_grads(_model("gru4rec"))
    assert torch.all(g[3:] == 0), g
    assert torch.all(g[:3] > 1e-3 * g.max()), g


def test_gru4rec_check_fails_when_the_state_is_read_too_late():
    torch.manual_seed(0)
    g = _gru_grads(_GRU4RecLastSlot(N_ITEMS, **SMALL).eval())
    assert torch.all(g[3:] > 0), g


def test_caser_window_holds_only_the_history():
    """Caser has no per-position states: its user state is a function of the whole L-item window.
    The leakage it could have is reading items other than the given history. Every real item has a
    clearly non-zero gradient, and the state equals that of the same history given without padding,
    so only the history's items (and the fixed, zero padding row) enter it."""
    m = _model("caser")
    seqs = _histories()[1:2]
    g = _position_grads(m, lambda mod: mod.encode(seqs) @ _projection())[0]
    assert torch.all(g[3:] > 1e-3 * g.max()), g
    torch.testing.assert_close(m.encode(torch.tensor([[7, 8, 9]])), m.encode(seqs))
    changed = seqs.clone()
    changed[0, 4] = 20
    assert not torch.allclose(m.encode(changed), m.encode(seqs))


def test_unknown_model_and_key_errors_name_the_config_key():
    with pytest.raises(ValueError, match=r"seqrec\.bert4rec.*sasrec"):
        build_model("bert4rec", N_ITEMS)
    with pytest.raises(ValueError, match=r"seqrec\.gru4rec\.n_heads"):
        resolve_hparams("gru4rec", {"n_heads": 2})
    assert resolve_hparams("caser", {"n_h": 3})["n_h"] == 3
    with pytest.raises(ValueError, match="not divisible"):
        build_model("sasrec", N_ITEMS, {"hidden_size": 10, "n_heads": 3})
