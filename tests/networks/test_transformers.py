"""Window attention: which tokens see which, in 1D/2D/3D, with shifts and padding."""

from __future__ import annotations

import itertools

import pytest
import torch

from nnunet_iph.networks.transformers import SwinBlock, TransformerBlock, heads_for


def expected_groups(size: int, window: int, shifted: bool) -> list[int]:
    """Group id per position along one axis: regular windows [0,w), [w,2w) ...; shifted windows
    start at w//2 ([0,s), [s,s+w) ...) and do not wrap around; windows >= the axis never shift."""
    w = min(window, size)
    shift = window // 2 if shifted and size > window else 0
    return [(i - shift) // w + (1 if shift else 0) if i >= shift else 0 for i in range(size)]


def influence(block: SwinBlock, size: tuple[int, ...], dim: int = 8) -> torch.Tensor:
    """influence[q, k] = True iff perturbing token k changes output token q (exact, via Jacobian rows)."""
    torch.manual_seed(0)
    x = torch.randn(1, *size, dim, requires_grad=True)
    n = int(torch.tensor(size).prod())
    out = block(x).reshape(n, dim)
    rows = []
    for q in range(n):
        (g,) = torch.autograd.grad(out[q].sum(), x, retain_graph=True)
        rows.append(g.reshape(n, dim).abs().sum(1) > 0)
    return torch.stack(rows)


@pytest.mark.parametrize("size,window", [((11,), (4,)), ((9, 7), (4, 3)), ((5, 6, 3), (2, 4, 3))])
@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_sees_exactly_its_window(size, window, shifted):
    block = SwinBlock(8, heads_for(8, 4), window, shifted)
    seen = influence(block, size)
    groups = [expected_groups(s, w, shifted) for s, w in zip(size, window)]
    coords = list(itertools.product(*[range(s) for s in size]))
    expected = torch.tensor([[all(groups[a][q[a]] == groups[a][k[a]] for a in range(len(size))) for k in coords]
                             for q in coords])
    assert torch.equal(seen, expected)


def test_window_covering_the_map_is_global_attention_with_bias():
    block = SwinBlock(8, 2, (8, 8), shifted=True)
    with torch.no_grad():
        block.bias_table.zero_()
    reference = TransformerBlock(8, 2)
    reference.load_state_dict(block.block.state_dict())
    x = torch.randn(2, 5, 6, 8)
    assert torch.allclose(block(x), reference(x.reshape(2, 30, 8)).reshape(2, 5, 6, 8), atol=1e-5)


def test_heads_divide_width():
    assert heads_for(96) == 3 and heads_for(768) == 24 and heads_for(16) == 1 and heads_for(100) == 2
