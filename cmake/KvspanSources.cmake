# kvspan_include_sources(FILE LISTS): includes FILE (a folder's sources.cmake, relative to
# KVSPAN_ROOT) and makes each list named in the variable LISTS absolute under KVSPAN_ROOT.
# The source lists live in those files so that the project's build and the standalone
# builds for the GPU machine (kernels/cuda/standalone, gpu/standalone) compile the same
# files from one list. REQUIRES: KVSPAN_ROOT, the repository root.
macro(kvspan_include_sources file lists)
  include(${KVSPAN_ROOT}/${file})
  foreach(_kvspan_list IN LISTS ${lists})
    list(TRANSFORM ${_kvspan_list} PREPEND ${KVSPAN_ROOT}/)
  endforeach()
endmacro()
