"""What fastrms.torch.RMSprop refuses, before writing anything: sparse grads, unsupported dtypes
and flags; and `import fastrms` does not import torch."""

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from adapter_cases import flatten_both, loss_of, make_mlp, train_step  # noqa: E402
from fastrms.torch import RMSprop  # noqa: E402


def snapshot(model, opt):
    return [p.detach().clone() for p in model.parameters()] + [
        v.clone() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]


def assert_unchanged(model, opt, before):
    after = snapshot(model, opt)
    assert len(after) == len(before)
    assert all(torch.equal(a, b) for a, b in zip(after, before))


@flatten_both
def test_sparse_grad_leaves_everything_unchanged(flatten):
    model = make_mlp()
    ours = RMSprop([{"params": model[0].parameters()}, {"params": model[2].parameters()}],
                   flatten=flatten, momentum=0.9)
    train_step(model, ours)
    loss_of(model).backward()
    model[2].bias.grad = model[2].bias.grad.to_sparse()
    before = snapshot(model, ours)
    with pytest.raises(RuntimeError, match="sparse"):
        ours.step()
    assert_unchanged(model, ours, before)


def test_unsupported_dtype_and_flags_are_clear_errors():
    whole = torch.ones(3, dtype=torch.int32)  # half-precision params are updated (test_mixed_*)
    whole.grad = torch.ones(3, dtype=torch.int32)
    with pytest.raises(TypeError, match="int32 param"):
        RMSprop([whole]).step()
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match="capturable=True needs the group's params on one CUDA"):
        RMSprop([p], capturable=True).step()  # a CUDA graph replays device work only
    assert torch.equal(p, torch.ones(3))
    with pytest.raises(ValueError, match="capturable=True is not supported with flatten=True"):
        RMSprop([p], capturable=True, flatten=True)
    with pytest.raises(ValueError, match="differentiable"):
        RMSprop([p], differentiable=True)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        RMSprop([p], lr=-1.0)
    RMSprop([p], foreach=True)  # accepted, ignored: there is one fused path


def test_import_fastrms_does_not_import_torch():
    code = "import sys, fastrms; assert 'torch' not in sys.modules; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
