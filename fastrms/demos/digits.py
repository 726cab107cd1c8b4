"""``digits``: the exercise "try a real problem": a small MLP on scikit-learn's bundled digits.

One model, one start, the same batches, three optimizers: fastrms (``fastrms.RMSprop``, the book's
rule, stepping the torch tensors in place), ``torch.optim.RMSprop`` and plain SGD.
"""

import time

import numpy as np

import fastrms

from . import DemoUnavailable, _plot, _torch

QUICK = {"epochs": 2}
TEST_ROWS = 497  # of 1797 images; the other 1300 train


def load_digits(seed):
    """Train and test splits of the 8×8 digits, pixels scaled to [0, 1], as torch tensors."""
    torch = _torch.torch()
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DemoUnavailable(
            "the digits demo needs scikit-learn for its bundled data: pip install scikit-learn"
        ) from None
    images, labels = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(labels))
    X = torch.tensor(images[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(labels[order], dtype=torch.int64)
    return (X[TEST_ROWS:], y[TEST_ROWS:]), (X[:TEST_ROWS], y[:TEST_ROWS])


class FastrmsStepper:
    """``fastrms.RMSprop`` driving a torch model's parameters: one fused step per tensor."""

    def __init__(self, params, **hyper):
        self.params = list(params)
        self.rule = fastrms.RMSprop(**hyper)  # convention "book": eps 1e-6 inside the root
        self.states = [self.rule.init(p) for p in self.params]
        for p, state in zip(self.params, self.states):  # load the kernels before any timing
            scratch = p.detach().clone()
            self.rule.step(scratch, scratch.clone(), self.rule.init(scratch))

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        for p, state in zip(self.params, self.states):
            self.rule.step(p.detach(), p.grad, state)


def train(make_optimizer, train_set, test_set, seed, epochs, hidden, batch_size):
    """Per-epoch mean training loss and test accuracy, and sec/epoch."""
    torch = _torch.torch()
    X, y = train_set
    torch.manual_seed(seed)  # the same initial weights for every optimizer
    net = torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    optimizer = make_optimizer(net.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)  # the same batches for every optimizer
    losses, accuracies, seconds = [], [], 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = torch.from_numpy(rng.permutation(len(y)))
        total = 0.0
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(net(X[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        seconds += time.perf_counter() - t0
        losses.append(total / len(y))
        with torch.no_grad():
            accuracies.append((net(test_set[0]).argmax(1) == test_set[1]).float().mean().item())
    return np.array(losses), np.array(accuracies), seconds / epochs


def add_arguments(parser):
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument("--epochs", type=int, default=20, help="epochs")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size")
    parser.add_argument("--lr", type=float, default=0.003,
                        help="learning rate of both RMSProps")
    parser.add_argument("--sgd-lr", type=float, default=0.1, help="SGD's learning rate")


def run(args, say):
    with _torch.one_thread():
        return _run(args, say)


def _run(args, say):
    torch = _torch.torch()
    train_set, test_set = load_digits(args.seed)
    optimizers = {
        "fastrms.RMSprop (book)": lambda p: FastrmsStepper(p, lr=args.lr, alpha=0.9),
        "torch.optim.RMSprop": lambda p: torch.optim.RMSprop(p, lr=args.lr, alpha=0.9),
        "torch.optim.SGD": lambda p: torch.optim.SGD(p, lr=args.sgd_lr),
    }
    say(f"MLP 64-{args.hidden}-10 on {len(train_set[1])} training / {len(test_set[1])} test "
        f"digits, {args.epochs} epochs, batches of {args.batch_size}; RMSProp lr {args.lr}, "
        f"alpha 0.9; SGD lr {args.sgd_lr}")
    results = {}
    for name, make in optimizers.items():
        results[name] = train(make, train_set, test_set, args.seed, args.epochs, args.hidden,
                              args.batch_size)
        losses, accuracies, sec = results[name]
        say(f"{name:23s} test accuracy {accuracies[-1]:.3f}, train loss {losses[-1]:.4f}, "
            f"{sec:.3f} sec/epoch")
    if args.out is None:
        return None
    fig = _plot.figure(_plot.WIDE)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = np.arange(1, args.epochs + 1)
    for name, (losses, accuracies, _) in results.items():
        ax_loss.plot(epochs, losses, label=name)
        ax_acc.plot(epochs, accuracies, label=name)
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch", ylabel="training loss (cross entropy)", title="Training loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", title="Test accuracy")
    ax_loss.legend()
    ax_acc.legend(loc="lower right")
    return _plot.save(fig, args.out, "digits")
