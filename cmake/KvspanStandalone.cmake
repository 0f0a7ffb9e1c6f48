# What the standalone builds for the lent GPU machine (kernels/cuda/standalone,
# gpu/standalone) share: the project's language standards and ISA flags (the top-level
# CMakeLists.txt's), a build type and the H200's architecture unless given, Threads, the
# CUDA toolkit, and kvspan_include_sources. No -Wall: the project's build polices warnings,
# and GCC 12 gives false -Wrestrict ones in std::string at the -O3 of these Release builds.
# REQUIRES: KVSPAN_ROOT; after project().
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
set(CMAKE_CUDA_STANDARD 17)
if(NOT CMAKE_BUILD_TYPE)
  set(CMAKE_BUILD_TYPE RelWithDebInfo)
endif()
if(NOT CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 90)  # the H200; the project's build names 80;90
endif()
find_package(Threads REQUIRED)
find_package(CUDAToolkit REQUIRED)
foreach(flag -mavx2 -mfma -mf16c)
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:${flag}>)
endforeach()
include(${KVSPAN_ROOT}/cmake/KvspanSources.cmake)
