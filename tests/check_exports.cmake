# Checks the ABI surface of librkv.so (run with cmake -P, see abi_tests.cmake):
#   - every dynamic symbol the library defines starts with rkv_ (nothing of the
#     C++ runtime, BLAS or the internals leaks out),
#   - every function the public headers declare is exported, and nothing else
#     is: rkv.h's stable functions and rkv_experimental.h's experimental ones,
#     which are listed separately (they may change between minor versions),
#   - the SONAME is librkv.so.<major>, with <major> read from the header.
#
#   cmake -DLIBRARY=<librkv.so> -DHEADER=<include/rkv/rkv.h>
#         -DEXPERIMENTAL_HEADER=<include/rkv/rkv_experimental.h> -DNM=<nm>
#         [-DREADELF=<readelf>] [-DOBJDUMP=<objdump>] -P check_exports.cmake
cmake_minimum_required(VERSION 3.22)

foreach(_var LIBRARY HEADER EXPERIMENTAL_HEADER NM)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "check_exports: pass -D${_var}=...")
  endif()
endforeach()
if(NOT EXISTS "${LIBRARY}")
  message(FATAL_ERROR "check_exports: ${LIBRARY} does not exist")
endif()

# --- exported symbols -------------------------------------------------------
execute_process(COMMAND "${NM}" -D --defined-only "${LIBRARY}"
                RESULT_VARIABLE _rc OUTPUT_VARIABLE _nm ERROR_VARIABLE _nm_err)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "check_exports: '${NM} -D --defined-only ${LIBRARY}' failed (${_rc}): ${_nm_err}")
endif()
string(REPLACE "\n" ";" _lines "${_nm}")
set(_exported "")
set(_foreign "")
foreach(_line IN LISTS _lines)
  if(_line STREQUAL "")
    continue()
  endif()
  # "<address> <type> <name>[@[@]version]"
  if(NOT _line MATCHES "^[0-9a-fA-F]* *[A-Za-z] ([^ ]+)$")
    message(FATAL_ERROR "check_exports: cannot parse nm output line '${_line}'")
  endif()
  string(REGEX REPLACE "@.*$" "" _name "${CMAKE_MATCH_1}")
  if(_name MATCHES "^rkv_")
    list(APPEND _exported "${_name}")
  else()
    list(APPEND _foreign "${_name}")
  endif()
endforeach()
if(_foreign)
  list(JOIN _foreign "\n  " _foreign_text)
  message(FATAL_ERROR
    "check_exports: ${LIBRARY} exports symbols outside the rkv_ namespace:\n  ${_foreign_text}\n"
    "Only rkv_* may leave the library: check src/exports.map and the visibility flags.")
endif()

# --- the headers' functions, all exported, and no others ----------------------
# rkv_declared(<header> <out-var>): the RKV_API functions a header declares.
function(rkv_declared header out)
  file(READ "${header}" _text)
  string(REGEX MATCHALL "RKV_API[^;(]*[ *](rkv_[A-Za-z0-9_]+)[ ]*\\(" _declarations "${_text}")
  set(_names "")
  foreach(_declaration IN LISTS _declarations)
    string(REGEX MATCH "(rkv_[A-Za-z0-9_]+)[ ]*\\($" _ "${_declaration}")
    list(APPEND _names "${CMAKE_MATCH_1}")
  endforeach()
  set(${out} "${_names}" PARENT_SCOPE)
endfunction()
rkv_declared("${HEADER}" _stable)
rkv_declared("${EXPERIMENTAL_HEADER}" _experimental)
if(NOT _stable)
  message(FATAL_ERROR "check_exports: found no RKV_API function in ${HEADER}")
endif()
if(NOT _experimental)
  message(FATAL_ERROR "check_exports: found no RKV_API function in ${EXPERIMENTAL_HEADER}")
endif()
foreach(_name IN LISTS _experimental)
  if(_name IN_LIST _stable)
    message(FATAL_ERROR "check_exports: ${_name} is declared in both headers")
  endif()
endforeach()
set(_declared ${_stable} ${_experimental})
file(READ "${HEADER}" _header)
set(_missing "")
foreach(_name IN LISTS _declared)
  if(NOT _name IN_LIST _exported)
    list(APPEND _missing "${_name}")
  endif()
endforeach()
set(_undeclared "")
foreach(_name IN LISTS _exported)
  if(NOT _name IN_LIST _declared)
    list(APPEND _undeclared "${_name}")
  endif()
endforeach()
if(_missing)
  list(JOIN _missing ", " _text)
  message(FATAL_ERROR "check_exports: declared in the headers but not exported by ${LIBRARY}: ${_text}")
endif()
if(_undeclared)
  list(JOIN _undeclared ", " _text)
  message(FATAL_ERROR "check_exports: exported by ${LIBRARY} but declared in neither header: ${_text}")
endif()

# --- SONAME -------------------------------------------------------------------
if(NOT _header MATCHES "#define RKV_VERSION_MAJOR +([0-9]+)")
  message(FATAL_ERROR "check_exports: no RKV_VERSION_MAJOR in ${HEADER}")
endif()
set(_expected_soname "librkv.so.${CMAKE_MATCH_1}")
set(_soname "")
if(DEFINED READELF AND NOT READELF STREQUAL "")
  execute_process(COMMAND "${READELF}" -d "${LIBRARY}" RESULT_VARIABLE _rc OUTPUT_VARIABLE _dynamic
                  ERROR_VARIABLE _err)
  if(_rc EQUAL 0 AND _dynamic MATCHES "\\(SONAME\\)[^\n]*\\[([^]\n]+)\\]")
    set(_soname "${CMAKE_MATCH_1}")
  endif()
elseif(DEFINED OBJDUMP AND NOT OBJDUMP STREQUAL "")
  execute_process(COMMAND "${OBJDUMP}" -p "${LIBRARY}" RESULT_VARIABLE _rc OUTPUT_VARIABLE _dynamic
                  ERROR_VARIABLE _err)
  if(_rc EQUAL 0 AND _dynamic MATCHES "SONAME +([^ \n]+)")
    set(_soname "${CMAKE_MATCH_1}")
  endif()
else()
  message(FATAL_ERROR "check_exports: pass -DREADELF=... or -DOBJDUMP=... to read the SONAME")
endif()
if(_soname STREQUAL "")
  message(FATAL_ERROR "check_exports: ${LIBRARY} has no SONAME (expected ${_expected_soname})")
endif()
if(NOT _soname STREQUAL _expected_soname)
  message(FATAL_ERROR "check_exports: the SONAME of ${LIBRARY} is ${_soname}, expected "
                      "${_expected_soname} (the header's RKV_VERSION_MAJOR)")
endif()

list(LENGTH _stable _stable_count)
list(LENGTH _experimental _experimental_count)
list(JOIN _stable " " _stable_text)
list(JOIN _experimental " " _experimental_text)
message(STATUS "check_exports: stable (${_stable_count}): ${_stable_text}")
message(STATUS "check_exports: experimental (${_experimental_count}, may change between minor versions): "
               "${_experimental_text}")
message(STATUS "check_exports: every exported symbol is rkv_* and declared; SONAME ${_soname}")
