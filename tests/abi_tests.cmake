# ABI tests (included by tests/CMakeLists.txt):
#   abi_exports            librkv.so exports exactly the header's rkv_* functions,
#                          and its SONAME is librkv.so.<major>
#   header_c99[_experimental|_legacy_opt_in], header_cxx[...]
#                          the public header compiles as strict C99 and as C++11,
#                          without the experimental API, with rkv_experimental.h,
#                          and with 0.1's opt-in (RKV_EXPERIMENTAL_API), and the
#                          program linked against librkv.so sees the header's version

# --- exported symbols and SONAME ---------------------------------------------
set(_rkv_readelf "")
if(CMAKE_READELF)
  set(_rkv_readelf "${CMAKE_READELF}")
endif()
set(_rkv_objdump "")
if(CMAKE_OBJDUMP)
  set(_rkv_objdump "${CMAKE_OBJDUMP}")
endif()
add_test(NAME abi_exports
         COMMAND ${CMAKE_COMMAND}
                 -DLIBRARY=$<TARGET_FILE:rkv>
                 -DHEADER=${PROJECT_SOURCE_DIR}/include/rkv/rkv.h
                 -DEXPERIMENTAL_HEADER=${PROJECT_SOURCE_DIR}/include/rkv/rkv_experimental.h
                 -DNM=${CMAKE_NM}
                 -DREADELF=${_rkv_readelf}
                 -DOBJDUMP=${_rkv_objdump}
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/check_exports.cmake)
set_tests_properties(abi_exports PROPERTIES LABELS cpu)

# --- the header as strict C99 and as C++11 -------------------------------------
# rkv_add_header_test(name source language [EXPERIMENTAL])
function(rkv_add_header_test name source language)
  cmake_parse_arguments(ARG "EXPERIMENTAL;LEGACY_OPT_IN" "" "" ${ARGN})
  add_executable(${name} ${source})
  # The shared library, as a user links it: only the public header, no test helpers.
  target_link_libraries(${name} PRIVATE rkv)
  if(language STREQUAL "C")
    set_target_properties(${name} PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)
    target_compile_options(${name} PRIVATE -std=c99 -pedantic -Werror -Wall -Wextra)
  else()
    set_target_properties(${name} PROPERTIES CXX_STANDARD 11 CXX_STANDARD_REQUIRED ON
                                             CXX_EXTENSIONS OFF)
    target_compile_options(${name} PRIVATE -std=c++11 -pedantic -Werror -Wall -Wextra)
  endif()
  if(ARG_EXPERIMENTAL)
    target_compile_definitions(${name} PRIVATE RKV_TEST_INCLUDE_EXPERIMENTAL)
  endif()
  if(ARG_LEGACY_OPT_IN)
    target_compile_definitions(${name} PRIVATE RKV_EXPERIMENTAL_API)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS cpu)
endfunction()

rkv_add_header_test(header_c99 header_c99.c C)
rkv_add_header_test(header_c99_experimental header_c99.c C EXPERIMENTAL)
rkv_add_header_test(header_cxx header_cxx.cpp CXX)
rkv_add_header_test(header_cxx_experimental header_cxx.cpp CXX EXPERIMENTAL)
rkv_add_header_test(header_c99_legacy_opt_in header_c99.c C LEGACY_OPT_IN)
rkv_add_header_test(header_cxx_legacy_opt_in header_cxx.cpp CXX LEGACY_OPT_IN)
