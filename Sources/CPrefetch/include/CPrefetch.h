#ifndef PMQ_CPREFETCH_H
#define PMQ_CPREFETCH_H

/// Software prefetch for Swift kernels: Swift has no way to emit a prefetch instruction, and a
/// static inline function from a C header is inlined into the Swift caller (one `prefetcht0`).
static inline void pmq_prefetch(const void *address) { __builtin_prefetch(address, 0, 3); }

/// The same into the second-level cache (`prefetcht1`): for lines needed thousands of cycles later.
static inline void pmq_prefetch_l2(const void *address) { __builtin_prefetch(address, 0, 2); }

#endif
