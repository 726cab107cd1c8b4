"""8-bit state on a real GPU: the warp build of rmsprop8_kernel (its shuffles included) against
the NumPy reference, and fastrms.torch.RMSprop(state_bits=8) on CUDA against the same on the
CPU (per param and flatten=True). Marked ``gpu``; skipped, with the reason, where CuPy sees no
device."""

import numpy as np
import pytest

import cases
from conftest import require_cupy_device, require_torch_cuda
from fastrms.eight_bit import Codes, apply8
from test_eight_bit import assert_same_state, copied, state8

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp():
    require_cupy_device()
    import cupy

    return cupy


def on_device(cp, state):
    return [None if c is None else Codes(*map(cp.asarray, c)) for c in state]


@pytest.mark.parametrize("n", [1, 255, 257, 4097, (1 << 20) + 3])
def test_the_warp_kernel_equals_the_reference(cp, n):
    rng = np.random.default_rng(n)
    for desc, rule in cases.some_modes():
        param = rng.uniform(-2, 2, n).astype(np.float32)
        state = state8(rng, rule, n)
        ref_p, ref_s = param.copy(), copied(state)
        dev_p, dev_s = cp.asarray(param), on_device(cp, state)
        for t in range(1, 4):
            g = cases.grad(rng, np.float32, n)
            apply8(rule, ref_p, g, *ref_s, step=t, backend="numpy")
            apply8(rule, dev_p, cp.asarray(g), *dev_s, step=t, backend="cupy")
        cases.assert_same(dev_p.get(), ref_p, err_msg=f"{desc} n={n}")
        assert_same_state([None if c is None else Codes(*(a.get() for a in c)) for c in dev_s],
                          ref_s, f"{desc} n={n}")


@pytest.mark.parametrize("flatten", [False, True])
def test_the_torch_adapter_on_cuda_equals_the_cpu(flatten):
    """Per param and with flatten=True (one call over a block-aligned flat buffer)."""
    torch = require_torch_cuda()
    import fastrms.torch as ft

    torch.manual_seed(0)
    cpu = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 1))
    cuda = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 1))
    cuda.load_state_dict(cpu.state_dict())
    cuda.cuda()
    kw = dict(lr=1e-3, momentum=0.9, centered=True, state_bits=8, threshold=0, flatten=flatten)
    opts = ft.RMSprop(cpu.parameters(), **kw), ft.RMSprop(cuda.parameters(), **kw)
    for p, q in zip(cpu.parameters(), cuda.parameters()):  # the same grads on both
        p.grad = torch.randn_like(p) * 0.01
        q.grad = p.grad.cuda()
    for _ in range(3):
        for opt in opts:
            opt.step()
    for p, q in zip(cpu.parameters(), cuda.parameters()):
        assert torch.equal(p, q.cpu())
