// Function multiversioning for hot loops: GCC compiles the function once per x86-64
// micro-architecture level (v4: AVX-512, v3: AVX2/FMA) and picks the best at load time, so a
// portable binary still vectorizes wide where the CPU allows. Elsewhere it expands to nothing.
// Helpers a dispatched function calls should be inline so they are compiled into each clone.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FTUNE_CPU_DISPATCH \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FTUNE_CPU_DISPATCH
#endif
