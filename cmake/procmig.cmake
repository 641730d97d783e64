# Helpers that keep the module layering of DESIGN.md a build error rather than a review comment.
#
# procmig_module(NAME SOURCES ... DEPS ... [LIBS ...]) creates the static library procmig_NAME from
# lib/src/NAME. Its headers are reached as "NAME/foo.h" through a per-module include directory that
# holds only a link to lib/src/NAME, so a module can include the headers of exactly the modules it
# links (DEPS), transitively, and nothing else.
set(PROCMIG_INCLUDE_ROOT ${CMAKE_BINARY_DIR}/module_include)

function(procmig_module name)
  cmake_parse_arguments(M "" "" "SOURCES;DEPS;LIBS" ${ARGN})
  set(inc ${PROCMIG_INCLUDE_ROOT}/${name})
  file(MAKE_DIRECTORY ${inc})
  if(NOT EXISTS ${inc}/${name})
    file(CREATE_LINK ${CMAKE_SOURCE_DIR}/lib/src/${name} ${inc}/${name} SYMBOLIC)
  endif()
  add_library(procmig_${name} STATIC ${M_SOURCES})
  target_include_directories(procmig_${name} PUBLIC ${inc})
  set(deps)
  foreach(d ${M_DEPS})
    list(APPEND deps procmig_${d})
  endforeach()
  target_link_libraries(procmig_${name} PUBLIC ${deps} ${M_LIBS})
endfunction()

# procmig_test(NAME SOURCES ... LIBS ... LABEL unit|component|kernel|e2e [TIMEOUT s])
# builds one doctest binary and registers it with CTest. Exit code 77 means "skipped" (the
# kernel feature is missing); the test prints why.
function(procmig_test name)
  cmake_parse_arguments(T "" "LABEL;TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE procmig_doctest_main ${T_LIBS})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS ${T_LABEL} TIMEOUT ${T_TIMEOUT}
                       SKIP_RETURN_CODE 77)
endfunction()

# procmig_fuzzer(NAME SOURCES ... LIBS ...) builds a libFuzzer target when PROCMIG_FUZZ is on.
function(procmig_fuzzer name)
  cmake_parse_arguments(F "" "" "SOURCES;LIBS" ${ARGN})
  if(NOT PROCMIG_FUZZ)
    return()
  endif()
  add_executable(${name} ${F_SOURCES})
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(${name} PRIVATE ${F_LIBS})
  set_property(GLOBAL APPEND PROPERTY PROCMIG_FUZZERS ${name})
endfunction()
