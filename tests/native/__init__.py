"""Helpers for the native (nvcc / host-emulation / NVRTC) tests of the CUDA backend."""
