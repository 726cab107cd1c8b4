"""The Numba CPU backend (imported on first use only: importing Numba takes a while)."""
