// fastrms/cuda/grad_stats.cu compiled for the host (cuda_host.h), as fastrms.cuda.grad_stats joins
// it (grad_stats.cu and the GradTable layout check: grad_stats_source.cu, written by the CMake
// build). Two C entry points per kernel instance, for ctypes (tests/native/grad_stats_emulation.py):
//   fastrms_host_<kernel>(grid, block, params): the launch, params as cuLaunchKernel takes them;
//   fastrms_host_<kernel>_signature(kinds, sizes, capacity): its parameters' kinds and sizes.
#include "cuda_host.h"

#include "grad_stats_source.cu"

#define GRAD_ENTRY FASTRMS_HOST_ENTRY  // cuda_host.h: the launch and signature entries

GRAD_ENTRY(grad_lane_sums_float32, fastrms::grad_lane_sums<float>)
GRAD_ENTRY(grad_lane_sums_float64, fastrms::grad_lane_sums<double>)
GRAD_ENTRY(grad_lane_sums_float16, fastrms::grad_lane_sums<__half>)
GRAD_ENTRY(grad_lane_sums_bfloat16, fastrms::grad_lane_sums<__nv_bfloat16>)
GRAD_ENTRY(grad_chunk_partials, fastrms::grad_chunk_partials)
GRAD_ENTRY(grad_tree_sums, fastrms::grad_tree_sums)
GRAD_ENTRY(grad_finish, fastrms::grad_finish)
