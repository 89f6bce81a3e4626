# Project-wide compile flags. Applied per target through coco_target_defaults()
# so generated protobuf code can be built with relaxed warnings.
set(COCO_WARNING_FLAGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
    -Wold-style-cast -Wcast-align -Wunused -Woverloaded-virtual -Wnull-dereference
    -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough -Wno-missing-field-initializers)
if(COCOSTORAGE_WERROR)
  list(APPEND COCO_WARNING_FLAGS -Werror)
endif()

if(COCOSTORAGE_SANITIZE AND COCOSTORAGE_TSAN)
  message(FATAL_ERROR "COCOSTORAGE_SANITIZE (ASan/UBSan) and COCOSTORAGE_TSAN cannot be combined")
endif()
if(COCOSTORAGE_TSAN)
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
endif()
if(COCOSTORAGE_FUZZ)
  # Every target gets libFuzzer's coverage instrumentation plus ASan/UBSan;
  # only the harness executables (fuzz/) link libFuzzer itself.
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "COCOSTORAGE_FUZZ needs clang (CC=clang CXX=clang++); the compiler is ${CMAKE_CXX_COMPILER_ID}")
  endif()
  if(COCOSTORAGE_SANITIZE OR COCOSTORAGE_TSAN)
    message(FATAL_ERROR "COCOSTORAGE_FUZZ brings its own sanitizers: leave COCOSTORAGE_SANITIZE and COCOSTORAGE_TSAN off")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
    -fno-omit-frame-pointer -O1)
  add_link_options(-fsanitize=address,undefined)
endif()
if(COCOSTORAGE_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# Hardening that costs nothing measurable for a storage control plane.
add_compile_options(-fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIC)
if(NOT CMAKE_BUILD_TYPE)
  set(CMAKE_BUILD_TYPE RelWithDebInfo CACHE STRING "" FORCE)
endif()

function(coco_target_defaults target)
  target_compile_options(${target} PRIVATE ${COCO_WARNING_FLAGS})
endfunction()
