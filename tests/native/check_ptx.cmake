# cmake -DPTX=rmsprop.compute_90.ptx -P check_ptx.cmake
# Fails unless every float32 kernel entry in the PTX file has 128-bit loads and stores:
#  - fastrms::rmsprop_kernel<float, ...> (four): global ones (ld.global.v4.f32, or
#    ld.global.nc.v4.f32 for the read-only grad; st.global.v4.f32);
#  - fastrms::rmsprop_multi_kernel<float, ...> (four): global or generic ones (ld.v4.f32 /
#    st.v4.f32): its pointers come from a table in memory, which PTX sees as generic addresses.
cmake_minimum_required(VERSION 3.24)

function(check_entries ptx prefix load store)
  file(READ ${ptx} text)
  set(entries 0)
  while(TRUE)
    string(FIND "${text}" ".entry ${prefix}" start)
    if(start EQUAL -1)
      break()
    endif()
    string(SUBSTRING "${text}" ${start} -1 text)
    string(FIND "${text}" "\n}" stop)  # an entry's body ends with a "}" line
    string(SUBSTRING "${text}" 0 ${stop} body)
    string(SUBSTRING "${text}" ${stop} -1 text)
    string(REGEX MATCH "${prefix}[A-Za-z0-9_]*" name "${body}")
    if(NOT body MATCHES "${load}")
      message(FATAL_ERROR "${ptx}: ${name} has no 128-bit global load (${load})")
    endif()
    if(NOT body MATCHES "${store}")
      message(FATAL_ERROR "${ptx}: ${name} has no 128-bit global store (${store})")
    endif()
    math(EXPR entries "${entries} + 1")
  endwhile()
  if(NOT entries EQUAL 4)
    message(FATAL_ERROR "${ptx}: expected 4 float32 ${prefix} entries, found ${entries}")
  endif()
endfunction()

check_entries(${PTX} "_ZN7fastrms14rmsprop_kernelIfL"
              "ld\\.global(\\.nc)?\\.v4\\.f32" "st\\.global\\.v4\\.f32")
check_entries(${PTX} "_ZN7fastrms20rmsprop_multi_kernelIfL"
              "ld(\\.global)?(\\.nc)?\\.v4\\.f32" "st(\\.global)?\\.v4\\.f32")
message(STATUS "${PTX}: 8 float32 kernels with 128-bit loads and stores")
