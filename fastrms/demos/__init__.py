"""The RMSProp chapter of *Dive into Deep Learning* (section 11.8), rerun on fastrms.

One module per demo; each has ``add_arguments(parser)`` and ``run(args, say)``, which reports its
numbers through ``say`` (one line per call) and, with ``args.out`` set, writes ``NAME.png`` there
and returns its path. ``fastrms demo NAME`` (``fastrms.demos.cli``) runs them.
"""

# name -> one-line description; each is the module fastrms.demos.<name>. Here, not in cli.py,
# so that index.py and cli.py both read it without importing each other.
DEMOS = {
    "weights": "leaky-average weights (1-gamma) gamma^t for four values of gamma",
    "trace": "RMSProp on f(x) = 0.1 x1^2 + 2 x2^2: the book's 2-D trajectory",
    "airfoil": "from-scratch linear regression on the airfoil data (the book's loss: 0.245)",
    "concise": "the same with torch.nn.Linear: torch.optim.RMSprop vs fastrms.torch.RMSprop",
    "gamma": "exercises on gamma: gamma = 1, and a gamma x eta grid of final losses",
    "digits": "a small MLP on scikit-learn's digits: fastrms vs torch RMSprop and SGD",
}


class DemoUnavailable(RuntimeError):
    """Something a demo needs is missing here; the message says what and how to get it."""
