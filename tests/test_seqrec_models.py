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


def test_sasrec_gradients_do_not_reach_future_items():
    m = _model("sasrec").train()
    torch.manual_seed(1)
    seqs = _histories()[:1]
    m.eval()
    emb = m.item_emb(seqs).detach().requires_grad_(True)
    # re-run the encoder on explicit embeddings: position 2's state must not depend on positions 3..5
    length = seqs.shape[1]
    x = emb * D ** 0.5 + m.pos_emb(torch.arange(length))
    keep = torch.ones(1, length, 1)
    mask = torch.ones(length, length, dtype=torch.bool).tril()[None, None]
    for block in m.blocks:
        x = block(x, mask, keep)
    m.final_norm(x)[0, 2].sum().backward()
    assert emb.grad[0, 3:].abs().sum() == 0
    assert emb.grad[0, :3].abs().sum() > 0


def test_unknown_model_and_key_errors_name_the_config_key():
    with pytest.raises(ValueError, match=r"seqrec\.bert4rec.*sasrec"):
        build_model("bert4rec", N_ITEMS)
    with pytest.raises(ValueError, match=r"seqrec\.gru4rec\.n_heads"):
        resolve_hparams("gru4rec", {"n_heads": 2})
    assert resolve_hparams("caser", {"n_h": 3})["n_h"] == 3
    with pytest.raises(ValueError, match="not divisible"):
        build_model("sasrec", N_ITEMS, {"hidden_size": 10, "n_heads": 3})
