"""Optional imports for the torch demos, each with a message that says how to get it."""

import contextlib

from . import DemoUnavailable


def torch():
    try:
        import torch
    except ImportError:
        raise DemoUnavailable(
            "this demo needs PyTorch: pip install 'fastrms[torch]' (torch==2.13.0)") from None
    return torch


def fastrms_torch_rmsprop():
    """``fastrms.torch.RMSprop``, the drop-in torch.optim optimizer."""
    torch()
    try:
        from fastrms.torch import RMSprop
    except ModuleNotFoundError as exc:
        if exc.name != "fastrms.torch":
            raise
        raise DemoUnavailable(
            "fastrms.torch.RMSprop is not available in this build of fastrms "
            "(the fastrms.torch package is missing)") from None
    except ImportError as exc:  # the module exists but lacks the class
        raise DemoUnavailable(f"fastrms.torch.RMSprop is not available: {exc}") from None
    return RMSprop


@contextlib.contextmanager
def one_thread():
    """Run torch single-threaded, then restore: these models are tiny, so intra-op threads only
    add synchronisation, and on a busy machine their spin-waits cost milliseconds per op."""
    torch_module = torch()
    threads = torch_module.get_num_threads()
    torch_module.set_num_threads(1)
    try:
        yield torch_module
    finally:
        torch_module.set_num_threads(threads)
