# The source list of kvspan::common, shared by common/CMakeLists.txt and gpu/standalone
# (cmake/KvspanSources.cmake). Paths are relative to the repository root.
set(KVSPAN_COMMON_SOURCES
  common/api_key_file.cc
  common/cpu_features.cc
  common/file_util.cc
  common/flags.cc
  common/logging.cc
  common/metrics.cc
  common/thread_pool.cc
)
set(KVSPAN_COMMON_LISTS KVSPAN_COMMON_SOURCES)
