#ifndef PMQ_CPREFETCH_H
#define PMQ_CPREFETCH_H

/// Software prefetch for Swift kernels: Swift has no way to emit a prefetch instruction, and a
/// static inline function from a C header is inlined into the Swift caller (one `prefetcht0`).
static inline void pmq_prefetch(const void *address) { __builtin_prefetch(address, 0, 3); }

#endif
