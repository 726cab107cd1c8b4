"""The CUDA backend: ``rmsprop.cu`` (the kernels), ``rule_args`` (their by-value ``RuleArgs``
struct as a NumPy dtype, and its layout check), ``plan`` (instance names, launch geometry, argument
tuples: pure), ``loader`` (the source CuPy compiles, compilation per device), ``arrays`` (GPU
buffers as CuPy arrays) and ``backend`` (the dispatch contract, and the one launch helper).

Importing this package imports nothing heavy; CuPy is imported by ``arrays`` and ``backend`` only.
"""
