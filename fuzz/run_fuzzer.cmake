# ctest driver of one harness: copies the seed corpus to a fresh working
# corpus in the build directory, then fuzzes it for SECONDS.
#   cmake -DWORK=<dir> -DSEEDS=<dir> -DARTIFACTS=<dir/> -DSECONDS=<n> -P run_fuzzer.cmake -- <harness>
set(harness "")
set(seen_dashes OFF)
math(EXPR last "${CMAKE_ARGC} - 1")
foreach(i RANGE ${last})
  if(seen_dashes)
    set(harness "${CMAKE_ARGV${i}}")
  elseif("${CMAKE_ARGV${i}}" STREQUAL "--")
    set(seen_dashes ON)
  endif()
endforeach()
if(harness STREQUAL "")
  message(FATAL_ERROR "usage: cmake -D... -P run_fuzzer.cmake -- <harness>")
endif()
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}" "${ARTIFACTS}")
file(GLOB seeds "${SEEDS}/*")
file(COPY ${seeds} DESTINATION "${WORK}")
execute_process(
  COMMAND "${harness}" -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          "-artifact_prefix=${ARTIFACTS}" "${WORK}"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${harness} failed (${rc}); the input is under ${ARTIFACTS}")
endif()
