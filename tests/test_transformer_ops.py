"""Tensor ops a transformer needs, against PyTorch: values and gradients, eager and native, f32 and f64."""

from __future__ import annotations

import numpy as np
import pytest

import gradc
from tests.transformer_helpers import check, rand

torch = pytest.importorskip("torch")

DTYPES = [np.float32, np.float64]

CASES = {
    "cat": (lambda T, F, x, y: T.cat([x, y], 1), [(2, 3), (2, 5)], (0, 1)),
    "cat3": (lambda T, F, x, y: T.cat([x, y, x], -1), [(2, 3, 1), (2, 3, 2)], (0, 1)),
    "stack": (lambda T, F, x, y: T.stack([x, y], -1), [(2, 3), (2, 3)], (0, 1)),
    "split": (lambda T, F, x: T.split(x, [2, 5], 1)[1] * 2 + T.split(x, 3, 1)[2].sum(), [(2, 7)], (0,)),
    "chunk_unbind": (lambda T, F, x: x.chunk(3, -1)[1] * x.unbind(1)[0][:, None], [(2, 7)], (0,)),
    "narrow": (lambda T, F, x: x.narrow(1, 2, 3), [(2, 7)], (0,)),
    "masked_fill": (lambda T, F, x: x.masked_fill(T.ones(7, 7).tril() == 0, float("-inf")).softmax(-1),
                    [(2, 7, 7)], (0,)),
    "tril_triu": (lambda T, F, x: x.tril(1) + x.triu(-1) * 2, [(3, 4, 5)], (0,)),
    "where_scalar": (lambda T, F, x: T.where(x > 0, x, 0.5) + T.where(x < 0, 1.0, x), [(3, 4)], (0,)),
    "index_last": (lambda T, F, x: x[:, [-1], :] * 1, [(3, 4, 5)], (0,)),
    "index_tensor": (lambda T, F, x: x[T.tensor([2, 0, 2])], [(3, 4)], (0,)),
    "index_2d": (lambda T, F, x: x[:, T.tensor([[1, 0], [1, 1]])], [(3, 4)], (0,)),
    "index_pairs": (lambda T, F, x: x[T.tensor([0, 2, 2]), T.tensor([1, 3, 1])] * 1, [(3, 4, 5)], (0,)),
    "index_split": (lambda T, F, x: x[[1, 2], :, [0, 4]] + x[:, [1, 0], [[4], [2]]].sum(), [(3, 4, 5)], (0,)),
    "index_int_basic": (lambda T, F, x: x[0, :, [1, 2]] * 1, [(3, 4, 5)], (0,)),
    "index_select": (lambda T, F, x: x.index_select(1, T.tensor([3, 0, 3, 1])), [(3, 4, 2)], (0,)),
    "repeat": (lambda T, F, x: x.repeat(2, 1, 3), [(3, 4)], (0,)),
    "expand_view": (lambda T, F, x: x[:, None].expand(3, 2, 4).contiguous().view(-1), [(3, 4)], (0,)),
    "var_std": (lambda T, F, x: x.var(dim=1, correction=0, keepdim=True) + x.std(1)[:, None] + x.var(),
                [(3, 9)], (0,)),
    "norm": (lambda T, F, x: x.norm(dim=-1) + x.norm() + T.norm(x, p=1, dim=0).sum(), [(3, 9)], (0,)),
    "logsumexp": (lambda T, F, x: T.logsumexp(x, 1) + x.logsumexp(dim=(0, 1)), [(3, 9)], (0,)),
    "normalize": (lambda T, F, x: F.normalize(x, dim=-1), [(3, 9)], (0,)),
    "rms_norm": (lambda T, F, x, w: F.rms_norm(x, (9,), w), [(3, 9), (9,)], (0, 1)),
    "topk_values": (lambda T, F, x: T.topk(x, 3, dim=-1).values * 1, [(3, 9)], (0,), False),  # indices: eager
    "embedding_pad": (lambda T, F, w: F.embedding(T.tensor([[1, 0, 3], [3, 3, 2]]), w, padding_idx=3),
                      [(5, 4)], (0,)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_op_matches_torch(name, dtype):
    fn, shapes, wrt, *compiled = CASES[name]
    check(fn, [rand(*s, dtype=dtype, seed=i) for i, s in enumerate(shapes)], wrt, compiled=not compiled)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_3d_ignore_index_label_smoothing(dtype):
    labels = np.array([[1, -100, 4], [0, 2, -100]], dtype=np.int64)
    check(lambda T, F, x, y: F.cross_entropy(x, y, ignore_index=-100, label_smoothing=0.1),
          [rand(2, 5, 3, dtype=dtype), labels])
    check(lambda T, F, x, y: F.cross_entropy(x.view(-1, 5), y.view(-1), ignore_index=4),
          [rand(6, 5, dtype=dtype), labels.reshape(3, 2) % 5])


def test_boolean_mask_forward_and_gradient():
    x = rand(3, 4)
    mask = x > 0.2
    check(lambda T, F, x, m: x[m] * 2, [x, mask], compiled=False)
    check(lambda T, F, x, m: x[m], [x, mask[:, 0].copy()], compiled=False)


def test_inplace_masked_fill():
    x = gradc.tensor(rand(2, 3))
    x.masked_fill_(x > 0, 0.0)
    assert (x.numpy() <= 0).all()


def test_generation_helpers():
    gradc.manual_seed(0)
    probs = gradc.tensor(np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]], dtype=np.float32))
    with gradc.no_grad():
        draw = gradc.multinomial(probs, num_samples=4, replacement=True)
        assert draw.dtype == gradc.int64 and draw.shape == (2, 4)
        assert (draw.numpy()[0] == 1).all() and set(draw.numpy()[1]) <= {0, 2}
        one = gradc.multinomial(probs[1], 1)
        assert one.shape == (1,) and one.item() in (0, 2)
        logits = gradc.tensor(rand(2, 7, dtype=np.float32))
        assert (gradc.argmax(logits, dim=-1).numpy() == logits.numpy().argmax(-1)).all()
        values, indices = gradc.topk(logits, 2)
        ref = torch.topk(torch.tensor(logits.numpy()), 2)
        np.testing.assert_array_equal(indices.numpy(), ref.indices.numpy())
        np.testing.assert_array_equal(values.numpy(), ref.values.numpy())


BAD = [
    (lambda T: T.cat([T.ones(2, 3), T.ones(2, 4)]), RuntimeError, "Sizes of tensors must match except in dimension 0"),
    (lambda T: T.cat([T.ones(2, 3), T.ones(2, 3, 1)]), RuntimeError, "Tensors must have same number of dimensions"),
    (lambda T: T.cat([]), ValueError, "expected a non-empty list of Tensors"),
    (lambda T: T.stack([T.ones(2, 3), T.ones(2, 4)]), RuntimeError, "stack expects each tensor to be equal size"),
    (lambda T: T.split(T.ones(6), [2, 3]), RuntimeError, "split_with_sizes expects split_sizes to sum exactly to 6"),
    (lambda T: T.ones(6).masked_fill(T.ones(6), 0), RuntimeError, "masked_fill_ only supports boolean masks"),
    (lambda T: T.ones(6).index_select(0, T.tensor([7])), IndexError, "index out of range in self"),
    (lambda T: T.ones(6)[T.tensor([7])], IndexError, "index 7 is out of bounds for dimension 0 with size 6"),
    (lambda T: T.ones(6)[[-7]], IndexError, "index -7 is out of bounds for dimension 0 with size 6"),
    (lambda T: T.ones(2, 3).masked_fill(T.ones(3, 3) > 0, 0), RuntimeError, "must match the size of tensor b"),
    (lambda T: T.ones(3).tril(), RuntimeError, "tril"),
    (lambda T: T.ones(2, 3).narrow(1, 2, 3), RuntimeError, "exceeds dimension size"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input_like_torch(case):
    fn, error, words = BAD[case]
    with pytest.raises(error, match=words):
        fn(torch)
    with pytest.raises(error, match=words):
        fn(gradc)


def test_cat_promotes_dtypes_as_torch():
    out = gradc.cat([gradc.ones(2, 2), gradc.ones(2, 1, dtype=gradc.float64)], 1)
    assert out.dtype == gradc.float64 and out.shape == (2, 3)
    assert gradc.cat([gradc.ones(2) > 0, gradc.zeros(1) > 0]).tolist() == [True, True, False]


def test_compiled_index_out_of_range_raises_index_error():
    f = gradc.compile(lambda x, i: x[i] * 2)
    x = np.ones((6, 3), np.float32)
    assert f(x, np.array([1, -1])).shape == (2, 3)
    with pytest.raises(IndexError, match="index 7 is out of bounds"):
        f(x, np.array([7, 1]))


def test_traced_boolean_mask_index_is_refused():
    f = gradc.compile(lambda x, m: x[m])
    with pytest.raises(IndexError, match="data-dependent shape"):
        f(np.ones(3, np.float32), np.array([True, False, True]))


def test_sdpa_dropout():
    F = gradc.nn.functional
    q = gradc.tensor(rand(1, 2, 4, 8, dtype=np.float32))
    assert (F.scaled_dot_product_attention(q, q, q, dropout_p=1.0).numpy() == 0).all()
    gradc.manual_seed(0)
    out = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    assert out.shape == (1, 2, 4, 8) and np.isfinite(out.numpy()).all()
    with pytest.raises(ValueError, match="dropout probability"):
        F.scaled_dot_product_attention(q, q, q, dropout_p=1.5)
