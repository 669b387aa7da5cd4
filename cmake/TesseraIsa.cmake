# ISA rungs, lowest first. Each vectorized source file gets its own flags via
# tessera_isa_source(); nothing is compiled for the whole project with -mavx512*.
set(TESSERA_ISA_RUNGS scalar avx2 avx512 avx512_bf16)
list(FIND TESSERA_ISA_RUNGS "${TESSERA_MAX_ISA}" TESSERA_MAX_ISA_INDEX)
if(TESSERA_MAX_ISA_INDEX LESS 0)
  message(FATAL_ERROR "TESSERA_MAX_ISA='${TESSERA_MAX_ISA}' is not one of: ${TESSERA_ISA_RUNGS}")
endif()

set(TESSERA_FLAGS_avx2 -mavx2 -mfma -mf16c)
set(TESSERA_FLAGS_avx512 -Wno-maybe-uninitialized -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq)
set(TESSERA_FLAGS_avx512_bf16 ${TESSERA_FLAGS_avx512} -mavx512bf16)

# tessera_isa_enabled(<rung> <outvar>): is <rung> at or below the compile-time cap?
function(tessera_isa_enabled rung out)
  list(FIND TESSERA_ISA_RUNGS ${rung} idx)
  if(idx LESS_EQUAL TESSERA_MAX_ISA_INDEX)
    set(${out} ON PARENT_SCOPE)
  else()
    set(${out} OFF PARENT_SCOPE)
  endif()
endfunction()

# tessera_isa_sources(<target> <rung> files...): add files compiled for <rung> if enabled.
function(tessera_isa_sources target rung)
  tessera_isa_enabled(${rung} on)
  if(NOT on)
    return()
  endif()
  target_sources(${target} PRIVATE ${ARGN})
  set_source_files_properties(${ARGN} TARGET_DIRECTORY ${target}
                              PROPERTIES COMPILE_OPTIONS "${TESSERA_FLAGS_${rung}}")
  string(TOUPPER ${rung} up)
  target_compile_definitions(${target} PRIVATE TESSERA_HAVE_${up}=1)
endfunction()
