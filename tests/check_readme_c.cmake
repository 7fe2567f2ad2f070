# cmake -DREADME=... -DWORK_DIR=... -DCC=... -DINCLUDE_DIR=... -DLIBRARY_DIR=... [-DFLAGS=...]
#       -P check_readme_c.cmake
# The README's C example (the first ```c block under "## Using it from C")
# compiles as shown, as a user would build it: C99, -Wall -Wextra -Wpedantic
# -Werror, with <rkv/rkv.h> and -lrkv. The test reads README.md itself, so the
# two cannot drift apart.
file(READ "${README}" text)
string(FIND "${text}" "## Using it from C" section)
if(section EQUAL -1)
  message(FATAL_ERROR "${README} has no section '## Using it from C'")
endif()
string(SUBSTRING "${text}" ${section} -1 text)
string(FIND "${text}" "```c\n" start)
if(start EQUAL -1)
  message(FATAL_ERROR "no ```c block under '## Using it from C' in ${README}")
endif()
math(EXPR start "${start} + 5")
string(SUBSTRING "${text}" ${start} -1 text)
string(FIND "${text}" "```" end)
string(SUBSTRING "${text}" 0 ${end} code)

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
file(WRITE "${WORK_DIR}/readme_example.c" "${code}")
separate_arguments(flags UNIX_COMMAND "${FLAGS}")
execute_process(
  COMMAND "${CC}" -std=c99 -Wall -Wextra -Wpedantic -Werror ${flags} "-I${INCLUDE_DIR}"
          readme_example.c "-L${LIBRARY_DIR}" -lrkv -o readme_example
  WORKING_DIRECTORY "${WORK_DIR}" RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "README.md's C example does not compile (${WORK_DIR}/readme_example.c):\n${out}${err}")
endif()
message("README.md's C example compiles and links without a warning")
