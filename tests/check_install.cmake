# cmake -DBUILD_DIR=... -DWORK_DIR=... -DSOURCE_DIR=... -DCONSUMER_C_COMPILER=... [-DCONSUMER_FLAGS=...]
#       -P check_install.cmake
# Installs the build into a fresh prefix, then builds and runs a consumer that
# finds it with find_package(rkv), with pkg-config (librkv), and with the old
# package name find_package(librkv).
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "failed: ${ARGN}\n${out}\n${err}")
  endif()
  message("${out}")
endfunction()
run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}")
set(ENV{PKG_CONFIG_PATH} "${prefix}/lib/pkgconfig")
# The consumer is built by the library's compiler: a sanitized librkv needs the
# same sanitizer runtime in the program that loads it.
run(${CMAKE_COMMAND} -S "${SOURCE_DIR}" -B "${WORK_DIR}/build" "-DCMAKE_PREFIX_PATH=${prefix}"
    "-DCMAKE_C_COMPILER=${CONSUMER_C_COMPILER}"
    "-DCMAKE_C_FLAGS=${CONSUMER_FLAGS}" "-DCMAKE_EXE_LINKER_FLAGS=${CONSUMER_FLAGS}")
run(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
set(ENV{LD_LIBRARY_PATH} "${prefix}/lib")
run("${WORK_DIR}/build/consumer_cmake")
run("${WORK_DIR}/build/consumer_pkgconfig")
run("${WORK_DIR}/build/consumer_cmake_librkv")
