"""Compiling rmsprop.cu with NVRTC, as cupy.RawModule does, without a device.

CuPy's own entry point asks the device for its architecture first, so the tests call NVRTC
through ``cuda.bindings.nvrtc`` with the same inputs: the source, loader.OPTIONS, the flags CuPy
adds (``-ftz=true``, ``-arch=sm_XX``), the CUDA include path, and one name expression per
instance (which is how RawModule instantiates templates).
"""

from cuda.bindings import nvrtc

CUPY_ADDED = ("-ftz=true",)


class NvrtcError(RuntimeError):
    pass


def _check(result):
    status, *rest = result
    if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise NvrtcError(f"{status.name}")
    return rest[0] if len(rest) == 1 else rest


def compile_instances(source, options, names, arch, include_dir):
    """Compile ``source`` for ``sm_{arch}`` with every name in ``names`` instantiated.

    Returns ``({name: lowered (mangled) name}, cubin bytes, log)``; raises ``NvrtcError`` with
    the compiler's log on failure.
    """
    program = _check(nvrtc.nvrtcCreateProgram(source.encode(), b"rmsprop.cu", 0, [], []))
    try:
        for name in names:
            _check(nvrtc.nvrtcAddNameExpression(program, name.encode()))
        flags = [*options, *CUPY_ADDED, f"-arch=sm_{arch}", f"-I{include_dir}"]
        status, = nvrtc.nvrtcCompileProgram(program, len(flags), [f.encode() for f in flags])
        size = _check(nvrtc.nvrtcGetProgramLogSize(program))
        # Buffers NVRTC writes into are bytearrays: ``b" " * size`` is, for size 1 (an empty
        # log), the interpreter's shared b" ", which NVRTC overwrote with b"\0" for the whole
        # process (torch.load then read every pickled 32 as 0).
        log = bytearray(size)
        _check(nvrtc.nvrtcGetProgramLog(program, log))
        log = bytes(log).rstrip(b"\0").decode(errors="replace")
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise NvrtcError(f"{status.name}\n{log}")
        lowered = {name: _check(nvrtc.nvrtcGetLoweredName(program, name.encode())).decode()
                   for name in names}
        size = _check(nvrtc.nvrtcGetCUBINSize(program))
        cubin = bytearray(size)
        _check(nvrtc.nvrtcGetCUBIN(program, cubin))
        return lowered, bytes(cubin), log
    finally:
        nvrtc.nvrtcDestroyProgram(program)
