"""Tools for testing visiontk's compiled kernels, shared by the tests and the benchmarks (as
numpy.testing is): :mod:`.cuda_emulator` runs the CUDA kernels on the CPU, :mod:`.kernel_checks`
compares a kernel's output with its xp definition. Not needed to use visiontk."""
