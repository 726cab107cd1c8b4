"""The CUDA backend: ``rmsprop.cu`` (the kernels), ``loader`` (names, launch plan, compilation),
``arrays`` (GPU buffers as CuPy arrays) and ``backend`` (the dispatch contract).

Importing this package imports nothing heavy; CuPy is imported by ``arrays`` and ``backend`` only.
"""
