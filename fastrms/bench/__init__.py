"""``fastrms bench``: the fused update against the memory roofline, CPU and GPU, in one table."""
